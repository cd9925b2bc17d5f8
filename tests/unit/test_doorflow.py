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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import Secret, SourceConfig
from syncd.errors import AuthError, RequestRejected, TransientError
from syncd.records import EventRecord, MalformedRecord, RejectedRecord
from syncd.sources.base import CodeInfo, SourceContext
from syncd.sources.doorflow import (
    ALL_EVENT_CODES,
    DoorFlowCursor,
    DoorFlowSource,
    ListResponse,
    PassState,
    advance_watermark,
    from_api,
    page_number,
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
    state = PassState(T0, offset=1500, per_page=500, order="asc", shape="array")
    response = ListResponse([{}] * 1000, "array", 10_000, 1000)
    move = step(state, 4, 1000, response, [])
    assert move.refetch
    assert page_number(move.state, 1000) == 2


def test_a_changed_order_or_shape_restarts_the_pass() -> None:
    state = PassState(T0, offset=40, per_page=20, order="asc", shape="array")
    desc = [_record(2, T0 + timedelta(seconds=2)), _record(1, T0)]
    move = step(state, 3, 20, ListResponse([{}, {}], "array", 100, 20), desc)
    assert move.restarted
    assert move.state.offset == 0
    move = step(state, 3, 20, ListResponse([{}], "object", 100, 20), [])
    assert move.restarted
    assert move.state.offset == 0


def test_a_short_page_or_the_total_ends_the_pass() -> None:
    state = PassState(T0, offset=0, per_page=10)
    assert step(state, 1, 10, ListResponse([{}] * 9, "array", None, 10), []).done
    assert step(state, 1, 10, ListResponse([{}] * 10, "array", 10, 10), []).done
    assert not step(state, 1, 10, ListResponse([{}] * 10, "array", 11, 10), []).done


def _record(key: int, at: datetime) -> EventRecord:
    return EventRecord(str(key), "doorflow", at, 10, "access_granted", None, b"{}")


# -- a fake DoorFlow for whole passes ---------------------------------------------------


@dataclass
class FakeDoorFlow:
    """An in-memory DoorFlow: the list endpoint and its quirks, nothing else."""

    honour_sort: bool = True
    shape: str = "array"
    max_per_page: int = 1000
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    on_request: Callable[[FakeDoorFlow], None] | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    next_id: int = 1

    def add(self, created: datetime, name: str = "A") -> int:
        event_id = self.next_id
        self.next_id += 1
        self.events[event_id] = {
            "id": event_id,
            "event_code": 10,
            "person_name": name,
            "created_at": iso(created),
            "updated_at": iso(created),
        }
        return event_id

    def rename(self, event_id: int, name: str, at: datetime) -> None:
        self.events[event_id] = {
            **self.events[event_id],
            "person_name": name,
            "updated_at": iso(at),
        }

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(self)
        params = request.url.params
        since = datetime.fromisoformat(params["since"])
        size = min(int(params["n"]), self.max_per_page)
        page = int(params["page"])
        rows = [e for e in self.events.values() if datetime.fromisoformat(e["created_at"]) >= since]
        descending = not self.honour_sort or params.get("sort", "DESC") == "DESC"
        rows.sort(key=lambda e: (e["created_at"], e["id"]), reverse=descending)
        chunk = rows[(page - 1) * size : page * size]
        if self.shape == "array":
            return httpx.Response(
                200, json=chunk, headers={"Total": str(len(rows)), "Per-Page": str(size)}
            )
        pagination = {"page": page, "per_page": size, "total_count": len(rows)}
        return httpx.Response(200, json={"events": chunk, "pagination": pagination})


@dataclass
class MemoryStore:
    """The engine's contract in memory: a page's rows and cursor land together."""

    rows: dict[str, EventRecord] = field(default_factory=dict)
    rejected: list[RejectedRecord] = field(default_factory=list)
    cursor: dict[str, Any] = field(default_factory=dict)
    watermarks: list[str] = field(default_factory=list)

    def count(self, since: datetime, until: datetime | None) -> int:
        return sum(
            1
            for r in self.rows.values()
            if r.occurred_at >= since and (until is None or r.occurred_at < until)
        )

    def run(self, fake: FakeDoorFlow, now: datetime, *, page_size: int, lookback: float,
            crash_after: int | None = None, start: datetime = T0) -> int:  # fmt: skip
        config = SourceConfig(
            name="hq",
            kind="doorflow",
            base_url="http://doorflow.test",
            token=Secret("t0ken"),
            start=start,
            lookback=lookback,
            page_size=page_size,
            reconcile_days=30,
        )
        context = SourceContext(
            codes=CODES,
            count_local=self.count,
            count_unplaced=lambda: sum(1 for r in self.rejected if r.occurred_at is None),
        )
        client = httpx.Client(base_url=config.base_url, transport=httpx.MockTransport(fake.handler))
        pages = 0
        with client:
            for page in DoorFlowSource(config, client, context).pages(self.cursor, now):
                for record in page.records:
                    held = self.rows.get(record.event_key)
                    if held is None or (record.source_updated_at or now) >= (
                        held.source_updated_at or now
                    ):
                        self.rows[record.event_key] = record
                self.rejected.extend(page.rejected)
                self.cursor = page.cursor
                if page.cursor.get("watermark"):
                    self.watermarks.append(page.cursor["watermark"])
                pages += 1
                if crash_after is not None and pages >= crash_after:
                    break  # the process dies here: nothing after this commit happens
        return pages

    def names(self) -> dict[int, str | None]:
        return {int(k): r.person_name for k, r in self.rows.items()}


def test_a_pass_asks_for_every_code_oldest_first_with_both_parameter_families() -> None:
    fake = FakeDoorFlow()
    fake.add(T0)
    MemoryStore().run(fake, T0 + timedelta(hours=1), page_size=100, lookback=900)
    params = fake.requests[0].url.params
    assert params["sort"] == "ASC"
    assert params["since"] == params["since_utc"] == iso(T0)
    assert params["event_codes"] == ",".join(map(str, ALL_EVENT_CODES))
    assert [int(c) for c in params.get_list("event_code")] == list(ALL_EVENT_CODES)
    assert (params["n"], params["per_page"]) == ("100", "100")
    assert fake.requests[0].headers["Authorization"] == "Bearer t0ken"


def test_more_ties_than_a_page_are_all_read() -> None:
    fake = FakeDoorFlow()
    for _ in range(25):
        fake.add(T0 + timedelta(minutes=5))
    store = MemoryStore()
    store.run(fake, T0 + timedelta(hours=1), page_size=4, lookback=0)
    assert len(store.rows) == 25
    for _ in range(7):
        fake.add(T0 + timedelta(minutes=5))  # more ties at the watermark itself
    store.run(fake, T0 + timedelta(hours=1), page_size=4, lookback=0)
    assert len(store.rows) == 32


def test_a_late_event_older_than_the_lookback_is_found_by_reconciliation() -> None:
    fake = FakeDoorFlow()
    for minute in range(0, 120, 2):
        fake.add(T0 + timedelta(minutes=minute))
    store = MemoryStore()
    now = T0 + timedelta(hours=2)
    store.run(fake, now, page_size=10, lookback=300)
    late = fake.add(T0 + timedelta(minutes=31))  # an offline controller's upload
    store.run(fake, now + timedelta(minutes=1), page_size=10, lookback=300)
    assert late in store.names()
    assert len(store.rows) == len(fake.events)


def test_a_shrinking_page_size_mid_pass_never_skips() -> None:
    fake = FakeDoorFlow()
    for second in range(100):
        fake.add(T0 + timedelta(seconds=second))
    store = MemoryStore()
    store.run(fake, T0 + timedelta(hours=1), page_size=20, lookback=0, crash_after=2)
    fake.max_per_page, fake.shape = 7, "object"
    store.run(fake, T0 + timedelta(hours=1), page_size=20, lookback=0)
    assert len(store.rows) == 100


# -- properties ------------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    rounds = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "on_time": st.integers(0, 12),
                    "late": st.integers(0, 3),  # within the lookback
                    "very_late": st.integers(0, 2),  # older than the lookback
                    "ties": st.integers(0, 9),
                    "renames": st.integers(0, 3),
                    "during_pass": st.integers(0, 3),  # arrive while the pass pages
                    "crash_after": st.none() | st.integers(1, 4),
                    "honour_sort": st.booleans(),
                    "shape": st.sampled_from(["array", "object"]),
                    "max_per_page": st.sampled_from([3, 5, 1000]),
                }
            ),
            min_size=1,
            max_size=8,
        )
    )
    return {"rounds": rounds, "page_size": draw(st.integers(1, 8))}


@settings(max_examples=150, deadline=None)
@given(history=histories())
def test_any_history_is_stored_exactly_once_in_its_newest_version(history: dict[str, Any]) -> None:
    lookback = timedelta(minutes=10)
    fake = FakeDoorFlow()
    store = MemoryStore()
    now = T0 + timedelta(hours=1)
    arrivals: list[int] = []

    def arrive_during_pass(server: FakeDoorFlow) -> None:
        if arrivals and arrivals[0] > 0:
            arrivals[0] -= 1
            server.add(now - timedelta(seconds=30))  # late, inside the pass's window
            server.add(now)

    fake.on_request = arrive_during_pass
    for index, round_ in enumerate(history["rounds"]):
        now += timedelta(minutes=5)
        fresh = [fake.add(now - timedelta(seconds=s)) for s in range(round_["on_time"])]
        for s in range(round_["late"]):
            fake.add(now - lookback + timedelta(minutes=2, seconds=s))
        for s in range(round_["very_late"]):
            fake.add(now - lookback * 3 - timedelta(seconds=s))
        for _ in range(round_["ties"]):
            fake.add(now - timedelta(minutes=1))
        for n, event_id in enumerate(fresh[: round_["renames"]]):
            fake.rename(event_id, f"renamed {index}.{n}", now)
        fake.honour_sort, fake.shape = round_["honour_sort"], round_["shape"]
        fake.max_per_page = round_["max_per_page"]
        arrivals[:] = [round_["during_pass"]]
        store.run(fake, now, page_size=history["page_size"], lookback=lookback.total_seconds(),
                  crash_after=round_["crash_after"])  # fmt: skip

    # Whatever happened, once the pass in progress (if any) has finished, one
    # undisturbed fresh pass later everything is there (found by that pass's
    # lookback or its reconciliation).
    arrivals[:] = [0]
    for _ in range(2 if "pass" in store.cursor else 1):
        now += timedelta(minutes=1)
        store.run(fake, now, page_size=history["page_size"], lookback=lookback.total_seconds())
    assert store.names() == {i: e["person_name"] for i, e in fake.events.items()}
    assert store.watermarks == sorted(store.watermarks)
    assert "pass" not in store.cursor


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
