"""The DoorFlow simulator speaks the protocol of the vendor pages (vendor-docs/).

GET /api/3/events in both flavors, GET /api/3/events/{id}, bearer / Basic /
OAuth authentication, late arrivals, name corrections, malformed records,
ties and signed webhooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from syncd.simulators import DoorFlowSimulator, Faults, SimClock
from syncd.simulators.data import DOORFLOW_CODES, DOORFLOW_DEFAULT_CODES, DOORFLOW_LISTABLE_CODES
from syncd.simulators.doorflow import Flavor
from tests.simulators.simhelpers import START, Receiver, client, parse_time

REF_FIELDS = {
    "id", "event_id", "event_code", "event_label", "door_controller_id", "door_controller_name",
    "channel_id", "channel_name", "person_id", "person_name", "credentials_number",
    "created_at", "updated_at",
}  # fmt: skip
GUIDE_FIELDS = {
    "id", "event_code", "person_id", "person_name", "channel_id", "channel_name",
    "credential_id", "occurred_at", "updated_at", "description", "additional_data",
}  # fmt: skip
LISTABLE = ",".join(map(str, sorted(DOORFLOW_LISTABLE_CODES)))
ALL_CODES = ",".join(map(str, DOORFLOW_CODES))
"""Every code: only for simulators told to list them all (``listable_codes``)."""


def order(event: dict[str, Any]) -> tuple[datetime, int]:
    return parse_time(event["created_at"]), event["id"]


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def pull_ascending(http: httpx.Client, n: int = 1000, **params: Any) -> tuple[list[Any], int]:
    """Every page, oldest first, as the sync engine reads; returns events and Total."""
    events: list[Any] = []
    page = 1
    while True:
        r = http.get("/api/3/events", params={"sort": "ASC", "n": n, "page": page, **params})
        assert r.status_code == 200, r.text
        total = int(r.headers["Total"])
        batch = r.json()
        events += batch
        if len(batch) < n:
            return events, total
        page += 1


@pytest.fixture
def sim(clock: SimClock) -> Iterator[DoorFlowSimulator]:
    with DoorFlowSimulator(seed=7, history=3000, clock=clock) as s:
        yield s
        assert s.stats["internal_errors"] == 0


@pytest.fixture
def http(sim: DoorFlowSimulator) -> Iterator[httpx.Client]:
    with client(sim.base_url, sim.token) as c:
        yield c


# -- reference flavor -----------------------------------------------------------


def test_reference_default_page_is_newest_person_events(
    sim: DoorFlowSimulator, http: httpx.Client
) -> None:
    r = http.get("/api/3/events")
    assert r.status_code == 200
    assert r.headers["Per-Page"] == "50"
    events = r.json()
    assert isinstance(events, list)
    assert len(events) == 50
    assert all(set(e) == REF_FIELDS for e in events)
    assert all(e["event_code"] in DOORFLOW_DEFAULT_CODES for e in events)
    assert [order(e) for e in events] == sorted((order(e) for e in events), reverse=True)
    truth = sim.truth()
    person_events = [e for e in truth.values() if e["event_code"] in DOORFLOW_DEFAULT_CODES]
    assert int(r.headers["Total"]) == len(person_events) < len(truth)
    newest = sorted(person_events, key=order, reverse=True)[:50]
    assert [e["id"] for e in events] == [e["id"] for e in newest]
    assert events == newest  # exactly the current version


def test_reference_ascending_pages_cover_everything_in_order(
    sim: DoorFlowSimulator, http: httpx.Client
) -> None:
    events, total = pull_ascending(http, n=700, event_codes=LISTABLE, since="2000-01-01")
    truth = sim.truth(listable=True)
    assert total == len(truth) == len(events)
    assert events == sorted(truth.values(), key=order)
    assert {e["event_code"] for e in events} == DOORFLOW_LISTABLE_CODES & set(DOORFLOW_CODES)


def test_reference_since_is_inclusive_on_created_at(
    sim: DoorFlowSimulator, http: httpx.Client
) -> None:
    ordered = sorted(sim.truth(listable=True).values(), key=order)
    pivot = ordered[len(ordered) // 2]
    since = parse_time(pivot["created_at"])
    expected = [e for e in ordered if parse_time(e["created_at"]) >= since]
    for text in (pivot["created_at"], iso(since)):  # as served, and as UTC "Z"
        events, total = pull_ascending(http, event_codes=LISTABLE, since=text)
        assert total == len(expected)
        assert events == expected
        assert events[0]["created_at"] == pivot["created_at"] or order(events[0]) <= order(pivot)
    just_after = iso(since + timedelta(milliseconds=1))
    events, _ = pull_ascending(http, event_codes=LISTABLE, since=just_after)
    assert pivot["id"] not in {e["id"] for e in events}


def test_reference_sort_page_and_n(sim: DoorFlowSimulator, http: httpx.Client) -> None:
    params = {"event_codes": LISTABLE, "n": 100}
    total = len(sim.truth(listable=True))
    desc2 = http.get("/api/3/events", params={**params, "page": 2}).json()
    explicit = http.get("/api/3/events", params={**params, "page": 2, "sort": "desc"}).json()
    asc_last = http.get(
        "/api/3/events", params={**params, "sort": "ASC", "page": math.ceil(total / 100)}
    ).json()
    assert desc2 == explicit
    full = sorted(sim.truth(listable=True).values(), key=order, reverse=True)
    assert desc2 == full[100:200]
    assert asc_last == sorted(full[: total % 100 or 100], key=order)
    beyond = http.get("/api/3/events", params={**params, "page": 1000})
    assert beyond.json() == []
    assert beyond.headers["Total"] == str(total)
    big = http.get("/api/3/events", params={"event_codes": LISTABLE, "n": 5000})
    assert big.headers["Per-Page"] == "1000"
    assert len(big.json()) == 1000
    assert len(http.get("/api/3/events", params={"n": 7}).json()) == 7


def test_reference_filters(sim: DoorFlowSimulator, http: httpx.Client) -> None:
    truth = sim.truth(listable=True).values()
    events, total = pull_ascending(http, event_codes="30,90,105")
    assert {e["event_code"] for e in events} == {30, 90, 105}
    assert total == len(events) == sum(e["event_code"] in (30, 90, 105) for e in truth)
    door = next(e["channel_id"] for e in truth if e["channel_id"])
    events, _ = pull_ascending(http, event_codes=LISTABLE, channels=str(door))
    assert events
    assert all(e["door_controller_id"] == door for e in events)
    assert len(events) == sum(e["channel_id"] == door for e in truth)


def test_reference_accepts_the_guide_parameter_names(
    sim: DoorFlowSimulator, http: httpx.Client
) -> None:
    since = iso(START - timedelta(days=3))
    reference = {"since": since, "n": 300, "event_codes": "10,11,30"}
    guide = {"since_utc": since, "per_page": 300, "event_code": ["10", "11", "30"]}
    expected = http.get("/api/3/events", params={**reference, "sort": "ASC"})
    assert expected.headers["Per-Page"] == "300"
    for params in (guide, {**reference, **guide}):
        r = http.get("/api/3/events", params={**params, "sort": "ASC"})
        assert r.headers["Total"] == expected.headers["Total"]
        assert r.headers["Per-Page"] == "300"
        assert r.content == expected.content
    # The reference API has no upper bound: until_utc is not honoured.
    r = http.get("/api/3/events", params={**reference, "until_utc": since})
    assert r.headers["Total"] == expected.headers["Total"]


def test_reference_bad_parameters_are_400(http: httpx.Client) -> None:
    for params in ({"since": "last tuesday"}, {"n": "many"}, {"sort": "UP"}, {"event_codes": "x"}):
        r = http.get("/api/3/events", params=params)
        assert r.status_code == 400, params
        assert r.json()["error"] == "invalid_request"


UNLISTABLE = "The following event codes are not valid for this method: "


@pytest.mark.parametrize("flavor", ["reference", "guide"])
def test_codes_outside_the_listable_set_are_doorflows_400(
    sim: DoorFlowSimulator, http: httpx.Client, flavor: Flavor
) -> None:
    sim.flavor = flavor
    served = sim.stats.get("pages", 0)
    remote = ", ".join(map(str, range(50, 64)))
    # The guide reads only its own repeated event_code; the reference both families.
    cases: list[tuple[dict[str, Any], str]] = [
        ({"event_code": [str(c) for c in DOORFLOW_CODES]}, remote),
        ({"event_code": ["10", "0"]}, "0"),
    ]
    if flavor == "reference":
        cases += [
            ({"event_codes": ALL_CODES}, remote),
            ({"event_codes": "10,51,50", "event_code": ["10", "999"]}, "50, 51, 999"),
        ]
    for params, named in cases:
        r = http.get("/api/3/events", params=params)
        assert r.status_code == 400, params
        assert r.json() == {"error": "bad_request", "error_description": UNLISTABLE + named}
    assert sim.stats.get("pages", 0) == served  # nothing was listed
    listable = {"event_codes": LISTABLE, "event_code": LISTABLE.split(",")}
    assert http.get("/api/3/events", params=listable).status_code == 200
    # Remote-control events exist all the same: one by one, and in the ground truth.
    remote_events = [e for e in sim.truth().values() if 50 <= e["event_code"] <= 63]
    assert remote_events
    assert not set(sim.truth(listable=True)) & {e["id"] for e in remote_events}
    one = http.get(f"/api/3/events/{remote_events[0]['id']}")
    assert one.status_code == 200
    assert one.json()["id"] == remote_events[0]["id"]


def test_the_listable_set_can_be_shrunk(clock: SimClock) -> None:
    shrunk = DOORFLOW_LISTABLE_CODES - {90, 91}
    with (
        DoorFlowSimulator(seed=2, history=400, clock=clock, listable_codes=shrunk) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        r = http.get("/api/3/events", params={"event_codes": LISTABLE})
        assert r.status_code == 400
        assert r.json()["error_description"] == UNLISTABLE + "90, 91"
        fewer = ",".join(map(str, sorted(shrunk)))
        events, total = pull_ascending(http, event_codes=fewer, since="2000-01-01")
        assert total == len(events) == len(sim.truth(listable=True))
        assert {e["event_code"] for e in events} <= shrunk
        sim.listable_codes = shrunk - {1}  # while serving
        r = http.get("/api/3/events", params={"event_codes": fewer})
        assert r.json()["error_description"] == UNLISTABLE + "1"
        sim.listable_codes = DOORFLOW_CODES  # a vendor that lists everything
        assert http.get("/api/3/events", params={"event_codes": ALL_CODES}).status_code == 200


def test_reference_times_carry_offsets_for_some_controllers(
    sim: DoorFlowSimulator, http: httpx.Client
) -> None:
    truth = sim.truth()
    offsets = [e for e in truth.values() if e["created_at"].endswith("+01:00")]
    assert 0.1 * len(truth) < len(offsets) < 0.6 * len(truth)
    assert all(e["created_at"].endswith("Z") for e in truth.values() if e not in offsets)
    sim.flavor = "guide"
    for event in offsets[:5]:
        guide = http.get(f"/api/3/events/{event['id']}").json()
        assert guide["occurred_at"].endswith("Z")
        assert parse_time(guide["occurred_at"]) == parse_time(event["created_at"])


def test_ties_page_deterministically_by_id(clock: SimClock) -> None:
    with (
        DoorFlowSimulator(
            seed=3,
            history=500,
            clock=clock,
            tie_groups=2,
            tie_size=1200,
            listable_codes=DOORFLOW_CODES,
        ) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        events, total = pull_ascending(http, event_codes=ALL_CODES, since="2000-01-01")
        assert total == len(events) == 500 + 2400
        assert len({e["id"] for e in events}) == len(events)
        stamps = Counter(parse_time(e["created_at"]) for e in events)
        assert sorted(stamps.values())[-2:] == [1200, 1200]
        for stamp in (s for s, count in stamps.items() if count == 1200):
            ids = [e["id"] for e in events if parse_time(e["created_at"]) == stamp]
            assert ids == sorted(ids)
        again, _ = pull_ascending(http, event_codes=ALL_CODES, since="2000-01-01")
        assert again == events


# -- guide flavor -----------------------------------------------------------------


def test_guide_shape_newest_first_whatever_the_sort(
    sim: DoorFlowSimulator, http: httpx.Client
) -> None:
    sim.flavor = "guide"
    body = http.get("/api/3/events", params={"sort": "ASC"}).json()
    assert set(body) == {"events", "pagination"}
    events, pagination = body["events"], body["pagination"]
    assert all(set(e) == GUIDE_FIELDS for e in events)
    person_events = [e for e in sim.truth().values() if e["event_code"] in DOORFLOW_DEFAULT_CODES]
    assert pagination == {
        "page": 1,
        "per_page": 50,
        "total_pages": math.ceil(len(person_events) / 50),
        "total_count": len(person_events),
    }
    newest = sorted(person_events, key=order, reverse=True)[:50]
    assert [e["id"] for e in events] == [e["id"] for e in newest]
    first = events[0]
    assert first["occurred_at"].endswith("Z")
    assert parse_time(first["occurred_at"]) == parse_time(newest[0]["created_at"])
    assert first["person_name"] == newest[0]["person_name"]
    assert first["channel_name"] == newest[0]["channel_name"]
    card = next(e for e in events if e["additional_data"].get("credential_type") == "Card")
    assert card["additional_data"]["card_number"]
    assert card["description"]


def test_guide_parameters(sim: DoorFlowSimulator, http: httpx.Client) -> None:
    sim.flavor = "guide"
    truth = sorted(sim.truth().values(), key=order, reverse=True)
    since, until = START - timedelta(days=4), START - timedelta(days=2)
    window = [
        e
        for e in truth
        if since <= parse_time(e["created_at"]) < until and e["event_code"] in (10, 20, 90)
    ]
    params = {
        "since_utc": iso(since),
        "until_utc": iso(until),
        "event_code": ["10", "20", "90"],
        "per_page": 40,
    }
    got: list[Any] = []
    for page in range(1, 100):
        body = http.get("/api/3/events", params={**params, "page": page}).json()
        got += body["events"]
        assert body["pagination"]["total_count"] == len(window)
        assert body["pagination"]["total_pages"] == math.ceil(len(window) / 40)
        if page >= body["pagination"]["total_pages"]:
            break
    assert [e["id"] for e in got] == [e["id"] for e in window]
    # until_utc is exclusive, since_utc inclusive
    edge = window[0]["created_at"]
    r = http.get("/api/3/events", params={**params, "until_utc": edge, "skip_pagination": "true"})
    assert edge not in {e["occurred_at"] for e in r.json()["events"]}
    r = http.get("/api/3/events", params={**params, "since_utc": edge, "skip_pagination": "true"})
    assert window[0]["id"] in {e["id"] for e in r.json()["events"]}
    # skip_pagination: everything in one page
    body = http.get("/api/3/events", params={**params, "skip_pagination": "true"}).json()
    assert [e["id"] for e in body["events"]] == [e["id"] for e in window]
    assert body["pagination"]["total_pages"] == 1
    # per_page is capped at 500
    body = http.get("/api/3/events", params={"per_page": 2000}).json()
    assert body["pagination"]["per_page"] == 500
    assert len(body["events"]) == 500
    # person_id and (repeated) channel_id
    person = next(e["person_id"] for e in truth if e["person_id"] and e["event_code"] == 10)
    body = http.get("/api/3/events", params={"person_id": person, "per_page": 500}).json()
    assert body["events"]
    assert {e["person_id"] for e in body["events"]} == {person}
    doors = sorted({e["channel_id"] for e in truth if e["channel_id"]})[:2]
    body = http.get("/api/3/events", params={"channel_id": doors, "per_page": 500}).json()
    assert {e["channel_id"] for e in body["events"]} == set(doors)


def test_guide_ignores_reference_only_names(sim: DoorFlowSimulator, http: httpx.Client) -> None:
    sim.flavor = "guide"
    plain = http.get("/api/3/events").json()
    odd = http.get(
        "/api/3/events", params={"since": iso(START), "n": 3, "event_codes": "100", "sort": "ASC"}
    ).json()
    assert odd == plain


def test_flavor_switches_at_run_time(sim: DoorFlowSimulator, http: httpx.Client) -> None:
    assert isinstance(http.get("/api/3/events").json(), list)
    sim.flavor = "guide"
    assert "pagination" in http.get("/api/3/events").json()
    sim.flavor = "reference"
    assert isinstance(http.get("/api/3/events").json(), list)
    with pytest.raises(ValueError, match="flavor"):
        sim.flavor = "other"  # type: ignore[assignment]


# -- one event, acknowledgements ----------------------------------------------------


def test_single_event_and_not_found(sim: DoorFlowSimulator, http: httpx.Client) -> None:
    truth = sim.truth()
    some = next(iter(truth.values()))
    assert http.get(f"/api/3/events/{some['id']}").json() == some
    sim.flavor = "guide"
    guide = http.get(f"/api/3/events/{some['id']}").json()
    assert set(guide) == GUIDE_FIELDS
    assert guide["id"] == some["id"]
    for missing in ("1", "99999999", "abc"):
        r = http.get(f"/api/3/events/{missing}")
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"
        assert r.json()["error_description"]
    r = http.get(f"/api/3/events/{some['id']}", params={"ack_token": "t1", "callback": "cb"})
    assert r.status_code == 200
    assert sim.acks == [(some["id"], "t1", "cb")]


# -- authentication ---------------------------------------------------------------


def test_authentication(sim: DoorFlowSimulator) -> None:
    unauthorized = {"error": "unauthorized", "error_description": "The access token is invalid"}
    basic_ok = base64.b64encode(f"{sim.api_key}:X".encode()).decode()
    basic_bad = base64.b64encode(b"nope:X").decode()
    with httpx.Client(base_url=sim.base_url) as http:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {basic_bad}"},
            {"Authorization": f"Token {sim.token}"},
        ):
            for path in ("/api/3/events", "/api/3/events/6455001"):
                r = http.get(path, headers=headers)
                assert r.status_code == 401, headers
                assert r.json() == unauthorized
        assert http.get("/api/3/events", headers={"Authorization": f"Basic {basic_ok}"}).is_success
        assert http.get(
            "/api/3/events", headers={"Authorization": f"Bearer {sim.token}"}
        ).is_success
    assert sim.stats["unauthorized"] == 8


def test_oauth_refresh_rotates_and_access_tokens_expire(clock: SimClock) -> None:
    faults = Faults(rate_limit=1.0)  # faults never touch /oauth/token
    with (
        DoorFlowSimulator(seed=2, history=50, clock=clock, token_expiry=60, faults=faults) as sim,
        httpx.Client(base_url=sim.base_url) as http,
    ):
        oauth = sim.oauth
        form = {
            "grant_type": "refresh_token",
            "refresh_token": oauth.refresh_token,
            "client_id": oauth.client_id,
            "client_secret": oauth.client_secret,
        }
        r = http.post("/oauth/token", data=form)
        assert r.status_code == 200, r.text
        grant = r.json()
        assert grant["token_type"] == "Bearer"
        assert grant["expires_in"] == 60
        assert grant["refresh_token"] != oauth.refresh_token
        assert {"access_token", "token_type", "expires_in", "refresh_token"} <= set(grant)

        r = http.post("/oauth/token", data=form)  # the old refresh token is spent
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_grant"

        sim.faults = Faults()
        bearer = {"Authorization": f"Bearer {grant['access_token']}"}
        assert http.get("/api/3/events", headers=bearer).status_code == 200
        clock.advance(59)
        assert http.get("/api/3/events", headers=bearer).status_code == 200
        clock.advance(2)
        r = http.get("/api/3/events", headers=bearer)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        static = {"Authorization": f"Bearer {sim.token}"}
        assert http.get("/api/3/events", headers=static).status_code == 200

        form["refresh_token"] = grant["refresh_token"]
        second = http.post("/oauth/token", data=form).json()
        bearer = {"Authorization": f"Bearer {second['access_token']}"}
        assert http.get("/api/3/events", headers=bearer).status_code == 200

        r = http.post("/oauth/token", data={**form, "client_secret": "wrong"})
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_client"
        r = http.post("/oauth/token", data={**form, "grant_type": "client_credentials"})
        assert r.status_code == 400
        assert r.json()["error"] == "unsupported_grant_type"
        assert sim.stats["token_refreshes"] == 2


# -- data over time -----------------------------------------------------------------


def test_names_are_filled_in_later_and_updated_at_moves(clock: SimClock) -> None:
    with (
        DoorFlowSimulator(
            seed=4,
            history=0,
            clock=clock,
            name_update_share=1.0,
            name_update_delay=300,
            listable_codes=DOORFLOW_CODES,
        ) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        sim.generate(300)
        params = {"event_codes": ALL_CODES, "since": "2000-01-01", "n": 1000, "sort": "ASC"}
        before = {e["id"]: e for e in http.get("/api/3/events", params=params).json()}
        people = [e for e in before.values() if e["person_id"]]
        assert people
        assert any(e["person_name"] is None for e in people)
        assert any(e["person_name"] is not None for e in people)
        clock.advance(299)
        assert {e["id"]: e for e in http.get("/api/3/events", params=params).json()} == before
        clock.advance(2)
        after = {e["id"]: e for e in http.get("/api/3/events", params=params).json()}
        assert after == sim.truth()
        for old in people:
            new = after[old["id"]]
            assert new["person_name"]
            assert new["person_name"] != old["person_name"]
            moved = parse_time(new["updated_at"]) - parse_time(old["updated_at"])
            assert moved == timedelta(seconds=300)
            assert new["created_at"] == old["created_at"]
        names = {e["person_id"]: e["person_name"] for e in after.values() if e["person_id"]}
        assert all(
            names[e["person_id"]] == e["person_name"] for e in after.values() if e["person_id"]
        )


def test_generate_adds_late_events_with_old_created_at(clock: SimClock) -> None:
    sim = DoorFlowSimulator(seed=5, history=200, clock=clock, late_share=0.5, late_delay=3600)
    old_max = max(sim.truth())
    clock.advance(10)
    added = sim.generate(200)
    truth = sim.truth()
    new = [e for i, e in truth.items() if i > old_max]
    assert len(new) == added == len(truth) - 200
    now = clock.now()
    late = [e for e in new if parse_time(e["created_at"]) <= now - timedelta(seconds=3600)]
    on_time = [e for e in new if parse_time(e["created_at"]) >= now - timedelta(seconds=1)]
    assert len(on_time) == 200
    assert 60 <= len(late) <= 140
    assert len(late) + len(on_time) == added
    assert all(parse_time(e["updated_at"]) == now for e in late)


def test_history_late_arrivals_show_up_as_the_clock_moves(clock: SimClock) -> None:
    with (
        DoorFlowSimulator(
            seed=6, history=3000, history_days=1, clock=clock, late_share=0.3, late_delay=1800
        ) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        since = iso(START - timedelta(hours=6))
        _before, total_before = pull_ascending(http, event_codes=LISTABLE, since=since)
        old_max = max(sim.truth())
        clock.advance(2400)
        after, total_after = pull_ascending(http, event_codes=LISTABLE, since=since)
        arrived = [e for e in after if e["id"] > old_max]
        assert arrived
        assert total_after == total_before + len(arrived)
        cutoff = clock.now() - timedelta(seconds=1800)
        assert all(parse_time(e["created_at"]) <= cutoff for e in arrived)
        assert all(parse_time(e["updated_at"]) > parse_time(e["created_at"]) for e in arrived)


def test_malformed_records_are_stable_and_counted(clock: SimClock) -> None:
    with (
        DoorFlowSimulator(
            seed=8, history=2000, clock=clock, malformed_share=0.1, listable_codes=DOORFLOW_CODES
        ) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        bad = sim.malformed()
        truth = sim.truth()
        assert 120 <= len(bad) <= 280
        assert len(truth) + len(bad) == 2000

        def broken(kind: str, r: dict[str, Any]) -> bool:
            if kind == "missing_id":
                return "id" not in r
            if kind == "missing_time":
                return "created_at" not in r
            if kind == "bad_time":
                try:
                    parse_time(r["created_at"])
                except (ValueError, KeyError):
                    return "created_at" in r
                return False
            if kind == "bad_code":
                return isinstance(r.get("event_code"), str)
            return isinstance(r.get("id"), str) and isinstance(r.get("event_code"), list)

        kinds = ("missing_id", "missing_time", "bad_time", "bad_code", "wrong_types")
        assert all(any(broken(k, r) for r in bad) for k in kinds)
        params = {"event_codes": ALL_CODES, "since": "2000-01-01", "n": 1000, "sort": "ASC"}
        first = http.get("/api/3/events", params=params)
        assert int(first.headers["Total"]) == 2000
        served = [*first.json(), *http.get("/api/3/events", params={**params, "page": 2}).json()]
        assert len(served) == 2000
        assert sorted(map(orjson.dumps, served)) == sorted(
            map(orjson.dumps, [*bad, *truth.values()])
        )
        assert http.get("/api/3/events", params=params).content == first.content
        sim.flavor = "guide"
        assert any("occurred_at" not in r for r in sim.malformed())


def test_same_seed_same_data(clock: SimClock) -> None:
    a = DoorFlowSimulator(seed=11, history=1000, clock=SimClock(START))
    b = DoorFlowSimulator(seed=11, history=1000, clock=SimClock(START))
    c = DoorFlowSimulator(seed=12, history=1000, clock=SimClock(START))
    assert a.truth() == b.truth()
    assert (a.token, a.api_key, a.oauth) == (b.token, b.api_key, b.oauth)
    assert a.truth() != c.truth()
    assert a.token != c.token
    a.generate(50)
    b.generate(50)
    assert a.truth() == b.truth()


def test_traffic_follows_business_hours_with_the_full_code_mix() -> None:
    sim = DoorFlowSimulator(seed=1, history=20_000, clock=SimClock(START), malformed_share=0)
    times = [parse_time(e["created_at"]).astimezone(UTC) for e in sim.truth().values()]
    weekday_office = sum(t.weekday() < 5 and 7 <= t.hour < 19 for t in times)
    weekend = sum(t.weekday() >= 5 for t in times)
    night = sum(t.hour < 5 for t in times)
    assert weekday_office > 0.75 * len(times)
    assert 0 < weekend < 0.1 * len(times)
    assert 0 < night < 0.05 * len(times)
    assert {e["event_code"] for e in sim.truth().values()} == set(DOORFLOW_CODES)
    assert min(times) >= START - timedelta(days=30)


# -- webhooks -----------------------------------------------------------------------


def test_webhooks_are_signed_and_resent_until_acknowledged(
    clock: SimClock, receiver: Receiver
) -> None:
    with (
        DoorFlowSimulator(
            seed=9,
            history=100,
            clock=clock,
            name_update_share=0,
            webhook_url=receiver.url,
            webhook_secret="s3cret",
        ) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        assert sim.deliver_webhooks() == 0  # history is not announced
        sim.generate(3)
        assert sim.deliver_webhooks() == 3
        headers, body = receiver.posts[0]
        signed = f"{headers['Timestamp']}.".encode() + body
        expected = hmac.new(b"s3cret", signed, hashlib.sha256).hexdigest()
        assert headers["Signature"] == expected
        assert abs(int(headers["Timestamp"]) - time.time()) < 60
        notes = orjson.loads(body)
        assert [n["action"] for n in notes] == ["CREATE"] * 3
        assert all(
            set(n)
            == {"action", "resource", "resource_type", "resource_id", "account_id", "ack_token"}
            for n in notes
        )
        assert all(
            n["resource_type"] == "Event" and n["account_id"] == sim.account_id for n in notes
        )
        first = notes[0]
        assert first["resource"] == f"{sim.base_url}/api/3/events/{first['resource_id']}"
        r = http.get(first["resource"], params={"ack_token": first["ack_token"], "callback": "c1"})
        assert r.json() == sim.truth()[first["resource_id"]]
        assert sim.acks == [(first["resource_id"], first["ack_token"], "c1")]

        assert sim.deliver_webhooks() == 2
        resent = orjson.loads(receiver.posts[1][1])
        assert [n["ack_token"] for n in resent] == [n["ack_token"] for n in notes[1:]]
        for note in resent:
            http.get(
                f"/api/3/events/{note['resource_id']}", params={"ack_token": note["ack_token"]}
            )
        assert sim.deliver_webhooks() == 0
        assert len(receiver.posts) == 2
        assert sim.pending_webhooks() == []


def test_webhooks_announce_name_updates(clock: SimClock, receiver: Receiver) -> None:
    sim = DoorFlowSimulator(
        seed=10,
        history=0,
        clock=clock,
        name_update_share=1.0,
        name_update_delay=60,
        webhook_url=receiver.url,
        webhook_secret="k",
    )
    with sim:
        sim.generate(20)
        creates = sim.deliver_webhooks()
        clock.advance(61)
        pending = sim.pending_webhooks()
        updates = [n for n in pending if n["action"] == "UPDATE"]
        people = [e for e in sim.truth().values() if e["person_id"]]
        assert creates == 20
        assert len(updates) == len(people) > 0


def test_webhooks_are_delivered_in_the_background(receiver: Receiver) -> None:
    with DoorFlowSimulator(
        seed=1, history=0, webhook_url=receiver.url, webhook_secret="k", webhook_interval=0.2
    ) as sim:
        sim.generate(2)
        deadline = time.monotonic() + 5
        while len(receiver.posts) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(receiver.posts) >= 2  # announced, then re-sent (not acknowledged)
        assert receiver.posts[0][1] == receiver.posts[1][1]


def test_rate_generates_events_in_real_time() -> None:
    with DoorFlowSimulator(seed=1, history=0, rate=400) as sim:
        time.sleep(0.6)
        count = len(sim.truth())
    assert 40 <= count <= 600
