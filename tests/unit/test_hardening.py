"""Hardening (issue 9): poison records, failing continuation keys, scope changes,
the configured refresh token, user mistakes. Pure logic and MockTransport only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from syncd.config import OAuthCredentials, Secret, SourceConfig, load_settings
from syncd.db.engine import describe_url
from syncd.errors import ConfigError, ContinuationRejected, TransientError
from syncd.records import (
    INT4,
    MalformedRecord,
    parse_time,
    required_int,
    split_page,
    storable,
    unstorable,
)
from syncd.sources import doorflow, intserv
from syncd.sources.auth import choose_refresh_token, token_fingerprint
from syncd.sources.base import SourceContext
from syncd.sources.http import parse_json
from syncd.sources.intserv import IntServCursor, IntServSource, PassState, narrows, rescope

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def df(event_id: Any = 1, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "created_at": "2026-03-02T08:00:00Z", "event_code": 10, **fields}


def isv(seq: Any = 1, **fields: Any) -> dict[str, Any]:
    return {
        "system_id": "abc-001",
        "event_time": "2026-03-02T08:00:00Z",
        "sequence_id": seq,
        "type": 100,
        **fields,
    }


# -- integers, times ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["--5", "²", "5²", "-", "", " ", "1e3", "0x10", "9" * 5000, 1.0])
def test_integer_text_that_int_would_choke_on_is_malformed(value: Any) -> None:
    with pytest.raises(MalformedRecord, match="not an integer"):
        required_int(value, "n")


def test_integers_out_of_their_column_are_malformed_never_wrapped() -> None:
    assert required_int(2**31 - 1, "event_code", INT4) == 2**31 - 1
    assert required_int("-42", "n") == -42
    for value, bounds in ((2**31, INT4), (-(2**31) - 1, INT4), (2**63, None), ("9" * 20, None)):
        with pytest.raises(MalformedRecord, match="out of range"):
            required_int(value, "n", *(() if bounds is None else (bounds,)))


def test_doorflow_event_code_past_int4_is_rejected_with_its_id() -> None:
    records, rejected = doorflow.normalize_page([df(7, event_code=2**32 + 10), df(8)], {})
    assert [r.event_key for r in records] == ["8"]
    (bad,) = rejected
    assert "event_code is out of range" in bad.reason
    assert bad.event_key == "7"
    assert bad.raw["event_code"] == 4294967306


def test_intserv_sequence_id_past_int8_is_rejected() -> None:
    records, rejected = intserv.normalize_page([isv(2**63), isv(2)], {})
    assert len(records) == 1
    assert "sequence_id is out of range" in rejected[0].reason
    assert rejected[0].event_key is None  # its key cannot be read: keyed by content


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
        "99999-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T00:00:00Z",
    ],
)
def test_times_out_of_range_are_malformed(value: str) -> None:
    with pytest.raises(MalformedRecord, match="created_at"):
        parse_time(value, "created_at")
    _, rejected = doorflow.normalize_page([df(3, created_at=value)], {})
    assert rejected[0].event_key == "3"


def test_doorflow_list_metadata_with_unicode_digits_is_ignored() -> None:
    body = {"events": [], "pagination": {"total_count": "²", "per_page": "--5"}}
    response = doorflow.read_list_response(body, httpx.Headers())
    assert (response.total, response.per_page) == (None, None)


# -- characters storage cannot hold ------------------------------------------------------


def test_nul_anywhere_rejects_the_record_and_the_raw_is_storable() -> None:
    page = [df(1), df(2, person_name="Jo\x00e"), df(3, extra={"a\x00": ["x", "\x00"]}), df(4)]
    records, rejected = doorflow.normalize_page(page, {})
    assert [r.event_key for r in records] == ["1", "4"]
    assert [r.event_key for r in rejected] == ["2", "3"]
    for item in rejected:
        assert "NUL" in item.reason
        assert "\\uXXXX" in item.reason
        assert unstorable(item.raw) is None
        assert "\x00" not in orjson.dumps(item.raw).decode()
        assert item.occurred_at == T0
    assert rejected[0].raw["person_name"] == "Jo\\u0000e"
    assert rejected[1].raw["extra"] == {"a\\u0000": ["x", "\\u0000"]}


def test_a_lone_surrogate_rejects_one_record_not_the_body() -> None:
    body = b'{"least_sync_time":"2026-03-02T08:00:00Z","has_more":false,"events":[' + (
        orjson.dumps(isv(1)) + b',{"system_id":"abc-001","door_name":"\\ud800x","sequence_id":2}]}'
    )
    response = httpx.Response(200, content=body, request=httpx.Request("POST", "http://x/"))
    parsed = parse_json(response)
    records, rejected = intserv.normalize_page(parsed["events"], {})
    assert len(records) == 1
    assert "lone surrogate" in rejected[0].reason
    assert rejected[0].raw["door_name"] == "\\ud800x"
    orjson.dumps(rejected[0].raw)  # encodable now


def test_non_json_constants_are_still_not_json() -> None:
    for content in (b"[NaN]", b"[Infinity]", b"<html>"):
        response = httpx.Response(200, content=content, request=httpx.Request("GET", "http://x/"))
        with pytest.raises(TransientError, match="not JSON"):
            parse_json(response)


def test_huge_integers_in_other_fields_are_kept_exactly() -> None:
    body = b'[{"id":5,"created_at":"2026-03-02T08:00:00Z","event_code":10,"n":' + b"9" * 30 + b"}]"
    response = httpx.Response(200, content=body, request=httpx.Request("GET", "http://x/"))
    (record,), _ = doorflow.normalize_page(parse_json(response), {})
    assert json.loads(record.payload)["n"] == int("9" * 30)


def test_infinite_number_is_rejected_and_stored_as_text() -> None:
    _, (bad,) = doorflow.normalize_page([df(9, reading=float("inf"))], {})
    assert "number out of range" in bad.reason
    assert bad.raw["reading"] == "inf"
    assert storable([float("nan")]) == ["nan"]


def test_an_unexpected_exception_in_one_record_rejects_only_it() -> None:
    def normalize(raw: Any) -> Any:
        if raw == "boom":
            raise ZeroDivisionError("division by zero")
        return doorflow.from_api(raw, {})

    records, rejected = split_page([df(1), "boom", df(2)], normalize, "created_at")
    assert len(records) == 2
    assert rejected[0].reason == "could not be normalized (ZeroDivisionError: division by zero)"


def test_rejected_records_carry_their_vendor_key_when_readable() -> None:
    _, rejected = doorflow.normalize_page([df("12", event_code="x"), {"event_code": 1}], {})
    assert [r.event_key for r in rejected] == ["12", None]
    _, rejected = intserv.normalize_page([isv(5, type="GRANTED"), isv(None)], {})
    assert rejected[0].event_key == "abc-001|2026-03-02T08:00:00Z|5"
    assert rejected[1].event_key is None


# -- the configured refresh token ---------------------------------------------------------


def test_choose_refresh_token() -> None:
    c1, c2 = "configured-1", "configured-2"
    assert choose_refresh_token(c1, None, None) == c1
    assert choose_refresh_token(c1, "rotated", token_fingerprint(c1)) == "rotated"
    # the user authorized again and configured a new token: it wins
    assert choose_refresh_token(c2, "rotated", token_fingerprint(c1)) == c2
    # stored before origins were recorded: the live token of the only grant known
    assert choose_refresh_token(c2, "rotated", None) == "rotated"
    assert c1 not in token_fingerprint(c1)
    assert len(token_fingerprint(c1)) == 64


def test_a_new_configured_refresh_token_wins_and_its_origin_is_saved() -> None:
    sent: list[str] = []
    saved: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            form = dict(x.split("=") for x in request.content.decode().split("&"))
            sent.append(form["refresh_token"])
            return httpx.Response(
                200, json={"access_token": "a", "expires_in": 3600, "refresh_token": "r-next"}
            )
        return httpx.Response(200, json=[], headers={"Total": "0"})

    oauth = OAuthCredentials(Secret("cid"), Secret("cs"), Secret("new-grant"))
    config = SourceConfig(
        name="hq", kind="doorflow", base_url="http://df.test", oauth=oauth, start=T0
    )
    context = SourceContext(
        refresh_token="rotated-from-old",
        refresh_token_origin=token_fingerprint("old-grant"),
        save_refresh_token=lambda token, origin: saved.append((token, origin)),
    )
    client = httpx.Client(base_url=config.base_url, transport=httpx.MockTransport(handler))
    with client:
        list(doorflow.DoorFlowSource(config, client, context).pages({}, T0 + timedelta(hours=1)))
    assert sent == ["new-grant"]
    assert saved == [("r-next", token_fingerprint("new-grant"))]


# -- IntServ: failing keys and scope ------------------------------------------------------

ISV_CONFIG: dict[str, Any] = {
    "name": "sto",
    "kind": "intserv",
    "base_url": "http://is.test",
    "api_key": Secret("k"),
    "start": T0,
    "max_retries": 2,
    "max_retry_wait": 0.001,
}


def isv_source(handler: Any, **overrides: Any) -> IntServSource:
    config = SourceConfig(**{**ISV_CONFIG, **overrides})
    client = httpx.Client(base_url=config.base_url, transport=httpx.MockTransport(handler))
    return IntServSource(config, client, SourceContext())


def page(events: list[Any], key: str | None = None) -> dict[str, Any]:
    return {
        "least_sync_time": "2026-03-02T08:00:00Z",
        "has_more": key is not None,
        "continuation_key": key,
        "events": events,
    }


@pytest.mark.parametrize("status", [500, 503, 403])
def test_a_key_failing_with_any_persistent_error_restarts_the_pass(status: int) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if body.get("continuation_key") == "k1" and len(bodies) < 6:
            return httpx.Response(status, json={"error": "continuation_key_expired"})
        if "continuation_key" in body:
            return httpx.Response(200, json=page([isv(2)]))
        return httpx.Response(200, json=page([isv(1)], key="k1"))

    pages = list(isv_source(handler).pages({}, T0))
    keys = [b.get("continuation_key") for b in bodies]
    retried = 2 if status >= 500 else 1  # 5xx retried first, 403 not
    assert keys[: 2 + retried] == [None, *["k1"] * retried, None]  # dropped: restarted
    assert {b["from_date"] for b in bodies} == {iso(T0)}
    assert sum(len(p.records) for p in pages) >= 2
    assert "pass" not in pages[-1].cursor


def test_a_key_that_always_fails_ends_the_pass_with_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "continuation_key" in json.loads(request.content):
            return httpx.Response(500, json={"error": "internal"})
        return httpx.Response(200, json=page([isv(1)], key="k1"))

    with pytest.raises(ContinuationRejected, match=r"rejected 4 times.*HTTP 500"):
        list(isv_source(handler).pages({}, T0))


def test_narrows() -> None:
    assert narrows("{}", '{"systems":["a"]}')
    assert narrows('{"systems":["a","b"]}', '{"systems":["a"]}')
    assert not narrows('{"systems":["a"]}', '{"systems":["a","b"]}')
    assert not narrows('{"systems":["a"]}', "{}")
    assert not narrows("{}", '{"include_access_granted":true}')


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_rescope() -> None:
    a, ab = '{"systems":["a"]}', '{"systems":["a","b"]}'
    held = IntServCursor(at(500), PassState(at(500), "key", None, a), scope=a, origin=at(0))
    same, change = rescope(held, a, at(-99))
    assert (same, change) == (held, None)
    wider, change = rescope(held, ab, at(-99))
    assert change == "widened"
    assert wider == IntServCursor(at(0), None, scope=ab, origin=at(0))
    narrower, change = rescope(IntServCursor(at(500), scope=ab, origin=at(0)), a, at(-99))
    assert (narrower.least_sync_time, narrower.scope, change) == (at(500), a, "narrowed")
    # no origin stored (a cursor from before): the configured start
    legacy, change = rescope(IntServCursor(at(500), scope=a), ab, at(-99))
    assert (legacy.least_sync_time, change) == (at(-99), "widened")
    # no scope stored at all: adopted as it is now, nothing re-read
    adopted, change = rescope(IntServCursor(at(500)), ab, at(-99))
    assert (adopted.least_sync_time, adopted.scope, change) == (at(500), ab, None)


def test_adding_a_system_reads_it_from_the_origin_and_the_horizon_is_its_own() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=page([isv(1)]) | {"least_sync_time": iso(at(100))})

    first = list(isv_source(handler, systems=("a",)).pages({}, at(1000)))
    cursor = dict(first[-1].cursor, least_sync_time=iso(at(900)))  # later passes moved it
    with capture_logs() as logs:
        pages = list(isv_source(handler, systems=("a", "b")).pages(cursor, at(2000)))
    (changed,) = [e for e in logs if e["event"] == "scope_changed"]
    assert (changed["change"], changed["read_from"]) == ("widened", iso(at(0)))
    assert bodies[-1]["from_date"] == iso(at(0))  # start: b was never read
    assert bodies[-1]["systems"] == ["a", "b"]
    assert pages[-1].cursor["least_sync_time"] == iso(at(100))  # not max(900, ...)


def iso(when: datetime) -> str:
    return intserv.canonical_time(when)


# -- user mistakes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg2://u@h/db", "mysql://u@h/db", "oracle://u@h/db", "bogus://x"]
)
def test_database_urls_for_drivers_syncd_does_not_ship(url: str) -> None:
    with pytest.raises(ConfigError, match=r"postgresql://.*sqlite:///"):
        load_settings(None, url, environ={})


def test_tilde_of_a_user_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such user"):
        load_settings("~nosuchuser-syncd/syncd.toml", None, environ={})
    with pytest.raises(ConfigError, match="no such user"):
        load_settings(None, "sqlite:///~nosuchuser-syncd/x.db", environ={})
    toml = tmp_path / "syncd.toml"
    toml.write_text(
        '[[sources]]\nname = "hq"\nkind = "doorflow"\nbase_url = "http://x"\n'
        'token_file = "~nosuchuser-syncd/token"\n'
    )
    with pytest.raises(ConfigError, match=r"token_file.*no such user"):
        load_settings(str(toml), None, environ={})


def test_passwords_in_the_query_are_redacted() -> None:
    shown = describe_url("postgresql+psycopg://u:pw1@h/db?sslmode=require&password=pw2")
    assert "pw1" not in shown
    assert "pw2" not in shown
    assert "password=***" in shown
    assert "sslmode=require" in shown
