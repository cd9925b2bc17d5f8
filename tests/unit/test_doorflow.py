"""DoorFlow connector: normalization, paging arithmetic, and whole passes against a fake.

The fake server is an in-memory list behind ``httpx.MockTransport``; it can
honour or ignore ``sort``, cap the page size, answer in either shape and have
events arrive *while* a pass pages through it. The Hypothesis properties drive
the real connector through many passes, crashes and late arrivals and check
that every event is stored exactly once, in its newest version, and that the
watermark never goes backwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from syncd.config import Secret, SourceConfig
from syncd.errors import AuthError, RequestRejected, TransientError
from syncd.records import EventRecord, MalformedRecord
from syncd.sources.base import CodeInfo, SourceContext
from syncd.sources.doorflow import (
    DoorFlowCursor,
    DoorFlowSource,
    ListResponse,
    PassState,
    advance_watermark,
    from_api,
    listings_for_pass,
    next_page,
    page_number,
    past_window,
    regular_since,
    step,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CODES = {
    10: CodeInfo("Admitted (Card/fob)", "access_granted"),
    32: CodeInfo("Forced", "door_state"),
}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


# -- normalization -----------------------------------------------------------------


def test_reference_fields_are_normalized() -> None:
    raw = {
        "id": 6455132,
        "event_code": 10,
        "event_label": "Admitted (Card/fob)",
        "channel_id": 1566,
        "channel_name": "Front Entrance",
        "credentials_number": "44455661215",
        "person_id": 455165,
        "person_name": "Joe Bloggs",
        "updated_at": "2023-09-07T13:18:38+01:00",
        "created_at": "2023-09-07T13:18:38+01:00",
    }
    record = from_api(raw, CODES)
    assert record.event_key == "6455132"
    assert record.occurred_at == datetime(2023, 9, 7, 12, 18, 38, tzinfo=UTC)
    assert (record.door_id, record.door_name) == ("1566", "Front Entrance")
    assert (record.person_id, record.person_name, record.credential) == (
        "455165",
        "Joe Bloggs",
        "44455661215",
    )
    assert record.category == "access_granted"
    assert orjson.loads(record.payload) == raw


def test_guide_fields_are_normalized() -> None:
    raw = {
        "id": 123456,
        "event_code": 32,
        "channel_id": 1340,
        "channel_name": "Front Door",
        "credential_id": "cred_abc123",
        "occurred_at": "2024-01-15T14:30:45Z",
        "description": "Front Door forced open",
        "additional_data": {"card_number": "1234567890"},
    }
    record = from_api(raw, CODES)
    assert record.occurred_at == datetime(2024, 1, 15, 14, 30, 45, tzinfo=UTC)
    assert (record.label, record.category, record.credential) == (
        "Front Door forced open",
        "door_state",
        "cred_abc123",
    )


def test_door_controller_names_win_and_unknown_codes_are_other() -> None:
    raw = {
        "id": 1,
        "event_code": 999,
        "door_controller_id": 7,
        "door_controller_name": "Lab",
        "created_at": "2024-01-15T14:30:45Z",
    }
    record = from_api(raw, CODES)
    assert (record.door_id, record.door_name, record.category, record.label) == (
        "7",
        "Lab",
        "other",
        None,
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"event_code": 10, "created_at": "2024-01-01T00:00:00Z"}, "id missing"),
        ({"id": 1, "event_code": 10}, "created_at missing"),
        ({"id": 1, "event_code": 10, "created_at": "yesterday"}, "not an ISO 8601"),
        ({"id": 1, "event_code": "ten", "created_at": "2024-01-01T00:00:00Z"}, "event_code"),
        ({"id": {"x": 1}, "event_code": 10, "created_at": "2024-01-01T00:00:00Z"}, "id"),
        (
            {"id": 1, "event_code": 10, "created_at": "2024-01-01T00:00:00Z", "person_name": []},
            "person_name has the wrong type",
        ),
        ([1, 2], "not an object"),
    ],
)
def test_malformed_records_are_refused_with_a_reason(raw: Any, reason: str) -> None:
    with pytest.raises(MalformedRecord, match=reason):
        from_api(raw, CODES)


# -- pure paging arithmetic ------------------------------------------------------------


def test_since_is_behind_the_watermark_but_never_before_origin() -> None:
    cursor = DoorFlowCursor(origin=T0, watermark=T0 + timedelta(hours=1))
    assert regular_since(cursor, timedelta(minutes=15)) == T0 + timedelta(minutes=45)
    assert regular_since(cursor, timedelta(hours=5)) == T0
    assert regular_since(DoorFlowCursor(origin=T0), timedelta(minutes=15)) == T0


def test_the_watermark_ignores_future_times_and_never_goes_back() -> None:
    now = T0 + timedelta(hours=1)
    future = _record(1, now + timedelta(hours=3))
    assert advance_watermark(None, [future], now) == now
    old = _record(2, T0)
    assert advance_watermark(now, [old], now) == now
    assert advance_watermark(T0, [], now) == T0


def test_page_numbers_round_down_when_the_page_size_shrank() -> None:
    state = PassState(T0, offset=3000, per_page=1000)
    assert page_number(state, 1000) == 4
    assert page_number(PassState(T0, offset=2999, per_page=500), 1000) == 6


def test_a_page_starting_past_the_offset_is_fetched_again() -> None:
    # Offset 1500 was consumed in pages of 500; the server now pages by 1000:
    # page 4 of 1000 would start at 3000 and skip 1500 rows.
    state = PassState(T0, offset=1500, per_page=500, stated=True, shape="array")
    response = ListResponse([{}] * 1000, "array", 10_000, 1000)
    move = step(state, 4, 1000, response)
    assert move.refetch
    assert page_number(move.state, 1000) == 2


def test_a_changed_shape_restarts_the_listing_but_order_does_not() -> None:
    state = PassState(T0, offset=40, per_page=20, stated=True, shape="array")
    move = step(state, 3, 20, ListResponse([{}], "object", 100, 20))
    assert move.restarted
    assert move.state.offset == 0
    # An order that looks different on one page (a late upload at a page edge
    # of an id-ordered list) is no reason to start over.
    move = step(state, 3, 20, ListResponse([{}] * 20, "array", 100, 20))
    assert not move.restarted
    assert move.state.offset == 60


def test_a_short_page_ends_the_listing_but_the_total_never_does() -> None:
    state = PassState(T0, offset=0, per_page=10, stated=True)
    assert step(state, 1, 10, ListResponse([{}] * 9, "array", None, 10)).done
    # A Total that runs low is a hint, not the end.
    assert not step(state, 1, 10, ListResponse([{}] * 10, "array", 10, 10)).done
    assert not step(state, 1, 10, ListResponse([{}] * 10, "array", 3, 10)).done
    assert step(replace(state, offset=10), 2, 10, ListResponse([], "array", 10, 10)).done


def test_pages_bigger_than_asked_without_per_page_are_measured_from_the_rows() -> None:
    state = PassState(T0)
    move = step(state, 1, 10, ListResponse([{}] * 25, "array", None, None))
    assert (move.state.offset, move.state.per_page, move.done) == (25, 25, False)
    assert page_number(move.state, 10) == 2  # the server's page 2 starts at row 25


def test_a_short_page_without_a_stated_size_is_confirmed_by_an_empty_one() -> None:
    # The server may cap pages silently: 7 of 10 rows could be a cap or the end.
    move = step(PassState(T0), 1, 10, ListResponse([{}] * 7, "array", None, None))
    assert not move.done
    assert page_number(move.state, 10) == 2
    assert step(move.state, 2, 10, ListResponse([], "array", None, None)).done


def test_a_resumed_listing_measures_the_page_size_on_page_1_before_numbering_pages() -> None:
    # Interrupted after one row, read in pages of 1 (a size the server did not
    # state); the server now pages by 6. "Page 2 of 1" is the server's rows
    # 6-11: empty on a 5-row list, which ends the listing with rows 1-4 unread.
    saved = PassState(T0, offset=1, per_page=1, stated=False, shape="array")
    resumed = PassState.from_json(saved.to_json())
    assert page_number(resumed, 1) == 2  # the saved size's page ...
    assert next_page(resumed, 1) == 1  # ... is not asked for before the size is measured
    move = step(resumed, 1, 1, ListResponse([{}] * 5, "array", None, None))
    assert (move.state.offset, move.state.per_page, move.state.measured) == (5, 5, True)
    assert not move.done
    # From here the page numbers are the server's.
    assert next_page(move.state, 1) == 2
    assert step(move.state, 2, 1, ListResponse([], "array", None, None)).done
    # The measurement is never saved: a listing resumed again measures again.
    assert not PassState.from_json(move.state.to_json()).measured


def test_the_rows_a_resumed_listing_read_before_are_not_served_again() -> None:
    """Page 1 of a resumed listing re-reads consumed rows: only those past the offset
    count (a window read that counted them twice stopped short of its window's count)."""
    resumed = PassState(T0, offset=4, per_page=2, stated=True, shape="array")
    move = step(resumed, next_page(resumed, 2), 2, ListResponse([{}] * 6, "array", None, 6))
    assert move.consumed == 4  # rows 1-4 were read before the crash
    assert move.state.offset == 6
    fresh = step(PassState(T0), 1, 6, ListResponse([{}] * 6, "array", None, 6))
    assert fresh.consumed == 0


def test_a_fresh_listing_pays_nothing_for_the_measurement() -> None:
    assert next_page(PassState(T0), 10) == 1
    move = step(PassState(T0), 1, 10, ListResponse([{}] * 10, "array", None, None))
    assert move.state.measured
    assert next_page(move.state, 10) == page_number(move.state, 10) == 2


def test_a_resumed_pass_finishes_its_listing_then_reads_the_head_again() -> None:
    interrupted = PassState(T0, offset=40, per_page=20, stated=True, shape="object")
    cursor = DoorFlowCursor(origin=T0, watermark=T0 + timedelta(hours=5), current=interrupted)
    listings = listings_for_pass(cursor, timedelta(minutes=15))
    assert listings == [interrupted, PassState(T0 + timedelta(hours=4, minutes=45))]
    assert listings_for_pass(replace(cursor, current=None), timedelta(0)) == [
        PassState(T0 + timedelta(hours=5))
    ]


def _record(key: int, at: datetime) -> EventRecord:
    return EventRecord(str(key), "doorflow", at, 10, "access_granted", None, b"{}")


def test_a_window_ends_after_a_whole_page_past_its_end() -> None:
    until = T0 + timedelta(hours=1)
    inside, past, later = _record(1, T0), _record(2, until), _record(3, until + timedelta(1))
    assert past_window([past, later], until)
    assert not past_window([inside, past], until)
    assert not past_window([later, past], until)  # newest first: the window is below
    assert not past_window([past, past], until)  # ties show no order
    assert not past_window([later], until)  # one row is no evidence
    assert not past_window([past, later], None)


# -- errors through the shared HTTP machinery ------------------------------------------


def _source_with(
    handler: Callable[[httpx.Request], httpx.Response], **config: Any
) -> DoorFlowSource:
    settings_ = SourceConfig(
        name="hq", kind="doorflow", base_url="http://doorflow.test", token=Secret("t0ken"),
        start=T0, **{"max_retries": 3, "max_retry_wait": 0.01, **config},
    )  # fmt: skip
    client = httpx.Client(base_url=settings_.base_url, transport=httpx.MockTransport(handler))
    return DoorFlowSource(settings_, client, SourceContext(codes=CODES))


def _drain(source: DoorFlowSource) -> list[Any]:
    with source.client:
        return list(source.pages({}, T0 + timedelta(hours=1)))


def test_429_waits_and_retries_with_either_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    # The waits asked for are asserted, not just survived: tenacity sleeps
    # through time.sleep, which records them here instead of sleeping.
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(429, json={"retry_in": 11.5}),
            httpx.Response(200, json=[], headers={"Total": "0"}),
        ]
    )
    pages = _drain(_source_with(lambda _r: next(answers), max_retry_wait=60.0))
    assert len(pages) == 1
    assert waits == [7.0, 11.5]


def test_5xx_and_dropped_connections_are_retried_then_fail() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected", request=request)
        return httpx.Response(503, json={"error": "internal_server_error"})

    with pytest.raises(TransientError, match="503"):
        _drain(_source_with(handler))
    assert len(calls) == 3


def test_a_body_that_is_not_json_is_retried_then_fails() -> None:
    with pytest.raises(TransientError, match="not JSON"):
        _drain(_source_with(lambda _r: httpx.Response(200, text="<html>oops</html>")))


def test_401_fails_at_once_with_a_clear_message_and_no_token() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            401, json={"error": "unauthorized", "error_description": "The access token is invalid"}
        )

    with pytest.raises(AuthError) as raised:
        _drain(_source_with(handler))
    assert len(calls) == 1
    assert "401" in str(raised.value)
    assert "t0ken" not in str(raised.value)


def test_other_4xx_fail_at_once() -> None:
    with pytest.raises(RequestRejected, match="422"):
        _drain(_source_with(lambda _r: httpx.Response(422, json={"error": "invalid"})))


def test_oauth_refreshes_on_401_and_persists_the_rotated_token_first() -> None:
    saved: list[str] = []
    log: list[str] = []
    tokens = {"refresh": "r1", "access": "a0"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            form = dict(x.split("=") for x in request.content.decode().split("&"))
            assert form["refresh_token"] == tokens["refresh"]
            n = len([entry for entry in log if entry == "refresh"]) + 1
            tokens.update(refresh=f"r{n + 1}", access=f"a{n}")
            log.append("refresh")
            return httpx.Response(
                200,
                json={"access_token": tokens["access"], "expires_in": 3600,
                      "refresh_token": tokens["refresh"], "token_type": "Bearer"},
            )  # fmt: skip
        log.append(request.headers["Authorization"])
        if request.headers["Authorization"] != f"Bearer {tokens['access']}" or len(log) == 2:
            tokens["access"] = "revoked"  # the server drops the token once
            return httpx.Response(401, json={"error": "unauthorized"})
        return httpx.Response(200, json=[], headers={"Total": "0"})

    from syncd.config import OAuthCredentials

    oauth = OAuthCredentials(Secret("cid"), Secret("csecret"), Secret("r1"))
    settings_ = SourceConfig(
        name="hq", kind="doorflow", base_url="http://doorflow.test", oauth=oauth, start=T0
    )
    client = httpx.Client(base_url=settings_.base_url, transport=httpx.MockTransport(handler))
    context = SourceContext(codes=CODES, save_refresh_token=lambda t, _origin: saved.append(t))
    pages = _drain(DoorFlowSource(settings_, client, context))
    assert len(pages) == 1
    assert log[0] == "refresh"
    assert log.count("refresh") == 2
    assert saved == ["r2", "r3"]
