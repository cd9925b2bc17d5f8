"""What the BI views need from the configuration: ``sources`` and the zones' calendars.

SQLite has no time-zone database, and a PostgreSQL ``AT TIME ZONE`` with the
zone taken from a joined row cannot use an index for a filter on the local
``day``. So syncd computes the local calendar itself, from Python's
``zoneinfo``, and keeps it in ``zone_local_days``: for each time zone in use,
one row per stretch of UTC time that lies in one local day at one UTC offset
(``day``, ``valid_from``, ``valid_until``, ``utc_offset_seconds``), cut at UTC
midnight too (``utc_date``). A local day is one or two rows (UTC midnight
falls inside it unless the zone is UTC), one more with a daylight-saving
change. The views join events to their source's zone (``sources.timezone``)
and to the calendar row that holds them (``valid_from <= occurred_at <
valid_until``), so ``day`` is a plain column — a filter on it selects a few
rows here and then index ranges of ``events`` — and the local time of day is
``occurred_at + utc_offset_seconds``, never the session's TimeZone. The same
definition runs on both databases.

The calendar is per time zone, not per source (issue 20): 1,000 sources in
five zones store five calendars, so start-up and storage do not grow with
the number of sources. :func:`sync_sources` keeps ``sources``,
``time_zones`` and ``zone_local_days`` in step with the configuration; it is
called by ``syncd migrate``, ``syncd sync`` and ``syncd run``. A zone's
calendar is written once, and rewritten only when the zone's rules (a newer
tzdata) or the calendar's span changed.
"""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from syncd.config import SourceConfig
from syncd.db.schema import sources, sync_state, time_zones, zone_local_days

__all__ = [
    "CALENDAR_END",
    "CALENDAR_START",
    "LocalDay",
    "SourceSettings",
    "calendar_digest",
    "local_days",
    "sync_sources",
    "transitions",
    "zone_digest",
]

# The span the calendar covers; an event outside it has no local day (and is
# absent from the views that need one). No access-control cloud API serves
# events from before 2000 (an earlier stamp is a controller's reset clock), and
# the zones' rules that far ahead are projections anyway. About 73k rows per
# zone (36.5k for UTC and other zones whose midnight is UTC midnight).
CALENDAR_START = datetime(2000, 1, 1, tzinfo=UTC)
CALENDAR_END = datetime(2100, 1, 1, tzinfo=UTC)
# Advisory lock key of sync_sources (any constant apart from the per-source pass locks).
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"syncd.sync_sources").digest()[:8], "big", signed=True)
_STEP = timedelta(days=1)  # no zone changes its offset twice within a day (tzdb 1970-2100)


@dataclass(frozen=True)
class LocalDay:
    """One row of ``zone_local_days``: [valid_from, valid_until) is local ``day``.

    A row never crosses a UTC midnight either (``utc_date``): the views join
    on ``utc_date`` = the event's UTC date, an equality PostgreSQL estimates
    well and answers from an index, in both directions (from a range of days
    to their events, and from one person's events to their days).
    """

    day: date
    utc_date: date
    valid_from: datetime
    valid_until: datetime
    utc_offset_seconds: int


@dataclass(frozen=True)
class SourceSettings:
    """What the database keeps of one configured source."""

    source: str
    kind: str
    timezone: str
    business_hours_start: time
    business_hours_end: time

    @classmethod
    def of(cls, config: SourceConfig) -> SourceSettings:
        start, end = config.business_hours
        return cls(config.name, config.kind, config.timezone, start, end)


def _offset(zone: ZoneInfo, instant: datetime) -> int:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def transitions(
    zone_name: str, start: datetime = CALENDAR_START, end: datetime = CALENDAR_END
) -> list[tuple[datetime, int]]:
    """(instant, UTC offset from then on) for ``start`` and every offset change until ``end``.

    Found by stepping through time and bisecting each change to the second,
    so it depends on nothing but ``zoneinfo``'s answers for single instants.
    """
    zone = ZoneInfo(zone_name)
    result = [(start, _offset(zone, start))]
    at = start
    while at < end:
        nxt = min(at + _STEP, end)
        if _offset(zone, nxt) != result[-1][1]:
            low, high = at, nxt  # offset(low) is the old one, offset(high) the new one
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                mid = mid.replace(microsecond=0)
                if _offset(zone, mid) == result[-1][1]:
                    low = mid
                else:
                    high = mid
            result.append((high, _offset(zone, high)))
        at = nxt
    return result


def local_days(
    zone_name: str, start: datetime = CALENDAR_START, end: datetime = CALENDAR_END
) -> Iterator[LocalDay]:
    """The local calendar of ``zone_name`` over [start, end), split at offset changes."""
    yield from _days_between(transitions(zone_name, start, end), end)


def _days_between(changes: Sequence[tuple[datetime, int]], end: datetime) -> Iterator[LocalDay]:
    bounds = [*(at for at, _ in changes[1:]), end]
    for (begin, offset), stop in zip(changes, bounds, strict=True):
        yield from _split_by_local_day(begin, stop, offset)


def _split_by_local_day(begin: datetime, stop: datetime, offset: int) -> Iterator[LocalDay]:
    shift = timedelta(seconds=offset)
    at = begin
    while at < stop:
        day = (at + shift).date()
        local_midnight = datetime.combine(day + timedelta(days=1), time(), UTC) - shift
        utc_midnight = datetime.combine(at.date() + timedelta(days=1), time(), UTC)
        until = min(local_midnight, utc_midnight, stop)
        yield LocalDay(day, at.date(), at, until, offset)
        at = until


@lru_cache(maxsize=64)
def _rules(zone_name: str) -> tuple[tuple[datetime, int], ...]:
    """A zone's offset changes over the calendar's span (a fraction of a second)."""
    return tuple(transitions(zone_name))


@lru_cache(maxsize=64)
def zone_digest(zone_name: str) -> str:
    """A digest of the zone's rules as zoneinfo reads them; it changes with tzdata.

    The compiled zone file's bytes when zoneinfo reads one (system tzdata or
    the ``tzdata`` package): reading it costs nothing, so every ``syncd sync``
    can check its calendars. Else the transitions themselves.
    """
    for base in zoneinfo.TZPATH:
        path = Path(base, zone_name)
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    try:
        data = resources.files("tzdata.zoneinfo").joinpath(*zone_name.split("/")).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return hashlib.sha256(repr(_rules(zone_name)).encode()).hexdigest()[:16]
    return hashlib.sha256(data).hexdigest()[:16]


def calendar_digest(zone_name: str) -> str:
    """What a stored calendar was computed from: the zone's rules and the span.

    A newer tzdata, or a release that changes the span, rewrites the calendar.
    """
    span = f"{CALENDAR_START:%Y%m%d}-{CALENDAR_END:%Y%m%d}"
    return f"{zone_digest(zone_name)}:{span}"


def sync_sources(engine: sa.Engine, configs: Sequence[SourceConfig], now: datetime) -> int:
    """Write the configured sources to ``sources`` and their zones' calendars.

    Returns how many sources' local calendars changed (a new source, a new
    zone for a source, or a rewritten calendar of its zone). A source that is
    no longer configured keeps its row (its events still have a time zone);
    one that has a ``sync_state`` row but was never configured here gets UTC
    and the default business hours, so its events still appear in the views.
    A zone no source uses any more keeps its calendar (a few MB at most).
    """
    wanted = {c.name: SourceSettings.of(c) for c in configs}
    with engine.begin() as conn:
        _one_writer(conn)
        stored = {row.source: row for row in conn.execute(sa.select(sources))}
        for name in conn.execute(sa.select(sync_state.c.source)).scalars():
            if name not in wanted and name not in stored:
                wanted[name] = SourceSettings(name, "", "UTC", time(6), time(21))
        rewritten = _write_calendars(conn, {s.timezone for s in wanted.values()}, now)
        changed = _write_settings(conn, wanted, stored, now)
    return len(changed | {name for name, s in wanted.items() if s.timezone in rewritten})


def _write_calendars(conn: sa.Connection, zones: set[str], now: datetime) -> set[str]:
    """Write the calendar of each zone that has none or an outdated one; return those."""
    held = {row.timezone: row.calendar_digest for row in conn.execute(sa.select(time_zones))}
    rewritten = set()
    for zone in sorted(zones):
        digest = calendar_digest(zone)
        if held.get(zone) == digest:
            continue
        _write_calendar(conn, zone, _rules(zone))
        if zone in held:
            conn.execute(
                sa.update(time_zones)
                .where(time_zones.c.timezone == zone)
                .values(calendar_digest=digest, updated_at=now)
            )
        else:
            conn.execute(
                sa.insert(time_zones).values(timezone=zone, calendar_digest=digest, updated_at=now)
            )
        rewritten.add(zone)
    if rewritten and conn.dialect.name == "postgresql":
        # Fresh statistics at once (autovacuum may take minutes): without
        # them the planner scans the calendar instead of using its index.
        conn.exec_driver_sql("ANALYZE zone_local_days")
    return rewritten


def _write_settings(
    conn: sa.Connection,
    wanted: dict[str, SourceSettings],
    stored: dict[str, sa.Row[Any]],
    now: datetime,
) -> set[str]:
    """Insert or update each source's row; return the sources new or in another zone.

    New rows go in batched statements: 1,000 sources are a few round trips.
    """
    new: list[dict[str, Any]] = []
    moved = set()
    for name, settings in wanted.items():
        row = stored.get(name)
        values = {
            "kind": settings.kind or (row.kind if row else None) or None,
            "timezone": settings.timezone,
            "business_hours_start": settings.business_hours_start,
            "business_hours_end": settings.business_hours_end,
        }
        if row is None:
            new.append({"source": name, "updated_at": now, **values})
            moved.add(name)
        elif any(getattr(row, key) != value for key, value in values.items()):
            conn.execute(
                sa.update(sources).where(sources.c.source == name).values(updated_at=now, **values)
            )
            if row.timezone != settings.timezone:
                moved.add(name)
    for chunk in range(0, len(new), 500):
        conn.execute(sa.insert(sources), new[chunk : chunk + 500])
    return moved


def _one_writer(conn: sa.Connection) -> None:
    """Serialize concurrent callers (replicas starting together) before anything is read.

    Each then sees what the one before it committed, instead of both
    inserting the same source.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    else:
        # Take SQLite's write lock (waiting out busy_timeout) before the first
        # read: a deferred transaction that read first could not upgrade
        # once another writer committed (WAL's stale-snapshot "locked").
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _write_calendar(
    conn: sa.Connection, zone: str, changes: Sequence[tuple[datetime, int]]
) -> None:
    """The zone's calendar in one statement (the spans expanded in SQL)."""
    conn.execute(sa.delete(zone_local_days).where(zone_local_days.c.timezone == zone))
    dialect = conn.dialect.name
    spell = _sqlite_instant if dialect == "sqlite" else datetime.isoformat
    ends = [*(when for when, _ in changes[1:]), CALENDAR_END]
    spans = [
        {"a": spell(a), "b": spell(b), "o": o} for (a, o), b in zip(changes, ends, strict=True)
    ]
    conn.execute(
        sa.text(QUERIES[f"write_calendar_{dialect}"]),
        {"timezone": zone, "spans": json.dumps(spans)},
    )


def _sqlite_instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def named_queries(text: str) -> dict[str, str]:
    """The ``-- name: X`` blocks of a .sql file, by name."""
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


QUERIES = named_queries(resources.files("syncd").joinpath("bi.sql").read_text())
