"""The IntServ simulator speaks the protocol of vendor-docs/intserv-events-list.md.

POST /v1/events/list with every body field, continuation keys (and their
expiry), least_sync_time with offline systems, ties, malformed records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest

from syncd.simulators import IntServSimulator, SimClock
from tests.simulators.simhelpers import START, client, parse_time

FIELDS = {
    "event_time", "sequence_id", "category", "type", "system_id", "door_name", "key_id", "key",
    "person", "subject",
}  # fmt: skip
SYSTEMS = ("abc123-001", "abc123-002", "def456-001")
LONG_AGO = "2000-01-01T00:00:00Z"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def order(event: dict[str, Any]) -> tuple[datetime, str, int]:
    return parse_time(event["event_time"]), event["system_id"], event["sequence_id"]


def pull(http: httpx.Client, **body: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    """Follow continuation keys to the end; returns events and every response head."""
    events: list[Any] = []
    heads: list[dict[str, Any]] = []
    request = dict(body)
    while True:
        r = http.post("/v1/events/list", json=request)
        assert r.status_code == 200, r.text
        page = r.json()
        events += page.pop("events")
        heads.append(page)
        if not page["has_more"]:
            assert page["continuation_key"] is None
            return events, heads
        request = {"continuation_key": page["continuation_key"]}


@pytest.fixture
def sim(clock: SimClock) -> Iterator[IntServSimulator]:
    with IntServSimulator(seed=7, history=4000, clock=clock) as s:
        yield s
        assert s.stats["internal_errors"] == 0


@pytest.fixture
def http(sim: IntServSimulator) -> Iterator[httpx.Client]:
    with client(sim.base_url, sim.api_key) as c:
        yield c


def test_response_shape_and_defaults(sim: IntServSimulator, http: httpx.Client) -> None:
    r = http.post("/v1/events/list", json={})
    assert r.status_code == 200
    page = r.json()
    assert set(page) == {"least_sync_time", "has_more", "continuation_key", "events"}
    assert page["least_sync_time"] == "2024-03-04T11:59:59Z"  # one second behind the clock
    events, _ = pull(http)  # default window: the last 7 days up to now
    week = [
        e
        for e in sim.truth().values()
        if START - timedelta(days=7) <= parse_time(e["event_time"]) < START
    ]
    assert events == sorted(week, key=order)
    for event in events:
        assert set(event) == FIELDS
        assert event["category"] == ("accessgranted" if event["type"] < 200 else "accessdenied")
        assert event["event_time"].endswith("Z")
        assert event["key"] is None or event["key"]["type"] in ("proximity", "code")
        assert event["person"] is None or set(event["person"]) == {"id", "first_name", "last_name"}
        assert event["subject"] is None or set(event["subject"]) == {"name"}
    assert {e["type"] for e in sim.truth().values()} == {*range(100, 106), *range(200, 208)}
    assert {e["key"]["type"] for e in sim.truth().values() if e["key"]} == {"proximity", "code"}
    assert any(e["subject"] for e in events)
    assert any(e["key_id"] is None for e in events)


def test_full_pass_in_order_with_continuation_keys(
    sim: IntServSimulator, http: httpx.Client
) -> None:
    events, heads = pull(http, from_date=LONG_AGO, limit=1000)
    truth = sim.truth()
    assert len(heads) == 4
    assert [h["has_more"] for h in heads] == [True, True, True, False]
    assert events == sorted(truth.values(), key=order)
    assert len(events) == len(truth) == 4000
    keys = [(e["system_id"], e["event_time"], e["sequence_id"]) for e in events]
    assert len(set(keys)) == len(keys)
    # Ties: several events of one system in one second, told apart by sequence_id ...
    per_second = Counter((e["system_id"], e["event_time"]) for e in events)
    assert max(per_second.values()) >= 2
    # ... and a sequence_id alone (even with the system) does not identify an event.
    assert len({(e["system_id"], e["sequence_id"]) for e in events}) < len(events)


def test_from_inclusive_to_exclusive(sim: IntServSimulator, http: httpx.Client) -> None:
    ordered = sorted(sim.truth().values(), key=order)
    a, b = ordered[1000]["event_time"], ordered[1400]["event_time"]
    events, _ = pull(http, from_date=a, to_date=b)
    assert events == [e for e in ordered if a <= e["event_time"] < b]
    assert events[0]["event_time"] == a
    assert all(e["event_time"] != b for e in events)
    offset = parse_time(a).astimezone(timezone(timedelta(hours=1))).isoformat()
    same, _ = pull(http, from_date=offset, to_date=b)
    assert same == events


def test_filters(sim: IntServSimulator, http: httpx.Client) -> None:
    truth = sorted(sim.truth().values(), key=order)
    events, _ = pull(http, from_date=LONG_AGO, systems=["abc123-002"])
    assert events == [e for e in truth if e["system_id"] == "abc123-002"]
    events, _ = pull(http, from_date=LONG_AGO, systems=["abc123-001", "def456-001"])
    assert events == [e for e in truth if e["system_id"] != "abc123-002"]
    granted, _ = pull(http, from_date=LONG_AGO, include_access_granted=True)
    assert granted == [e for e in truth if e["category"] == "accessgranted"]
    denied, _ = pull(
        http, from_date=LONG_AGO, include_access_denied=True, include_access_granted=False
    )
    assert denied == [e for e in truth if e["category"] == "accessdenied"]
    for both in (True, False):
        events, _ = pull(
            http, from_date=LONG_AGO, include_access_granted=both, include_access_denied=both
        )
        assert events == truth
    r = http.post("/v1/events/list", json={"systems": ["nope-001"]})
    assert r.status_code == 400
    assert "nope-001" in r.json()["message"]


def test_limit(http: httpx.Client) -> None:
    page = http.post("/v1/events/list", json={"from_date": LONG_AGO, "limit": 5000}).json()
    assert len(page["events"]) == 1000
    assert page["has_more"]
    page = http.post("/v1/events/list", json={"from_date": LONG_AGO, "limit": 3}).json()
    assert len(page["events"]) == 3
    page = http.post("/v1/events/list", json={"from_date": LONG_AGO}).json()
    assert len(page["events"]) == 1000
    for bad in (0, -1, "ten", True):
        r = http.post("/v1/events/list", json={"limit": bad})
        assert r.status_code == 400, bad
        assert r.json()["error"] == "invalid_request"


def test_bad_bodies(http: httpx.Client) -> None:
    for body in (
        b"{not json",
        b"[1, 2]",
        b'{"from_date": "yesterday"}',
        b'{"from_date": 5}',
        b'{"include_access_granted": "yes"}',
        b'{"from_date": "2024-03-02T00:00:00Z", "to_date": "2024-03-01T00:00:00Z"}',
    ):
        r = http.post("/v1/events/list", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, body
        assert set(r.json()) == {"error", "message"}


def test_continuation_keys_expire(clock: SimClock) -> None:
    with (
        IntServSimulator(seed=3, history=3000, clock=clock, continuation_ttl=60) as sim,
        client(sim.base_url, sim.api_key) as http,
    ):
        first = http.post("/v1/events/list", json={"from_date": LONG_AGO}).json()
        key = first["continuation_key"]
        assert isinstance(key, str)
        assert first["has_more"]
        clock.advance(59)
        second = http.post("/v1/events/list", json={"continuation_key": key})
        assert second.status_code == 200
        clock.advance(2)
        r = http.post("/v1/events/list", json={"continuation_key": key})
        assert r.status_code == 400
        assert r.json()["error"] == "continuation_key_expired"
        assert r.json()["message"]
        fresh = second.json()["continuation_key"]  # issued 2 s ago: still good
        assert http.post("/v1/events/list", json={"continuation_key": fresh}).status_code == 200
        for forged in (fresh[:-1] + ("0" if fresh[-1] != "0" else "1"), "garbage", 42):
            r = http.post("/v1/events/list", json={"continuation_key": forged})
            assert r.status_code == 400
            assert r.json()["error"] == "invalid_continuation_key"


def test_offline_system_holds_back_least_sync_time(clock: SimClock) -> None:
    with (
        IntServSimulator(seed=4, history=500, clock=clock) as sim,
        client(sim.base_url, sim.api_key) as http,
    ):
        sim.set_offline("abc123-002", True)
        went_offline = clock.now()
        frozen = iso(went_offline - timedelta(seconds=1))
        clock.advance(600)
        sim.generate(300)
        clock.advance(5)
        assert sim.buffered() > 50
        visible, heads = pull(http, from_date=LONG_AGO)
        assert heads[-1]["least_sync_time"] == frozen
        assert all(h["least_sync_time"] == frozen for h in heads)
        assert sum(e["system_id"] == "abc123-002" for e in visible) == sum(
            k[0] == "abc123-002" for k in sim.truth()
        )
        others = http.post("/v1/events/list", json={"systems": ["abc123-001", "def456-001"]})
        assert others.json()["least_sync_time"] == iso(clock.now() - timedelta(seconds=1))
        alone = http.post("/v1/events/list", json={"systems": ["abc123-002"]}).json()
        assert alone["least_sync_time"] == frozen
        assert sim.horizons()["abc123-002"] == went_offline - timedelta(seconds=1)

        # Back online: the buffered events appear with their old event_time,
        # all after the horizon that was reported.
        before = set(sim.truth())
        sim.set_offline("abc123-002", False)
        back = [v for k, v in sim.truth().items() if k not in before]
        assert len(back) > 50
        assert {e["system_id"] for e in back} == {"abc123-002"}
        assert all(
            frozen <= e["event_time"] < iso(clock.now() - timedelta(seconds=4)) for e in back
        )
        events, heads = pull(http, from_date=frozen)
        assert heads[-1]["least_sync_time"] == iso(clock.now() - timedelta(seconds=1))
        assert {(e["system_id"], e["event_time"], e["sequence_id"]) for e in back} <= {
            (e["system_id"], e["event_time"], e["sequence_id"]) for e in events
        }


def test_a_pass_never_reports_a_horizon_past_what_it_read(clock: SimClock) -> None:
    """A system coming back mid-pass must not move least_sync_time past its events."""
    with (
        IntServSimulator(seed=5, history=3000, clock=clock, offline=["def456-001"]) as sim,
        client(sim.base_url, sim.api_key) as http,
    ):
        frozen = iso(clock.now() - timedelta(seconds=1))
        clock.advance(30)
        sim.generate(100)
        first = http.post("/v1/events/list", json={"from_date": LONG_AGO}).json()
        assert first["least_sync_time"] == frozen
        sim.set_offline("def456-001", False)
        _, heads = pull(http, continuation_key=first["continuation_key"])
        assert all(h["least_sync_time"] == frozen for h in heads)
        fresh = http.post("/v1/events/list", json={}).json()
        assert fresh["least_sync_time"] == iso(clock.now() - timedelta(seconds=1))


def test_new_events_never_land_before_a_reported_horizon(clock: SimClock) -> None:
    with (
        IntServSimulator(seed=6, history=0, clock=clock) as sim,
        client(sim.base_url, sim.api_key) as http,
    ):
        seen: set[tuple[str, str, int]] = set()
        cursor = LONG_AGO
        for _ in range(20):
            sim.generate(50)
            events, heads = pull(http, from_date=cursor)
            seen |= {(e["system_id"], e["event_time"], e["sequence_id"]) for e in events}
            cursor = heads[-1]["least_sync_time"]
            clock.advance(0.4)
        assert seen == set(sim.truth())


def test_ties_larger_than_a_page(clock: SimClock) -> None:
    with (
        IntServSimulator(seed=8, history=300, clock=clock, tie_groups=1, tie_size=2500) as sim,
        client(sim.base_url, sim.api_key) as http,
    ):
        events, _heads = pull(http, from_date=LONG_AGO, limit=1000)
        assert len(events) == 2800 == len(sim.truth())
        keys = [(e["system_id"], e["event_time"], e["sequence_id"]) for e in events]
        assert len(set(keys)) == 2800
        (system, when), count = Counter(
            (e["system_id"], e["event_time"]) for e in events
        ).most_common(1)[0]
        assert count >= 2500
        tied = [
            e["sequence_id"] for e in events if (e["system_id"], e["event_time"]) == (system, when)
        ]
        assert tied == sorted(tied)


def test_malformed_records_are_served_stably(clock: SimClock) -> None:
    with (
        IntServSimulator(seed=9, history=2000, clock=clock, malformed_share=0.1) as sim,
        client(sim.base_url, sim.api_key) as http,
    ):
        bad = sim.malformed()
        assert 120 <= len(bad) <= 280
        assert len(bad) + len(sim.truth()) == 2000
        first, _ = pull(http, from_date=LONG_AGO)
        second, _ = pull(http, from_date=LONG_AGO)
        assert first == second
        assert len(first) == 2000
        assert sorted(map(orjson.dumps, first)) == sorted(
            map(orjson.dumps, [*bad, *sim.truth().values()])
        )
        assert any("sequence_id" not in r for r in bad)
        assert any("event_time" not in r for r in bad)
        assert any(isinstance(r.get("type"), str) for r in bad)
        assert any(isinstance(r.get("sequence_id"), str) for r in bad)


def test_authentication(sim: IntServSimulator) -> None:
    with httpx.Client(base_url=sim.base_url) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": sim.api_key}):
            r = http.post("/v1/events/list", json={}, headers=headers)
            assert r.status_code == 401
            assert r.json()["error"] == "unauthorized"
        ok = http.post(
            "/v1/events/list", json={}, headers={"Authorization": f"Bearer {sim.api_key}"}
        )
        assert ok.status_code == 200
        assert http.get("/v1/events/list").status_code == 405
        assert http.post("/v1/nothing").status_code == 404


def test_same_seed_same_data() -> None:
    a = IntServSimulator(seed=21, history=1500, clock=SimClock(START))
    b = IntServSimulator(seed=21, history=1500, clock=SimClock(START))
    c = IntServSimulator(seed=22, history=1500, clock=SimClock(START))
    assert a.truth() == b.truth()
    assert a.api_key == b.api_key
    assert a.truth() != c.truth()
    assert a.api_key != c.api_key
    a.generate(40)
    b.generate(40)
    assert a.truth() == b.truth()


def test_custom_systems_and_key() -> None:
    sim = IntServSimulator(
        seed=1, history=300, systems=("x-1", "y-2"), api_key="k", clock=SimClock()
    )
    assert {k[0] for k in sim.truth()} == {"x-1", "y-2"}
    assert sim.api_key == "k"
    with pytest.raises(ValueError, match="unknown system"):
        sim.set_offline("abc123-001", True)


# -- hardening knobs (issue 9) ---------------------------------------------------------


def test_poison_kinds_are_served_as_such() -> None:
    import json as stdjson

    from syncd.simulators.faults import POISON_KINDS

    with IntServSimulator(
        seed=2, history=300, history_days=1, malformed_share=0.3, malformed_kinds=POISON_KINDS
    ) as sim:
        body = httpx.post(
            f"{sim.base_url}/v1/events/list",
            json={"limit": 1000, "from_date": "2000-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {sim.api_key}"},
        ).content
    assert b"\\u0000" in body
    assert b"\\ud800" in body
    events = stdjson.loads(body)["events"]
    assert any(isinstance(e.get("sequence_id"), int) and e["sequence_id"] >= 2**63 for e in events)


@pytest.mark.parametrize("status", [403, 500])
def test_expired_keys_get_the_status_asked_for(status: int) -> None:
    clock = SimClock()
    with IntServSimulator(
        seed=2, history=50, history_days=1, clock=clock, continuation_ttl=10,
        expired_key_status=status,
    ) as sim:  # fmt: skip
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        url = f"{sim.base_url}/v1/events/list"
        first = httpx.post(url, json={"limit": 5}, headers=headers).json()
        clock.advance(11)
        for _ in range(2):  # every time it is sent
            again = httpx.post(
                url, json={"continuation_key": first["continuation_key"]}, headers=headers
            )
            assert again.status_code == status
            assert again.json()["error"] == "continuation_key_expired"


def test_current_least_sync_time_per_page_instead_of_the_pass_minimum() -> None:
    def horizons(current: bool) -> list[str]:
        clock = SimClock()
        with IntServSimulator(
            seed=2, history=50, history_days=1, clock=clock, offline=["abc123-002"],
            report_current_least_sync_time=current,
        ) as sim:  # fmt: skip
            headers = {"Authorization": f"Bearer {sim.api_key}"}
            url = f"{sim.base_url}/v1/events/list"
            first = httpx.post(url, json={"limit": 5}, headers=headers).json()
            clock.advance(60)
            sim.set_offline("abc123-002", False)
            second = httpx.post(
                url, json={"continuation_key": first["continuation_key"]}, headers=headers
            ).json()
            return [first["least_sync_time"], second["least_sync_time"]]

    minimum = horizons(current=False)
    current = horizons(current=True)
    assert minimum[1] == minimum[0]
    assert current[1] > current[0]
