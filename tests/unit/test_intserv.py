"""IntServ connector: normalization, the cursor arithmetic, a model-checked
sync against an in-test fake server, and retries through the shared HTTP
machinery. No network: everything goes through ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.config import Secret, SourceConfig
from syncd.errors import AuthError, ContinuationRejected, RequestRejected, SourceError
from syncd.records import MalformedRecord
from syncd.sources import source_class
from syncd.sources.base import CodeInfo, Page, SourceContext
from syncd.sources.intserv import (
    MAX_RESTARTS,
    IntServCursor,
    IntServSource,
    PassState,
    after_page,
    begin_pass,
    canonical_time,
    event_key,
    from_api,
    normalize_page,
    read_list_response,
    restart_pass,
)

API_KEY = "isk-SUPERSECRET-0123456789"
BASE_URL = "http://intserv.test"
T0 = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)

CODES: dict[int, CodeInfo] = {
    100: CodeInfo("Access granted", "access_granted"),
    101: CodeInfo("Access granted (code)", "access_granted"),
    102: CodeInfo("Access granted (proximity)", "access_granted"),
    103: CodeInfo("Access granted (proximity + PIN)", "access_granted"),
    104: CodeInfo("Access granted (exit button)", "access_granted"),
    105: CodeInfo("Access granted (common code)", "access_granted"),
    **{c: CodeInfo(f"Access denied ({c})", "access_denied") for c in range(200, 208)},
}

SAMPLE: dict[str, Any] = {
    "event_time": "2020-03-01T00:00:00Z",
    "sequence_id": 12345,
    "category": "accessgranted",
    "type": 101,
    "system_id": "abc123-001",
    "door_name": "entrance",
    "key_id": "47c73793-ac07-4180-b660-438ca589c0b6",
    "key": {"identification": "0001234567890", "type": "proximity"},
    "person": {
        "id": "81bd075c-f97b-4576-96f5-9821c7d80e98",
        "first_name": "first name",
        "last_name": "last_name",
    },
    "subject": None,
}


def config(**overrides: Any) -> SourceConfig:
    values: dict[str, Any] = {
        "name": "sto",
        "kind": "intserv",
        "base_url": BASE_URL,
        "api_key": Secret(API_KEY),
        "start": T0,
        "page_size": 1000,
        "max_retries": 4,
        "max_retry_wait": 0.01,
    }
    values.update(overrides)
    return SourceConfig(**values)


def make_source(
    handler: Callable[[httpx.Request], httpx.Response], **overrides: Any
) -> IntServSource:
    client = httpx.Client(base_url=BASE_URL, transport=httpx.MockTransport(handler))
    return IntServSource(config(**overrides), client, SourceContext(codes=CODES))


def ok(events: list[Any], lst: str = "2024-03-04T12:00:00Z", key: str | None = None) -> Any:
    return {
        "least_sync_time": lst,
        "has_more": key is not None,
        "continuation_key": key,
        "events": events,
    }


# -- normalization ---------------------------------------------------------------


def test_vendor_sample() -> None:
    record = from_api(SAMPLE, CODES)
    assert record.event_key == "abc123-001|2020-03-01T00:00:00Z|12345"
    assert record.vendor == "intserv"
    assert record.occurred_at == datetime(2020, 3, 1, tzinfo=UTC)
    assert record.event_code == 101
    assert record.category == "access_granted"
    assert record.label == "Access granted (code)"
    assert record.system_id == "abc123-001"
    assert record.sequence_id == 12345
    assert record.door_name == "entrance"
    assert record.door_id is None
    assert record.person_id == "81bd075c-f97b-4576-96f5-9821c7d80e98"
    assert record.person_name == "first name last_name"
    assert record.credential == "0001234567890"
    assert record.source_updated_at is None
    assert orjson.loads(record.payload) == SAMPLE


def test_sample_response_parses() -> None:
    response = read_list_response(ok([SAMPLE], lst="2020-03-01T00:00:00Z"))
    assert response.least_sync_time == datetime(2020, 3, 1, tzinfo=UTC)
    assert response.has_more is False
    assert response.continuation_key is None
    assert response.events == [SAMPLE]


@pytest.mark.parametrize(
    "event_time",
    [
        "2024-03-04T10:00:05+02:00",
        "2024-03-04T08:00:05Z",
        "2024-03-04T08:00:05.000Z",
        "2024-03-04T08:00:05.000000+00:00",
        "2024-03-04T03:00:05-05:00",
        "2024-03-04T08:00:05",  # naive: UTC
    ],
)
def test_event_time_offsets_give_one_key(event_time: str) -> None:
    record = from_api({**SAMPLE, "event_time": event_time}, CODES)
    assert record.event_key == "abc123-001|2024-03-04T08:00:05Z|12345"
    assert record.occurred_at == datetime(2024, 3, 4, 8, 0, 5, tzinfo=UTC)
    assert record.occurred_at.utcoffset() == timedelta(0)
    # The payload keeps what the vendor sent.
    assert orjson.loads(record.payload)["event_time"] == event_time


def test_canonical_time() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert canonical_time(datetime(2024, 1, 1, 2, tzinfo=plus2)) == "2024-01-01T00:00:00Z"
    assert canonical_time(datetime(2024, 1, 1)) == "2024-01-01T00:00:00Z"
    assert canonical_time(datetime(2024, 1, 1, 0, 0, 0, 123000, UTC)) == (
        "2024-01-01T00:00:00.123000Z"
    )
    assert event_key("s", datetime(2024, 1, 1, tzinfo=UTC), 7) == "s|2024-01-01T00:00:00Z|7"


def test_subject_instead_of_person() -> None:
    raw = {**SAMPLE, "person": None, "subject": {"name": " Cleaning contractor "}, "key": None}
    record = from_api(raw, CODES)
    assert record.person_id is None
    assert record.person_name == "Cleaning contractor"
    assert record.credential is None


@pytest.mark.parametrize(
    ("person", "subject", "name"),
    [
        ({"id": "p", "first_name": "Ada", "last_name": None}, None, "Ada"),
        ({"id": "p", "first_name": "", "last_name": " Lovelace "}, None, "Lovelace"),
        ({"id": "p", "first_name": "", "last_name": ""}, None, None),
        ({"id": "p"}, None, None),
        (None, None, None),
        (None, {"name": ""}, None),
        (None, {}, None),
    ],
)
def test_person_names(person: Any, subject: Any, name: str | None) -> None:
    record = from_api({**SAMPLE, "person": person, "subject": subject}, CODES)
    assert record.person_name == name
    assert record.person_id == (person or {}).get("id")


def test_missing_optional_fields() -> None:
    raw = {"event_time": "2024-03-04T08:00:05Z", "sequence_id": 1, "type": 206, "system_id": "s"}
    record = from_api(raw, CODES)
    assert record.category == "access_denied"
    assert record.door_name is None
    assert record.person_name is None
    assert record.credential is None


@pytest.mark.parametrize(
    ("code", "category", "expected", "label"),
    [
        (104, "accessgranted", "access_granted", "Access granted (exit button)"),
        (203, "accessdenied", "access_denied", "Access denied (203)"),
        (150, "accessgranted", "access_granted", None),
        (250, "AccessDenied", "access_denied", None),
        (999, "somethingelse", "other", None),
        (999, None, "other", None),
    ],
)
def test_category_and_label(code: int, category: Any, expected: str, label: str | None) -> None:
    record = from_api({**SAMPLE, "type": code, "category": category}, CODES)
    assert record.category == expected
    assert record.label == label


def test_category_without_code_table() -> None:
    assert from_api(SAMPLE, {}).category == "access_granted"
    assert from_api(SAMPLE, {}).label is None


def test_numeric_strings_are_integers() -> None:
    record = from_api({**SAMPLE, "sequence_id": "12345", "type": "101"}, CODES)
    assert record.event_key == "abc123-001|2020-03-01T00:00:00Z|12345"
    assert record.event_code == 101


MALFORMED: list[tuple[Any, str]] = [
    ([1, 2], "not an object"),
    ("event", "not an object"),
    (None, "not an object"),
    ({**SAMPLE, "event_time": None}, "event_time"),
    ({k: v for k, v in SAMPLE.items() if k != "event_time"}, "event_time"),
    ({**SAMPLE, "event_time": "yesterday"}, "event_time"),
    ({**SAMPLE, "event_time": 1583020800}, "event_time"),
    ({k: v for k, v in SAMPLE.items() if k != "sequence_id"}, "sequence_id"),
    ({**SAMPLE, "sequence_id": 1.5}, "sequence_id"),
    ({**SAMPLE, "sequence_id": "abc"}, "sequence_id"),
    ({**SAMPLE, "sequence_id": True}, "sequence_id"),
    ({k: v for k, v in SAMPLE.items() if k != "type"}, "type"),
    ({**SAMPLE, "type": "granted"}, "type"),
    ({k: v for k, v in SAMPLE.items() if k != "system_id"}, "system_id"),
    ({**SAMPLE, "system_id": ""}, "system_id"),
    ({**SAMPLE, "system_id": ["a"]}, "system_id"),
    ({**SAMPLE, "person": "Ada"}, "person"),
    ({**SAMPLE, "person": ["Ada"]}, "person"),
    ({**SAMPLE, "key": "0001234"}, "key"),
    ({**SAMPLE, "subject": 5, "person": None}, "subject"),
    ({**SAMPLE, "person": {"id": {"x": 1}}}, "person.id"),
    ({**SAMPLE, "key": {"identification": [1]}}, "key.identification"),
    ({**SAMPLE, "door_name": {"name": "x"}}, "door_name"),
]


@pytest.mark.parametrize(("raw", "reason"), MALFORMED)
def test_malformed(raw: Any, reason: str) -> None:
    with pytest.raises(MalformedRecord, match=reason):
        from_api(raw, CODES)


def test_normalize_page_keeps_the_rest() -> None:
    bad_time = {**SAMPLE, "sequence_id": None}
    items = [SAMPLE, "junk", bad_time, {**SAMPLE, "event_time": "nope"}, {**SAMPLE, "type": 200}]
    records, rejected = normalize_page(items, CODES)
    assert [r.event_code for r in records] == [101, 200]
    assert [r.raw for r in rejected] == items[1:4]
    # The time is kept where it could be read, for reconciliation counts.
    assert [r.occurred_at for r in rejected] == [None, datetime(2020, 3, 1, tzinfo=UTC), None]
    assert "sequence_id" in rejected[1].reason


def test_source_is_registered() -> None:
    assert source_class("intserv") is IntServSource


# -- the cursor arithmetic -----------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_first_pass_starts_at_start() -> None:
    cursor = IntServCursor.from_json({}, at(0))
    assert cursor == IntServCursor(at(0), origin=at(0))
    cursor = begin_pass(cursor, "{}")
    assert cursor.current == PassState(from_date=at(0), scope="{}")


def test_cursor_json_round_trip() -> None:
    cursor = IntServCursor(at(5), PassState(at(5), "k1", at(9), '{"systems":["a"]}'))
    data = json.loads(json.dumps(cursor.to_json()))
    assert data == {
        "least_sync_time": "2024-03-04T12:00:05Z",
        "pass": {
            "from_date": "2024-03-04T12:00:05Z",
            "continuation_key": "k1",
            "horizon": "2024-03-04T12:00:09Z",
            "scope": '{"systems":["a"]}',
        },
    }
    assert IntServCursor.from_json(data, at(0)) == cursor
    assert IntServCursor.from_json({"least_sync_time": "2024-03-04T12:00:05Z"}, at(0)) == (
        IntServCursor(at(5))
    )


def test_horizon_is_the_minimum_reported_in_the_pass() -> None:
    cursor = begin_pass(IntServCursor(at(10)), "")
    cursor = after_page(cursor, at(20), True, "k1")
    assert cursor.least_sync_time == at(10)  # committed horizon unchanged mid-pass
    assert cursor.current == PassState(at(10), "k1", at(20), "")
    cursor = after_page(cursor, at(50), True, "k2")  # a system came back: higher now
    assert cursor.current is not None
    assert cursor.current.horizon == at(20)
    cursor = after_page(cursor, at(60), False, None)
    # not 60: that would skip the late events
    assert (cursor.least_sync_time, cursor.current) == (at(20), None)


def test_horizon_never_moves_backwards() -> None:
    cursor = begin_pass(IntServCursor(at(100)), "")
    cursor = after_page(cursor, at(40), False, None)
    assert (cursor.least_sync_time, cursor.current) == (at(100), None)


def test_unreadable_least_sync_time_holds_the_cursor() -> None:
    cursor = begin_pass(IntServCursor(at(10)), "")
    cursor = after_page(cursor, None, True, "k1")
    cursor = after_page(cursor, at(90), False, None)
    assert (cursor.least_sync_time, cursor.current) == (at(10), None)


def test_restart_keeps_from_date_and_drops_key_and_horizon() -> None:
    cursor = IntServCursor(at(10), PassState(at(10), "k3", at(30), "s"))
    assert restart_pass(cursor) == IntServCursor(at(10), PassState(at(10), None, None, "s"))


@given(
    old=st.integers(0, 1000),
    reported=st.lists(st.one_of(st.none(), st.integers(0, 2000)), min_size=1, max_size=8),
)
def test_pass_end_is_max_of_old_and_min_reported(old: int, reported: list[int | None]) -> None:
    cursor = begin_pass(IntServCursor(at(old)), "")
    for i, value in enumerate(reported):
        last = i == len(reported) - 1
        cursor = after_page(cursor, None if value is None else at(value), not last, f"k{i}")
        assert cursor.least_sync_time == at(old) or last
    seen = [old if v is None else v for v in reported]
    assert (cursor.least_sync_time, cursor.current) == (at(max(old, min(seen))), None)


# -- a fake IntServ server --------------------------------------------------------


@dataclass(frozen=True)
class FakeEvent:
    system: str
    t: int  # seconds after T0
    seq: int
    code: int
    offset_minutes: int = 0
    millis: bool = False

    @property
    def order(self) -> tuple[int, str, int]:
        return (self.t, self.system, self.seq)

    @property
    def key(self) -> str:
        return event_key(self.system, at(self.t), self.seq)

    def to_api(self) -> dict[str, Any]:
        local = at(self.t).astimezone(timezone(timedelta(minutes=self.offset_minutes)))
        text = local.isoformat(timespec="milliseconds" if self.millis else "seconds")
        return {
            "event_time": text.replace("+00:00", "Z"),
            "sequence_id": self.seq,
            "category": "accessgranted" if self.code < 200 else "accessdenied",
            "type": self.code,
            "system_id": self.system,
            "door_name": "entrance",
            "key_id": None,
            "key": {"identification": f"{self.seq:010d}", "type": "proximity"},
            "person": {"id": f"p-{self.seq}", "first_name": "Ada", "last_name": self.system},
            "subject": None,
        }


@dataclass
class FakeIntServ:
    """Systems with horizons; offline systems buffer their events until they return.

    The list is sorted by (event_time, system_id, sequence_id), ``from_date``
    is inclusive, continuation keys are ``generation:offset`` (``expire()``
    invalidates every key given out so far), and ``least_sync_time`` is the
    minimum horizon of the systems in scope (an online system's horizon is
    now; an offline one's is frozen at when it went offline).
    """

    systems: tuple[str, ...]
    now: int = 0
    online: dict[str, bool] = field(default_factory=dict)
    frozen: dict[str, int] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    visible: list[FakeEvent] = field(default_factory=list)
    buffered: dict[str, list[FakeEvent]] = field(default_factory=dict)
    generation: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for s in self.systems:
            self.online[s] = True
            self.frozen[s] = 0
            self.seq[s] = 0
            self.buffered[s] = []

    # -- the world --

    def generate(self, system: str, n: int) -> None:
        index = self.systems.index(system)
        for _ in range(n):
            self.seq[system] += 1
            seq = self.seq[system]
            event = FakeEvent(
                system,
                self.now,
                seq,
                (100, 102, 104, 201, 206)[seq % 5],
                offset_minutes=(0, 120, -300)[index % 3],
                millis=seq % 2 == 0,
            )
            if self.online[system]:
                self.visible.append(event)
            else:
                self.buffered[system].append(event)

    def tick(self, seconds: int) -> None:
        self.now += seconds

    def set_offline(self, system: str, offline: bool) -> None:
        if offline and self.online[system]:
            self.online[system] = False
            self.frozen[system] = self.now
        elif not offline and not self.online[system]:
            self.online[system] = True
            self.visible.extend(self.buffered[system])  # old event_time values
            self.buffered[system] = []

    def expire(self) -> None:
        self.generation += 1

    def all_events(self) -> list[FakeEvent]:
        return self.visible + [e for s in self.systems for e in self.buffered[s]]

    def horizon(self, system: str) -> int:
        return self.now if self.online[system] else self.frozen[system]

    # -- the API --

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.url.path == "/v1/events/list"
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return httpx.Response(401, json={"error": "unauthorized"})
        body = json.loads(request.content)
        self.requests.append(body)
        assert "to_date" not in body
        from_date = datetime.fromisoformat(body["from_date"])
        scope = body.get("systems") or list(self.systems)
        listing = sorted(
            (e for e in self.visible if at(e.t) >= from_date and e.system in scope),
            key=lambda e: e.order,
        )
        offset = 0
        key = body.get("continuation_key")
        if key is not None:
            generation, _, position = key.partition(":")
            if int(generation) != self.generation:
                return httpx.Response(400, json={"error": "invalid_continuation_key"})
            offset = int(position)
        limit = body["limit"]
        page = listing[offset : offset + limit]
        more = offset + limit < len(listing)
        least = min(self.horizon(s) for s in scope)
        return httpx.Response(
            200,
            json={
                "least_sync_time": canonical_time(at(least)),
                "has_more": more,
                "continuation_key": f"{self.generation}:{offset + limit}" if more else None,
                "events": [e.to_api() for e in page],
            },
        )


@dataclass
class MemoryStore:
    """The engine's contract in memory: a page's records and cursor commit together."""

    events: dict[str, bytes] = field(default_factory=dict)
    cursor: dict[str, Any] = field(default_factory=dict)
    horizons: list[datetime] = field(default_factory=list)
    pages: int = 0

    def commit(self, page: Page) -> None:
        assert not page.rejected
        for record in page.records:
            self.events[record.event_key] = record.payload
        self.cursor = page.cursor
        least = datetime.fromisoformat(page.cursor["least_sync_time"])
        assert not self.horizons or least >= self.horizons[-1], "least_sync_time went backwards"
        self.horizons.append(least)
        self.pages += 1

    @property
    def least_sync_time(self) -> datetime:
        return self.horizons[-1]


Mutation = tuple[Any, ...]


def apply(server: FakeIntServ, op: Mutation) -> None:
    kind = op[0]
    if kind == "gen":
        server.generate(op[1], op[2])
    elif kind == "tick":
        server.tick(op[1])
    elif kind == "offline":
        server.set_offline(op[1], True)
    elif kind == "online":
        server.set_offline(op[1], False)
    elif kind == "expire":
        server.expire()
    else:  # pragma: no cover
        raise AssertionError(op)


def sync_pass(
    server: FakeIntServ,
    store: MemoryStore,
    *,
    page_size: int,
    crash_after: int | None = None,
    between: tuple[Mutation, ...] = (),
    systems: tuple[str, ...] = (),
) -> bool:
    """One pass, as the engine runs it; False if it crashed or failed."""
    cfg = config(page_size=page_size, systems=systems, max_retries=1)
    with httpx.Client(base_url=BASE_URL, transport=httpx.MockTransport(server.handle)) as client:
        source = IntServSource(cfg, client, SourceContext(codes=CODES))
        pages = source.pages(store.cursor, at(server.now))
        try:
            for index, page in enumerate(pages):
                store.commit(page)
                if index < len(between):
                    apply(server, between[index])  # the world moves between requests
                if crash_after is not None and index + 1 >= crash_after:
                    return False  # killed: what is committed is all that remains
        except SourceError:
            return False
        finally:
            pages.close()
    return True


def assert_everything_below_horizon_stored(server: FakeIntServ, store: MemoryStore) -> None:
    """The cursor's promise: every event before least_sync_time is already stored."""
    if not store.horizons:
        return
    missing = [
        e
        for e in server.all_events()
        if at(e.t) < store.least_sync_time and e.key not in store.events
    ]
    assert not missing, f"behind the cursor but never stored: {missing[:3]}"


SYSTEMS = ("sys-a", "sys-b", "sys-c")
system_names = st.sampled_from(SYSTEMS)
generate = st.tuples(st.just("gen"), system_names, st.integers(1, 5))
tick = st.tuples(st.just("tick"), st.integers(0, 3))
offline = st.tuples(st.just("offline"), system_names)
online = st.tuples(st.just("online"), system_names)
expire = st.tuples(st.just("expire"))
mutations = st.one_of(generate, generate, tick, tick, offline, online, expire)
# Between two pages the world moves too: above all, systems come back online
# with old events, which then land behind the continuation position.
mid_pass = st.one_of(online, online, generate, tick, offline, expire)
passes = st.tuples(
    st.just("pass"),
    st.integers(1, 4),  # page size
    st.one_of(st.none(), st.none(), st.integers(1, 4)),  # crash after k committed pages
    st.lists(mid_pass, max_size=4).map(tuple),  # what happens after each page
)


@st.composite
def late_returns(draw: st.DrawFn) -> list[Mutation]:
    """The dangerous shape, spelled out: a system goes offline and buffers
    events, others keep going, and it comes back between two pages of a pass."""
    late, other = draw(st.permutations(SYSTEMS))[:2]
    return [
        ("offline", late),
        ("gen", late, draw(st.integers(1, 3))),
        ("tick", draw(st.integers(1, 3))),
        ("gen", other, draw(st.integers(1, 5))),
        ("tick", draw(st.integers(0, 2))),
        ("gen", other, draw(st.integers(0, 3))),
        (
            "pass",
            draw(st.integers(1, 4)),
            draw(st.one_of(st.none(), st.integers(2, 4))),
            (("online", late), *draw(st.lists(mid_pass, max_size=3))),
        ),
    ]


steps = st.one_of(
    mutations.map(lambda op: [op]),
    passes.map(lambda op: [op]),
    late_returns(),
)
scenarios = st.lists(steps, min_size=1, max_size=15).map(
    lambda chunks: [op for chunk in chunks for op in chunk]
)


def run_scenario(steps: list[Mutation]) -> tuple[FakeIntServ, MemoryStore]:
    server = FakeIntServ(SYSTEMS)
    store = MemoryStore()
    for op in steps:
        if op[0] == "pass":
            sync_pass(server, store, page_size=op[1], crash_after=op[2], between=op[3])
            assert_everything_below_horizon_stored(server, store)
        else:
            apply(server, op)
    # Every system back online; finish a pass in progress (it only reads what
    # lies ahead of its old position, the rest is at or after its horizon),
    # then one fresh, uninterrupted pass.
    for system in SYSTEMS:
        server.set_offline(system, False)
    if "pass" in store.cursor:
        assert sync_pass(server, store, page_size=3)
        assert_everything_below_horizon_stored(server, store)
    assert "pass" not in store.cursor
    assert sync_pass(server, store, page_size=3)
    assert_everything_below_horizon_stored(server, store)
    return server, store


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_model_every_event_exactly_once(steps: list[Mutation]) -> None:
    server, store = run_scenario(steps)
    truth = {e.key for e in server.all_events()}
    assert len(truth) == len(server.all_events())  # the natural key is unique
    assert set(store.events) == truth
    assert "pass" not in store.cursor


def test_system_back_mid_pass_is_not_skipped() -> None:
    """The scenario the minimum horizon exists for, step by step."""
    server = FakeIntServ(("sys-a", "sys-b"))
    store = MemoryStore()
    server.generate("sys-a", 1)  # t=0
    server.tick(10)
    server.set_offline("sys-b", True)  # sys-b's horizon frozen at t=10
    server.generate("sys-b", 2)  # buffered, event_time t=10
    server.tick(5)
    server.generate("sys-a", 2)  # t=15
    server.tick(5)
    server.generate("sys-a", 3)  # t=20
    # Page 1 reads a@0, a@15, a@15 and reports least_sync_time 10 (sys-b holds
    # it back). Then sys-b returns: its t=10 events land *behind* the
    # continuation position, and later pages report least_sync_time 20.
    done = sync_pass(server, store, page_size=3, between=(("online", "sys-b"),))
    assert done
    late = {e.key for e in server.all_events() if e.system == "sys-b"}
    assert len(late) == 2
    assert not late & set(store.events)  # this pass could not see them...
    assert store.least_sync_time == at(10)  # ...so the cursor stays at the first page's 10
    # (the last page's 20 would have skipped them forever)
    assert sync_pass(server, store, page_size=3)
    assert late <= set(store.events)  # the next pass, from t=10, reads them
    assert set(store.events) == {e.key for e in server.all_events()}


def test_crash_resumes_with_the_stored_key() -> None:
    server = FakeIntServ(("sys-a",))
    server.generate("sys-a", 7)
    server.tick(5)
    store = MemoryStore()
    assert not sync_pass(server, store, page_size=2, crash_after=2)
    assert store.cursor["pass"]["continuation_key"] == "0:4"
    assert store.cursor["least_sync_time"] == canonical_time(at(0))
    server.requests.clear()
    assert sync_pass(server, store, page_size=2)
    # The interrupted walk goes on from its key, then a fresh pass starts at
    # the new horizon (what reached the list behind the key meanwhile).
    assert [r.get("continuation_key") for r in server.requests] == ["0:4", "0:6", None]
    assert len(store.events) == 7
    assert store.cursor["least_sync_time"] == canonical_time(at(5))
    assert "pass" not in store.cursor


def test_a_resumed_pass_holds_what_landed_behind_its_key_while_it_was_down() -> None:
    server = FakeIntServ(("sys-a", "sys-b"))
    server.generate("sys-a", 1)
    server.tick(10)
    server.set_offline("sys-b", True)
    server.generate("sys-b", 2)  # buffered at t=10
    server.tick(5)
    server.generate("sys-a", 4)  # t=15
    store = MemoryStore()
    assert not sync_pass(server, store, page_size=2, crash_after=1)
    server.set_offline("sys-b", False)  # while syncd is down: lands behind the key
    late = {e.key for e in server.all_events() if e.system == "sys-b"}
    assert sync_pass(server, store, page_size=2)  # the resumed pass exits 0 ...
    assert late <= set(store.events)  # ... holding them
    assert set(store.events) == {e.key for e in server.all_events()}


def test_rejected_key_restarts_from_from_date() -> None:
    server = FakeIntServ(("sys-a",))
    server.generate("sys-a", 5)
    server.tick(5)
    store = MemoryStore()
    assert not sync_pass(server, store, page_size=2, crash_after=1)
    server.expire()  # the stored key is now refused
    server.requests.clear()
    assert sync_pass(server, store, page_size=2)
    keys = [r.get("continuation_key") for r in server.requests]
    assert keys == ["0:2", None, "1:2", "1:4", None]  # the last: the fresh pass after a resume
    assert [r["from_date"] for r in server.requests] == [canonical_time(at(0))] * 4 + [
        canonical_time(at(5))
    ]
    assert len(store.events) == 5
    assert store.cursor["least_sync_time"] == canonical_time(at(5))
    assert "pass" not in store.cursor


def test_keys_rejected_too_often_fail_the_pass() -> None:
    server = FakeIntServ(("sys-a",))
    server.generate("sys-a", 5)
    store = MemoryStore()
    expiring = (("expire",),) * (MAX_RESTARTS + 2)
    assert not sync_pass(server, store, page_size=2, between=expiring)
    firsts = [r for r in server.requests if "continuation_key" not in r]
    assert len(firsts) == MAX_RESTARTS + 1
    assert store.cursor["pass"]["continuation_key"] is not None  # resumable next time
    assert sync_pass(server, store, page_size=2)
    assert len(store.events) == 5


def test_too_many_rejections_raise_continuation_rejected() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "continuation_key" in body:
            return httpx.Response(400, json={"error": "invalid_continuation_key"})
        return httpx.Response(200, json=ok([], key="k"))

    source = make_source(handler)
    pages = source.pages({}, T0)
    with pytest.raises(ContinuationRejected, match="rejected 4 times"):
        list(pages)


def test_400_without_a_key_fails_at_once() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": "invalid_request", "message": "bad systems"})

    source = make_source(handler)
    with pytest.raises(RequestRejected) as info:
        list(source.pages({}, T0))
    assert not isinstance(info.value, ContinuationRejected)
    assert len(calls) == 1
    assert "bad systems" in str(info.value)


def test_filters_only_when_configured() -> None:
    server = FakeIntServ(("sys-a", "sys-b"))
    server.generate("sys-a", 1)
    server.generate("sys-b", 1)
    store = MemoryStore()
    assert sync_pass(server, store, page_size=5000, systems=("sys-b",))
    assert server.requests == [
        {"from_date": "2024-03-04T12:00:00Z", "limit": 1000, "systems": ["sys-b"]}
    ]
    assert [k.split("|")[0] for k in store.events] == ["sys-b"]

    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=ok([]))

    source = make_source(
        handler, include_access_granted=False, include_access_denied=True, page_size=10
    )
    list(source.pages({}, T0))
    assert bodies == [
        {
            "from_date": "2024-03-04T12:00:00Z",
            "limit": 10,
            "include_access_granted": False,
            "include_access_denied": True,
        }
    ]


def test_from_date_is_sent_in_whole_seconds_rounded_down() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=ok([], lst="2024-03-04T12:00:07.900Z"))

    source = make_source(handler, start=at(5.75))
    (page,) = source.pages({}, T0)
    assert bodies[0]["from_date"] == "2024-03-04T12:00:05Z"
    assert page.cursor["least_sync_time"] == "2024-03-04T12:00:07.900000Z"
    assert "pass" not in page.cursor
    (page,) = source.pages(page.cursor, T0)
    assert bodies[1]["from_date"] == "2024-03-04T12:00:07Z"


def test_first_pass_without_start_reads_seven_days() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=ok([], lst="2024-03-11T11:59:00Z"))

    source = make_source(handler, start=None)
    pages = list(source.pages({}, datetime(2024, 3, 11, 12, tzinfo=UTC)))
    assert bodies[0]["from_date"] == "2024-03-04T12:00:00Z"
    assert pages[-1].cursor["least_sync_time"] == "2024-03-11T11:59:00Z"
    assert "pass" not in pages[-1].cursor


def test_changed_filters_discard_the_pass_in_progress() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=ok([]))

    stored = IntServCursor(at(30), PassState(at(30), "old-key", at(40), "{}")).to_json()
    source = make_source(handler, systems=("sys-a",))
    list(source.pages(stored, T0))
    assert bodies == [{"from_date": canonical_time(at(30)), "limit": 1000, "systems": ["sys-a"]}]


def test_api_key_or_token_as_bearer() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json=ok([]))

    list(make_source(handler).pages({}, T0))
    list(make_source(handler, api_key=None, token=Secret("tok-1")).pages({}, T0))
    assert seen == [f"Bearer {API_KEY}", "Bearer tok-1"]


# -- responses of the wrong shape, and retries ---------------------------------


class Script:
    """A MockTransport handler answering from a list, then with ``then``."""

    def __init__(self, *answers: httpx.Response | Exception, then: Any = None) -> None:
        self.answers = list(answers)
        self.then = then
        self.calls = 0
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.times.append(time.monotonic())
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return httpx.Response(200, json=self.then if self.then is not None else ok([SAMPLE]))


def run(script: Script, **overrides: Any) -> list[Page]:
    return list(make_source(script, **overrides).pages({}, T0))


@pytest.mark.parametrize(
    "body",
    [
        {"least_sync_time": "2024-03-04T12:00:00Z", "has_more": False},
        {"events": None, "has_more": False},
        {"events": {"a": 1}, "has_more": False},
        [SAMPLE],
        "events",
        {"events": [], "has_more": "no"},
        {"events": []},
        {"events": [], "has_more": True, "continuation_key": None},
        {"events": [], "has_more": True, "continuation_key": ""},
    ],
)
def test_wrong_shape_fails_the_pass_without_retrying(body: Any) -> None:
    script = Script(httpx.Response(200, json=body))
    with pytest.raises(SourceError, match="IntServ answered"):
        run(script)
    assert script.calls == 1


def test_the_same_key_handed_back_fails_the_pass() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=ok([SAMPLE], key="k1"))

    pages = make_source(handler).pages({}, T0)
    assert next(pages).cursor["pass"]["continuation_key"] == "k1"
    with pytest.raises(SourceError, match="continuation_key it was sent"):
        next(pages)


def test_429_retry_after_header_is_honoured() -> None:
    script = Script(
        httpx.Response(429, headers={"Retry-After": "0.05"}, json={"error": "rate_limited"})
    )
    pages = run(script, max_retry_wait=5)
    assert script.calls == 2
    assert script.times[1] - script.times[0] >= 0.045
    assert len(pages[0].records) == 1


def test_429_retry_in_body_is_honoured() -> None:
    script = Script(
        httpx.Response(429, json={"error": "rate_limited", "retry_in": 0.05}),
        httpx.Response(429, json={"error": "rate_limited", "retry_after": 0.05}),
    )
    pages = run(script, max_retry_wait=5)
    assert script.calls == 3
    assert script.times[1] - script.times[0] >= 0.045
    assert script.times[2] - script.times[1] >= 0.045
    assert len(pages[0].records) == 1


def test_429_wait_is_capped() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}))
    started = time.monotonic()
    run(script, max_retry_wait=0.01)
    assert time.monotonic() - started < 1
    assert script.calls == 2


def test_5xx_and_dropped_connections_are_retried() -> None:
    script = Script(
        httpx.Response(500, json={"error": "internal_server_error"}),
        httpx.Response(503, text="<html>busy</html>"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
    )
    pages = run(script, max_retries=5)
    assert script.calls == 4
    assert len(pages) == 1
    assert len(pages[0].records) == 1


def test_5xx_until_attempts_run_out_fails() -> None:
    script = Script(*[httpx.Response(502) for _ in range(10)])
    with pytest.raises(SourceError, match="HTTP 502"):
        run(script, max_retries=3)
    assert script.calls == 3


def test_401_is_an_auth_error_at_once() -> None:
    script = Script(httpx.Response(401, json={"error": "unauthorized"}))
    with pytest.raises(AuthError) as info:
        run(script)
    assert script.calls == 1
    message = str(info.value)
    assert "\n" not in message
    assert "401" in message
    assert API_KEY not in message


def test_non_json_is_retried_then_fails() -> None:
    script = Script(*[httpx.Response(200, text="<html>maintenance</html>") for _ in range(10)])
    with pytest.raises(SourceError, match="not JSON"):
        run(script, max_retries=3)
    assert script.calls == 3


def test_non_json_then_json_succeeds() -> None:
    script = Script(httpx.Response(200, text="<html>maintenance</html>"))
    pages = run(script)
    assert script.calls == 2
    assert len(pages[0].records) == 1


def test_malformed_records_are_rejected_and_the_page_goes_on() -> None:
    script = Script(then=ok([SAMPLE, {"junk": True}, 42], lst="2024-03-05T00:00:00Z"))
    (page,) = run(script)
    assert len(page.records) == 1
    assert [r.raw for r in page.rejected] == [{"junk": True}, 42]
    assert page.cursor["least_sync_time"] == "2024-03-05T00:00:00Z"
    assert "pass" not in page.cursor
