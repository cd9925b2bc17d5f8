"""DoorFlow's listable event codes: ask only for those, survive a vendor that lists fewer.

``GET /api/3/events`` answers any code it does not list for that method with
``400 bad_request`` "The following event codes are not valid for this method:
50, 51" (FACTS.md). The connector asks only for the documented list; should a
400 name codes anyway, it drops them for the life of the connector, logs it
once and repeats the request. Any other 400 still fails the pass.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from syncd.config import Secret, SourceConfig
from syncd.errors import RequestRejected
from syncd.sources.base import SourceContext
from syncd.sources.doorflow import (
    LISTABLE_EVENT_CODES,
    DoorFlowSource,
    invalid_event_codes,
    without_codes,
)
from syncd.sources.http import raise_for_status

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SENTENCE = "The following event codes are not valid for this method: "


def bad_codes(codes: list[int]) -> dict[str, Any]:
    return {"error": "bad_request", "error_description": SENTENCE + ", ".join(map(str, codes))}


# -- the pure parts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, bad_codes([50, 51]), {50, 51}),
        (400, bad_codes([90]), {90}),
        (400, {"error_description": SENTENCE + "50,51,  52."}, {50, 51, 52}),
        (
            400,
            {"error_description": "the following event codes are NOT valid for this method: 7"},
            {7},
        ),
        (400, {"error": "bad_request", "error_description": "since must be a date"}, set()),
        (400, {"error_description": SENTENCE}, set()),  # names no code
        (400, {"error_description": SENTENCE + "50, fifty"}, set()),
        (400, {"error_description": "Oops. " + SENTENCE + "50"}, set()),  # not that sentence
        (400, {"error_description": SENTENCE + "50; DROP TABLE"}, set()),
        (400, {"error_description": ["x"]}, set()),
        (400, {"message": SENTENCE + "50"}, set()),
        (400, [SENTENCE + "50"], set()),
        (400, None, set()),
        (422, bad_codes([50]), set()),  # only a 400 means it
        (None, bad_codes([50]), set()),
    ],
)
def test_invalid_event_codes_are_read_from_that_400_only(
    status: int | None, body: Any, expected: set[int]
) -> None:
    assert invalid_event_codes(status, body) == expected


def test_without_codes_refuses_to_change_nothing_or_leave_nothing() -> None:
    assert without_codes((1, 2, 3), {2, 9}) == (1, 3)
    assert without_codes((1, 2, 3), {9}) is None  # the same request would get the same 400
    assert without_codes((1, 2, 3), set()) is None
    assert without_codes((1, 2), {1, 2}) is None  # no codes would mean "admits and rejects"


def test_a_rejection_carries_its_status_and_json_body() -> None:
    request = httpx.Request("GET", "http://doorflow.test/api/3/events")
    body = bad_codes([50])
    with pytest.raises(RequestRejected) as raised:
        raise_for_status(httpx.Response(400, json=body, request=request))
    assert (raised.value.status, raised.value.body) == (400, body)
    with pytest.raises(RequestRejected) as raised:
        raise_for_status(httpx.Response(404, text="<html>", request=request))
    assert (raised.value.status, raised.value.body) == (404, None)


# -- the connector against a fake that refuses some codes --------------------------


class Refusing:
    """A DoorFlow list that refuses ``refused`` codes as the real API does."""

    def __init__(self, refused: set[int], answer: Callable[[], httpx.Response] | None = None):
        self.refused = refused
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params = request.url.params
        named = {int(c) for c in params["event_codes"].split(",")}
        repeated = {int(c) for c in params.get_list("event_code")}
        assert named == repeated  # both parameter families always agree
        invalid = sorted(named & self.refused)
        if invalid:
            return httpx.Response(400, json=bad_codes(invalid))
        if self.answer is not None:
            return self.answer()
        return httpx.Response(200, json=[], headers={"Total": "0", "Per-Page": "1000"})

    def asked(self, index: int) -> set[int]:
        return {int(c) for c in self.requests[index].url.params["event_codes"].split(",")}


def _source(handler: Callable[[httpx.Request], httpx.Response]) -> DoorFlowSource:
    config = SourceConfig(
        name="hq", kind="doorflow", base_url="http://doorflow.test", token=Secret("t0ken"),
        start=T0, max_retries=3, max_retry_wait=0.01,
    )  # fmt: skip
    client = httpx.Client(base_url=config.base_url, transport=httpx.MockTransport(handler))
    return DoorFlowSource(config, client, SourceContext())


def test_a_pass_asks_only_for_listable_codes() -> None:
    fake = Refusing(set(range(50, 64)))
    source = _source(fake)
    with capture_logs() as logs:
        pages = list(source.pages({}, T0 + timedelta(hours=1)))
    assert len(pages) == 1
    assert len(fake.requests) == 1
    assert fake.asked(0) == set(LISTABLE_EVENT_CODES)
    assert not [e for e in logs if e["event"] == "event_codes_dropped"]


def test_codes_a_400_names_are_dropped_logged_once_and_the_request_repeated() -> None:
    fake = Refusing({90, 91, 225})
    source = _source(fake)
    with capture_logs() as logs:
        pages = list(source.pages({}, T0 + timedelta(hours=1)))
        assert len(pages) == 1
        # Later requests of the same connector no longer name them: no more 400s.
        assert source.count_since(T0) == 0
        assert source.count_since(T0) == 0
    assert [r.url.params.get("page") for r in fake.requests] == ["1", "1", "1", "1"]
    assert fake.asked(0) == set(LISTABLE_EVENT_CODES)
    for later in (1, 2, 3):
        assert fake.asked(later) == set(LISTABLE_EVENT_CODES) - {90, 91, 225}
    dropped = [e for e in logs if e["event"] == "event_codes_dropped"]
    assert len(dropped) == 1
    assert (dropped[0]["codes"], dropped[0]["source"]) == ([90, 91, 225], "hq")
    assert dropped[0]["log_level"] == "warning"
    assert source.event_codes == tuple(c for c in LISTABLE_EVENT_CODES if c not in {90, 91, 225})


def test_a_list_shrinking_twice_is_followed_both_times() -> None:
    fake = Refusing({90})
    source = _source(fake)
    with capture_logs() as logs:
        list(source.pages({}, T0 + timedelta(hours=1)))
        fake.refused = {90, 1, 2}
        list(source.pages({}, T0 + timedelta(hours=1)))
    dropped = [e["codes"] for e in logs if e["event"] == "event_codes_dropped"]
    assert dropped == [[90], [1, 2]]
    assert len(fake.requests) == 4
    assert fake.asked(3) == set(LISTABLE_EVENT_CODES) - {1, 2, 90}


def test_any_other_400_fails_the_pass_at_once() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            400, json={"error": "bad_request", "error_description": "since is not a date"}
        )

    calls: list[httpx.Request] = []
    with pytest.raises(RequestRejected, match="since is not a date"):
        list(_source(handler).pages({}, T0 + timedelta(hours=1)))
    assert len(calls) == 1


def test_a_400_naming_codes_not_asked_for_fails_instead_of_looping() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json=bad_codes([50, 51]))  # we never ask for these

    calls: list[httpx.Request] = []
    source = _source(handler)
    with pytest.raises(RequestRejected, match="not valid for this method: 50, 51"):
        list(source.pages({}, T0 + timedelta(hours=1)))
    assert len(calls) == 1
    assert source.event_codes == LISTABLE_EVENT_CODES


def test_a_400_refusing_every_code_fails_rather_than_list_without_codes() -> None:
    fake = Refusing(set(LISTABLE_EVENT_CODES))
    with pytest.raises(RequestRejected, match="not valid for this method"):
        list(_source(fake).pages({}, T0 + timedelta(hours=1)))
    assert len(fake.requests) == 1


def test_the_sentence_under_another_status_is_not_that_400() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, json=bad_codes([90]))

    with pytest.raises(RequestRejected, match="422"):
        list(_source(handler).pages({}, T0 + timedelta(hours=1)))
    assert len(calls) == 1
