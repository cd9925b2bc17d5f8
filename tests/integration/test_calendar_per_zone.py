"""The BI calendar is per time zone (issue 20): it does not grow with sources, and
migration 0008 converts a database that holds the old per-source calendar."""

from __future__ import annotations

import time as clock
from collections.abc import Iterator
from datetime import UTC, datetime, time

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from syncd.bi import local_days, sync_sources, zone_digest
from syncd.config import SourceConfig
from syncd.db import migrate
from syncd.db.schema import UTCDateTime
from syncd.records import EventRecord

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
ZONES = ["UTC", "Europe/Stockholm", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]
SPAN = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def site(name: str, zone: str) -> SourceConfig:
    return SourceConfig(name=name, kind="doorflow", base_url="http://127.0.0.1:1", timezone=zone)


def scalar(engine: sa.Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


def test_a_thousand_sources_store_one_calendar_per_zone(engine: sa.Engine) -> None:
    few = [site(f"s{i}", ZONES[i % len(ZONES)]) for i in range(10)]
    assert sync_sources(engine, few, NOW) == 10
    rows = scalar(engine, "SELECT count(*) FROM zone_local_days")
    assert rows == sum(len(list(local_days(zone))) for zone in ZONES)
    before = _bi_bytes(engine)
    many = [site(f"s{i}", ZONES[i % len(ZONES)]) for i in range(1_010)]
    started = clock.monotonic()
    assert sync_sources(engine, many, NOW) == 1_000  # the new sources; no calendar rewritten
    took = clock.monotonic() - started
    assert scalar(engine, "SELECT count(*) FROM zone_local_days") == rows
    assert scalar(engine, "SELECT count(*) FROM sources") == 1_010
    assert took < 20, f"1,000 more sources took {took:.1f}s"  # seconds at most, loaded machine
    if before is not None:
        per_source = ((_bi_bytes(engine) or 0) - before) / 1_000
        assert per_source < 4_096, f"{per_source:.0f} bytes of BI tables per source"


def _bi_bytes(engine: sa.Engine) -> int | None:
    """Bytes of the BI configuration tables with their indexes (PostgreSQL)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT sum(pg_total_relation_size(t)) FROM unnest(ARRAY["
                    "'sources', 'zone_local_days', 'time_zones']::regclass[]) AS t"
                )
            ).scalar_one()
        )


def _previous_revision() -> str:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    down = script.get_revision("0008").down_revision
    assert isinstance(down, str)
    return down


@pytest.fixture
def before_0008(engine: sa.Engine) -> Iterator[sa.Engine]:
    """The database one revision before 0008; back at head after the test."""
    migrate.downgrade(engine, _previous_revision())
    try:
        yield engine
    finally:
        migrate.upgrade(engine)


def test_0008_converts_the_per_source_calendar_and_back(before_0008: sa.Engine) -> None:
    engine = before_0008
    old = {"a": "Europe/Stockholm", "b": "Europe/Stockholm", "c": "UTC"}
    with engine.begin() as conn:
        for name, zone in old.items():
            conn.execute(
                sa.text(
                    "INSERT INTO sources (source, kind, timezone, business_hours_start, "
                    "business_hours_end, calendar_digest, updated_at) "
                    "VALUES (:s, 'doorflow', :z, :start, :end, :d, :now)"
                ).bindparams(
                    sa.bindparam("start", type_=sa.Time()),
                    sa.bindparam("end", type_=sa.Time()),
                    sa.bindparam("now", type_=UTCDateTime()),
                ),
                {"s": name, "z": zone, "start": time(6), "end": time(21), "now": NOW,
                 "d": zone_digest(zone)},
            )  # fmt: skip
            conn.execute(
                sa.text(
                    "INSERT INTO source_local_days (source, day, utc_date, valid_from, "
                    "valid_until, utc_offset_seconds) VALUES (:s, :day, :utc_date, "
                    ":valid_from, :valid_until, :offset)"
                ).bindparams(
                    sa.bindparam("valid_from", type_=UTCDateTime()),
                    sa.bindparam("valid_until", type_=UTCDateTime()),
                ),
                [
                    {"s": name, "day": d.day, "utc_date": d.utc_date,
                     "offset": d.utc_offset_seconds, "valid_from": d.valid_from,
                     "valid_until": d.valid_until}
                    for d in local_days(zone, *SPAN)
                ],
            )  # fmt: skip
    # 23:30 UTC on Jan 14th: the 15th in Stockholm, the 14th in UTC
    late = datetime(2026, 1, 14, 23, 30, tzinfo=UTC)
    # Plain SQL: the store writes today's columns, which this older schema lacks.
    with engine.begin() as conn:
        for name in old:
            conn.execute(
                sa.text(
                    "INSERT INTO events (source, event_key, vendor, occurred_at, event_code, "
                    "category, label, payload, first_seen_at, last_seen_at) VALUES (:s, :k, "
                    "'doorflow', :at, 10, 'access_granted', 'Admitted', '{}', :now, :now)"
                ).bindparams(
                    sa.bindparam("at", type_=UTCDateTime()),
                    sa.bindparam("now", type_=UTCDateTime()),
                ),
                {"s": name, "k": f"{name}-1", "at": late, "now": NOW},
            )

    migrate.upgrade(engine, "0008")
    tables = set(sa.inspect(engine).get_table_names())
    assert "source_local_days" not in tables
    with engine.connect() as conn:
        counted = conn.execute(
            sa.text("SELECT timezone, count(*) FROM zone_local_days GROUP BY 1 ORDER BY 1")
        ).all()
        zones = conn.execute(sa.text("SELECT timezone, calendar_digest FROM time_zones ORDER BY 1"))
        assert [tuple(z) for z in zones] == [
            ("Europe/Stockholm", zone_digest("Europe/Stockholm")),
            ("UTC", zone_digest("UTC")),
        ]
        days = conn.execute(sa.text("SELECT source, day FROM events_local ORDER BY source")).all()
    assert [tuple(c) for c in counted] == [
        ("Europe/Stockholm", len(list(local_days("Europe/Stockholm", *SPAN)))),
        ("UTC", len(list(local_days("UTC", *SPAN)))),
    ]
    assert [(s, str(d)) for s, d in days] == [
        ("a", "2026-01-15"),
        ("b", "2026-01-15"),
        ("c", "2026-01-14"),
    ]

    migrate.downgrade(engine, _previous_revision())  # and back: every source its calendar
    with engine.connect() as conn:
        back = conn.execute(
            sa.text("SELECT source, count(*) FROM source_local_days GROUP BY 1 ORDER BY 1")
        ).all()
        days = conn.execute(sa.text("SELECT source, day FROM events_local ORDER BY source")).all()
    assert [tuple(b) for b in back] == [
        ("a", len(list(local_days("Europe/Stockholm", *SPAN)))),
        ("b", len(list(local_days("Europe/Stockholm", *SPAN)))),
        ("c", len(list(local_days("UTC", *SPAN)))),
    ]
    assert [(s, str(d)) for s, d in days] == [
        ("a", "2026-01-15"),
        ("b", "2026-01-15"),
        ("c", "2026-01-14"),
    ]
    with engine.begin() as conn:  # the fixture upgrades an emptied database
        for table in ("events", "sources", "source_local_days", "sync_state"):
            conn.execute(sa.text(f"DELETE FROM {table}"))


def _event(key: str, when: datetime) -> EventRecord:
    return EventRecord(
        event_key=key,
        vendor="doorflow",
        occurred_at=when,
        event_code=10,
        category="access_granted",
        label="Admitted",
        payload=b"{}",
    )
