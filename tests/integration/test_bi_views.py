"""The BI views against hand-computed answers, on PostgreSQL and SQLite.

A small fixed data set in two sites: ``sto`` (Europe/Stockholm, business
hours 07:00-18:00) and ``nyc`` (America/New_York, 22:00-06:00: a night shift,
so the hours wrap past midnight). Every expected row below was worked out by
hand from the UTC instants, the zones' rules and the business hours; none is
computed by the code under test. On PostgreSQL the queries run with a session
TimeZone far from both sites, so an answer that leaked it would differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from syncd.bi import LocalDay, local_days, sync_sources
from syncd.config import SourceConfig
from syncd.db import migrate
from syncd.db.engine import create_engine
from syncd.db.schema import zone_local_days
from syncd.db.store import Store
from syncd.records import EventRecord, RejectedRecord
from tests.conftest import empty_tables as empty

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STO = SourceConfig(
    name="sto",
    kind="doorflow",
    base_url="http://127.0.0.1:1",
    timezone="Europe/Stockholm",
    business_hours=(time(7), time(18)),
)
NYC = SourceConfig(
    name="nyc",
    kind="intserv",
    base_url="http://127.0.0.1:1",
    timezone="America/New_York",
    business_hours=(time(22), time(6)),
)
CODES = {
    "access_granted": (10, "Admitted (Card/fob)"),
    "access_denied": (21, "Rejected (Out of hours)"),
    "exit_request": (30, "Request exit button pressed"),
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ev(
    key: str,
    when: str,
    category: str = "access_granted",
    *,
    door: str | None = "D1",
    person: str | None = "P1",
    name: str | None = None,
    code: int | None = None,
    label: str | None = None,
    updated: str | None = None,
    door_name: str | None = None,
) -> EventRecord:
    default_code, default_label = CODES.get(category, (0, None))
    return EventRecord(
        event_key=key,
        vendor="doorflow",
        occurred_at=at(when),
        event_code=code if code is not None else default_code,
        category=category,
        label=label if label is not None else default_label,
        payload=orjson.dumps({"id": key}),
        door_id=door,
        door_name=door_name or (f"Door {door}" if door else None),
        person_id=person,
        person_name=name or (f"Name {person}" if person else None),
        source_updated_at=at(updated) if updated else at(when),
    )


def denials(person: str, *whens: str) -> list[EventRecord]:
    return [ev(f"{person}-d{i}", w, "access_denied", person=person) for i, w in enumerate(whens)]


STO_EVENTS = [
    # local-day boundaries in winter (UTC+1): 23:30 on the 14th, 00:30 on the 15th
    ev("b1", "2026-01-14 22:30:00"),
    ev("b2", "2026-01-14 23:30:00"),
    ev("b3", "2026-01-15 08:00:00", "exit_request", person=None),
    ev("b4", "2026-01-15 09:00:00", "access_denied", person=None),  # denial without a person
    ev("b5", "2026-01-15 10:00:00", "sync", door=None, person=None, code=100, label="sync"),
    ev("b6", "2026-01-15 11:00:00", "door_state", person=None, code=31, label="Door state normal"),
    # a door IntServ-style: a name, no id
    ev("b7", "2026-01-15 12:00:00", door=None, door_name="Main entrance", person="P2"),
    # business-hours edges (07:00 inclusive, 18:00 exclusive), local = UTC+1
    ev("h1", "2026-01-16 05:59:59", person="P3"),  # 06:59:59 outside
    ev("h2", "2026-01-16 06:00:00", person="P3"),  # 07:00:00 inside
    ev("h3", "2026-01-16 16:59:59", person="P3"),  # 17:59:59 inside
    ev("h4", "2026-01-16 17:00:00", person="P3"),  # 18:00:00 outside
    # spring forward 2026-03-29 01:00Z: 02:00-03:00 local does not exist
    ev("s1", "2026-03-29 00:59:59", person="P4"),  # 01:59:59 CET
    ev("s2", "2026-03-29 01:00:00", person="P4"),  # 03:00:00 CEST
    ev("s3", "2026-03-28 22:30:00", person="P4"),  # 23:30 on the 28th (CET)
    ev("s4", "2026-03-29 22:30:00", person="P4"),  # 00:30 on the 30th (CEST)
    # fall back 2026-10-25 01:00Z: 02:00-03:00 local happens twice
    ev("f1", "2026-10-25 00:30:00", person="P4"),  # 02:30 CEST
    ev("f2", "2026-10-25 01:30:00", person="P4"),  # 02:30 CET
    ev("f3", "2026-10-24 22:30:00", person="P4"),  # 00:30 on the 25th (CEST)
    ev("f4", "2026-10-25 22:30:00", person="P4"),  # 23:30 on the 25th (CET)
    # exactly 5 denials on local 2026-01-20 (a 6th is 00:30 on the 21st) ...
    *denials(
        "P5",
        "2026-01-20 08:00:00",
        "2026-01-20 09:00:00",
        "2026-01-20 10:00:00",
        "2026-01-20 11:00:00",
        "2026-01-20 12:00:00",
        "2026-01-20 23:30:00",
    ),
    # ... and 6 (the first is 00:30 local, still the 19th in UTC)
    *denials(
        "P6",
        "2026-01-19 23:30:00",
        "2026-01-20 08:00:00",
        "2026-01-20 09:00:00",
        "2026-01-20 10:00:00",
        "2026-01-20 11:00:00",
        "2026-01-20 12:00:00",
    ),
    # a name updated later: the earlier admit carries the newest name
    ev("n1", "2026-02-02 09:00:00", person="P7", name="Anna New", updated="2026-02-03 00:00:00"),
    ev("n2", "2026-02-02 10:00:00", person="P7", name="Anna Old", updated="2026-02-02 10:00:00"),
    # door states: D1 forced after normal; D2 older device_status stored after a tamper;
    # D3 a tie on occurred_at (the greater id wins); D4 has no state event
    ev("d1", "2026-01-10 10:00:00", "door_state", code=31, label="Door state normal", person=None),
    ev("d2", "2026-01-10 11:00:00", "door_state", code=32, label="Door state forced-open"),
    ev("d3", "2026-01-10 13:00:00", person="P1"),
    ev("d4", "2026-01-10 12:00:00", "tamper", door="D2", code=90, label="Tamper detected"),
    ev("d5", "2026-01-10 11:00:00", "device_status", door="D2", code=1, label="Channel started"),
    ev("d6", "2026-01-10 09:00:00", "door_state", door="D3", code=33, label="extended-open"),
    ev("d8", "2026-01-10 09:00:00", door="D4", person="P1"),
]

# stored by a later page than d6, so with a greater id
D7 = ev("d7", "2026-01-10 09:00:00", "door_state", door="D3", code=31, label="Door state normal")

NYC_EVENTS = [
    # business hours 22:00-06:00 (wrapping), local = UTC-5 in January
    ev("w1", "2026-01-15 10:59:59", person="Q1"),  # 05:59:59 inside
    ev("w2", "2026-01-15 11:00:00", person="Q1"),  # 06:00:00 outside
    ev("w3", "2026-01-16 02:59:59", person="Q1"),  # 21:59:59 on the 15th, outside
    ev("w4", "2026-01-16 03:00:00", person="Q1"),  # 22:00:00 on the 15th, inside
    ev("w5", "2026-01-16 04:30:00", person="Q1"),  # 23:30 on the 15th, inside
    ev("w6", "2026-01-16 05:30:00", person="Q1"),  # 00:30 on the 16th, inside
    # spring forward 2026-03-08 07:00Z: 02:00-03:00 local does not exist
    ev("s1", "2026-03-08 06:59:59", person="Q2"),  # 01:59:59 EST
    ev("s2", "2026-03-08 07:00:00", person="Q2"),  # 03:00:00 EDT
    ev("s3", "2026-03-08 17:00:00", person="Q2"),  # 13:00:00 EDT, outside
    # fall back 2026-11-01 06:00Z: 01:00-02:00 local happens twice
    ev("f1", "2026-11-01 05:30:00", person="Q2"),  # 01:30 EDT
    ev("f2", "2026-11-01 06:30:00", person="Q2"),  # 01:30 EST
    ev("f3", "2026-11-01 03:30:00", person="Q2"),  # 23:30 on 10-31 (EDT)
    ev("f4", "2026-11-02 04:30:00", person="Q2"),  # 23:30 on 11-01 (EST)
]


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def bi(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    """The data set, loaded once per database for the module (the tests only read it)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('bi')}/bi.db"
        migrate.upgrade(create_engine(url, poolclass=sa.pool.NullPool))
    engine = create_engine(url)
    empty(engine)
    load(engine)
    yield engine
    empty(engine)
    engine.dispose()


def load(engine: sa.Engine) -> None:
    store = Store(engine)
    store.write_page("sto", STO_EVENTS, [], {"page": 1}, NOW)
    store.write_page("sto", [D7], [], {"page": 2}, NOW)
    store.write_page(
        "nyc", NYC_EVENTS, [RejectedRecord(reason="no event_time", raw={"x": 1})], {"p": 1}, NOW
    )
    store.record_success("sto", NOW)
    store.record_failure("nyc", "HTTP 503 from the vendor", NOW)
    store.save_refresh_token("sto", "rt-secret", NOW)
    assert sync_sources(engine, [STO, NYC], NOW) == 2


_SQLITE_INSTANT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?$")


def norm(value: Any) -> Any:
    """One spelling for both databases: instants 'YYYY-MM-DD HH:MM:SS' UTC, days, times."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, str) and _SQLITE_INSTANT.match(value):
        return value[:19]
    return value


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET TIME ZONE 'Pacific/Kiritimati'")  # UTC+14
        return [tuple(norm(v) for v in row) for row in conn.execute(sa.text(sql), params)]


def test_door_activity_daily_counts_local_days(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT day, door_id, door_name, granted, denied, exit_requests, events "
        "FROM door_activity_daily WHERE source = 'sto' AND day BETWEEN '2026-01-14' AND "
        "'2026-01-15' ORDER BY day, door_id NULLS FIRST",
    )
    assert got == [
        ("2026-01-14", "D1", "Door D1", 1, 0, 0, 1),  # b1 (23:30 local)
        ("2026-01-15", None, "Main entrance", 1, 0, 0, 1),  # b7; b5 has no door
        ("2026-01-15", "D1", "Door D1", 1, 1, 1, 4),  # b2 (00:30), b3, b4, b6
    ]


def test_door_activity_daily_across_daylight_saving(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT source, day, events FROM door_activity_daily "
        "WHERE day IN ('2026-03-28', '2026-03-29', '2026-03-30', '2026-10-24', '2026-10-25',"
        " '2026-10-26', '2026-03-07', '2026-03-08', '2026-10-31', '2026-11-01', '2026-11-02')"
        " ORDER BY source, day",
    )
    assert got == [
        ("nyc", "2026-03-08", 3),  # 01:59:59 EST, 03:00:00 EDT, 13:00 EDT
        ("nyc", "2026-10-31", 1),  # 23:30 EDT
        ("nyc", "2026-11-01", 3),  # 01:30 EDT, 01:30 EST, 23:30 EST
        ("sto", "2026-03-28", 1),  # 23:30 CET
        ("sto", "2026-03-29", 2),  # 01:59:59 CET, 03:00:00 CEST
        ("sto", "2026-03-30", 1),  # 00:30 CEST
        ("sto", "2026-10-25", 4),  # 00:30, 02:30 CEST, 02:30 CET, 23:30 CET
    ]


def test_attendance_daily(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT source, day, person_id, person_name, first_admit_at, last_admit_at, admits "
        "FROM attendance_daily WHERE person_id IN ('P1', 'P4', 'P7', 'Q2') "
        "ORDER BY source, person_id, day",
    )
    assert got == [
        ("nyc", "2026-03-08", "Q2", "Name Q2", "2026-03-08 06:59:59", "2026-03-08 17:00:00", 3),
        ("nyc", "2026-10-31", "Q2", "Name Q2", "2026-11-01 03:30:00", "2026-11-01 03:30:00", 1),
        ("nyc", "2026-11-01", "Q2", "Name Q2", "2026-11-01 05:30:00", "2026-11-02 04:30:00", 3),
        ("sto", "2026-01-10", "P1", "Name P1", "2026-01-10 09:00:00", "2026-01-10 13:00:00", 2),
        ("sto", "2026-01-14", "P1", "Name P1", "2026-01-14 22:30:00", "2026-01-14 22:30:00", 1),
        ("sto", "2026-01-15", "P1", "Name P1", "2026-01-14 23:30:00", "2026-01-14 23:30:00", 1),
        ("sto", "2026-03-28", "P4", "Name P4", "2026-03-28 22:30:00", "2026-03-28 22:30:00", 1),
        ("sto", "2026-03-29", "P4", "Name P4", "2026-03-29 00:59:59", "2026-03-29 01:00:00", 2),
        ("sto", "2026-03-30", "P4", "Name P4", "2026-03-29 22:30:00", "2026-03-29 22:30:00", 1),
        ("sto", "2026-10-25", "P4", "Name P4", "2026-10-24 22:30:00", "2026-10-25 22:30:00", 4),
        ("sto", "2026-02-02", "P7", "Anna New", "2026-02-02 09:00:00", "2026-02-02 10:00:00", 2),
    ]


def test_attendance_daily_has_no_row_without_a_person_or_an_admit(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT count(*) FROM attendance_daily WHERE person_id IS NULL OR person_id IN ('P5','P6')",
    )
    assert got == [(0,)]


def test_denied_access(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT occurred_at, day, door_id, person_id, person_name, event_code, reason "
        "FROM denied_access WHERE source = 'sto' AND (person_id IS NULL OR person_id = 'P5') "
        "ORDER BY occurred_at",
    )
    reason = "Rejected (Out of hours)"
    assert got == [
        ("2026-01-15 09:00:00", "2026-01-15", "D1", None, None, 21, reason),
        *[
            (f"2026-01-20 {h}:00:00", "2026-01-20", "D1", "P5", "Name P5", 21, reason)
            for h in ("08", "09", "10", "11", "12")
        ],
        ("2026-01-20 23:30:00", "2026-01-21", "D1", "P5", "Name P5", 21, reason),
    ]


def test_repeated_denials_needs_six_on_one_local_day(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT source, day, person_id, person_name, denials, first_at, last_at "
        "FROM repeated_denials ORDER BY source, day, person_id",
    )
    assert got == [
        ("sto", "2026-01-20", "P6", "Name P6", 6, "2026-01-19 23:30:00", "2026-01-20 12:00:00"),
    ]


def test_after_hours_access(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT source, occurred_at, local_time, day, person_id, event_code, label "
        "FROM after_hours_access WHERE person_id IN ('P3', 'P4', 'Q1', 'Q2') "
        "ORDER BY source, occurred_at",
    )
    admit = (10, "Admitted (Card/fob)")
    assert got == [
        ("nyc", "2026-01-15 11:00:00", "06:00:00", "2026-01-15", "Q1", *admit),
        ("nyc", "2026-01-16 02:59:59", "21:59:59", "2026-01-15", "Q1", *admit),
        ("nyc", "2026-03-08 17:00:00", "13:00:00", "2026-03-08", "Q2", *admit),
        ("sto", "2026-01-16 05:59:59", "06:59:59", "2026-01-16", "P3", *admit),
        ("sto", "2026-01-16 17:00:00", "18:00:00", "2026-01-16", "P3", *admit),
        ("sto", "2026-03-28 22:30:00", "23:30:00", "2026-03-28", "P4", *admit),
        ("sto", "2026-03-29 00:59:59", "01:59:59", "2026-03-29", "P4", *admit),
        ("sto", "2026-03-29 01:00:00", "03:00:00", "2026-03-29", "P4", *admit),
        ("sto", "2026-03-29 22:30:00", "00:30:00", "2026-03-30", "P4", *admit),
        ("sto", "2026-10-24 22:30:00", "00:30:00", "2026-10-25", "P4", *admit),
        ("sto", "2026-10-25 00:30:00", "02:30:00", "2026-10-25", "P4", *admit),
        ("sto", "2026-10-25 01:30:00", "02:30:00", "2026-10-25", "P4", *admit),
        ("sto", "2026-10-25 22:30:00", "23:30:00", "2026-10-25", "P4", *admit),
    ]


def test_after_hours_follows_a_change_of_business_hours(bi: sa.Engine) -> None:
    sync_sources(bi, [replace(STO, business_hours=(time(6), time(21))), NYC], NOW)
    try:
        got = rows(
            bi, "SELECT occurred_at FROM after_hours_access WHERE person_id = 'P3' ORDER BY 1"
        )
        assert got == []  # 06:59:59 .. 18:00:00 are all inside 06:00-21:00
    finally:
        sync_sources(bi, [STO, NYC], NOW)


def test_door_state_latest(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT source, door_id, door_name, event_code, label, category, changed_at "
        "FROM door_state_latest ORDER BY source, door_id",
    )
    assert got == [
        ("sto", "D1", "Door D1", 31, "Door state normal", "door_state", "2026-01-15 11:00:00"),
        ("sto", "D2", "Door D2", 90, "Tamper detected", "tamper", "2026-01-10 12:00:00"),
        ("sto", "D3", "Door D3", 31, "Door state normal", "door_state", "2026-01-10 09:00:00"),
    ]


def test_sync_health(bi: sa.Engine) -> None:
    got = rows(
        bi,
        "SELECT source, kind, last_success_at, last_error, last_error_at, "
        "consecutive_failures, events, rejected, newest_event_at FROM sync_health ORDER BY 1",
    )
    noon = "2026-12-01 12:00:00"
    assert got == [
        ("nyc", "intserv", None, "HTTP 503 from the vendor", noon, 1, 13, 1, "2026-11-02 04:30:00"),
        ("sto", "doorflow", noon, None, None, 0, len(STO_EVENTS) + 1, 0, "2026-10-25 22:30:00"),
    ]


def test_a_changed_zone_rewrites_the_calendar(bi: sa.Engine) -> None:
    assert sync_sources(bi, [STO, NYC], NOW) == 0  # nothing changed: nothing rewritten
    assert sync_sources(bi, [replace(STO, timezone="UTC"), NYC], NOW) == 1
    try:
        got = rows(bi, "SELECT day FROM attendance_daily WHERE person_id = 'P1' ORDER BY day")
        assert got == [("2026-01-10",), ("2026-01-14",)]  # 22:30Z, 23:30Z: the 14th in UTC
        with bi.connect() as conn:
            zone = conn.execute(sa.text("SELECT timezone FROM sources WHERE source = 'sto'"))
            assert zone.scalar_one() == "UTC"
    finally:
        assert sync_sources(bi, [STO, NYC], NOW) == 1


def test_the_views_have_the_contract_columns(bi: sa.Engine) -> None:
    contract = {
        "door_activity_daily": "source day door_id door_name granted denied exit_requests events",
        "attendance_daily": "source day person_id person_name first_admit_at last_admit_at admits",
        "denied_access": "source occurred_at day door_id door_name person_id person_name "
        "credential event_code reason",
        "repeated_denials": "source day person_id person_name denials first_at last_at",
        "after_hours_access": "source occurred_at local_time day door_id door_name person_id "
        "person_name event_code label",
        "door_state_latest": "source door_id door_name event_code label category changed_at",
        "sync_health": "source kind last_success_at last_error last_error_at "
        "consecutive_failures events rejected newest_event_at",
    }
    inspector = sa.inspect(bi)
    assert set(contract) <= set(inspector.get_view_names())
    for view, columns in contract.items():
        assert [c["name"] for c in inspector.get_columns(view)][: len(columns.split())] == (
            columns.split()
        ), view


@pytest.mark.parametrize("zone", ["Europe/Stockholm", "Australia/Lord_Howe", "America/Havana"])
def test_the_calendar_written_by_sql_is_the_python_one(engine: sa.Engine, zone: str) -> None:
    site = replace(STO, name="cal", timezone=zone)
    assert sync_sources(engine, [site], NOW) == 1
    table = zone_local_days
    query = (
        sa.select(
            table.c.day,
            table.c.utc_date,
            table.c.valid_from,
            table.c.valid_until,
            table.c.utc_offset_seconds,
        )
        .where(table.c.timezone == zone)
        .order_by(table.c.valid_from)
    )
    with engine.connect() as conn:
        stored = [LocalDay(*row) for row in conn.execute(query)]
    assert stored == list(local_days(zone))


def test_concurrent_callers_write_each_source_once(engine: sa.Engine) -> None:
    """Replicas starting together: every caller succeeds, one calendar per source."""
    import threading

    # two callers: each calendar write takes seconds on a loaded machine, and
    # a waiting caller gives up after SQLite's busy_timeout (30 s)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    zones = [replace(STO, name="one"), replace(NYC, name="two")]

    def call() -> None:
        barrier.wait()
        try:
            sync_sources(engine, zones, NOW)
        except BaseException as exc:  # the test reports it below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    counted = rows(
        engine,
        "SELECT timezone, count(*) FROM zone_local_days GROUP BY timezone ORDER BY timezone",
    )
    assert counted == [
        (NYC.timezone, len(list(local_days(NYC.timezone)))),
        (STO.timezone, len(list(local_days(STO.timezone)))),
    ]
