"""What the status page and ``/api/v1/sources`` show: every source, in six queries.

One query per table, never one per source, so the answer stays well under a
second at 1,000 sources: ``sync_state`` (state, pause, errors), ``sources``
(kinds of sources this process does not configure), ``events`` twice (row
count and newest event per source; then the last 24 hours per source and
hour), ``rejected_events`` (count per source) and ``backfill_windows``
(backfills in progress). The 24-hour query is a range on ``occurred_at``,
which ``ix_events_occurred_at`` serves on PostgreSQL and SQLite alike; the
hour is computed from the Unix time, so it never depends on the session's
time zone. Nothing here reads a cursor, a token or a payload.

Pure parts (:func:`hour_starts`, :func:`source_state`) take ``now`` and
values as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from syncd.db.schema import backfill_windows, events, rejected_events, sources, sync_state
from syncd.db.store import _aggregate_time

HOURS = 24
STATES = ("ok", "failing", "paused", "never_run")
# PostgreSQL: a status request never holds a connection longer than this.
STATEMENT_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    since: datetime
    until: datetime
    windows_done: int
    windows_total: int
    events: int

    @property
    def share_done(self) -> float:
        return self.windows_done / self.windows_total if self.windows_total else 1.0


@dataclass(frozen=True, slots=True)
class SourceOverview:
    source: str
    kind: str | None
    state: str
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    newest_event_at: datetime | None
    events: int
    rejected: int
    events_last_24h: tuple[int, ...]
    backfills: tuple[BackfillProgress, ...]
    paused_at: datetime | None = None
    paused_by: str | None = None
    paused_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    hours: tuple[datetime, ...]  # the start of each of the 24 hours, oldest first
    sources: tuple[SourceOverview, ...]

    def find(self, name: str) -> SourceOverview | None:
        return next((s for s in self.sources if s.source == name), None)


def hour_starts(now: datetime, hours: int = HOURS) -> tuple[datetime, ...]:
    """The last ``hours`` whole UTC hours, the current (partial) one last."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return tuple(current - timedelta(hours=hours - 1 - i) for i in range(hours))


def source_state(
    paused: bool, failures: int, last_success: datetime | None, last_error: datetime | None
) -> str:
    """``paused`` over ``failing`` (failed last time) over ``ok``; ``never_run`` before any pass."""
    if paused:
        return "paused"
    if failures > 0:
        return "failing"
    if last_success is None and last_error is None:
        return "never_run"
    return "ok"


def _hour_number(dialect: str) -> sa.ColumnElement[Any]:
    """``occurred_at`` as whole hours since the Unix epoch (UTC, whatever the session)."""
    # Constants are literals, not parameters: SELECT and GROUP BY must be the
    # same expression to the database.
    hour: sa.ColumnElement[Any] = sa.literal_column("3600")
    if dialect == "postgresql":
        epoch = sa.extract("epoch", events.c.occurred_at)
        return sa.cast(sa.func.floor(epoch.op("/")(hour)), sa.BigInteger)
    # SQLite keeps UTC text; strftime('%s') is its Unix time, '/' on integers divides.
    seconds = sa.cast(sa.func.strftime(sa.literal_column("'%s'"), events.c.occurred_at), sa.Integer)
    return seconds.op("/")(hour)


def hourly_query(dialect: str, since: datetime, until: datetime) -> sa.Select[Any]:
    """Events per (source, hour) in [since, until): a range on ``ix_events_occurred_at``."""
    hour = _hour_number(dialect).label("hour")
    return (
        sa.select(events.c.source, hour, sa.func.count())
        .where(
            events.c.occurred_at >= since,
            events.c.occurred_at < until,
            events.c.deleted_at.is_(None),  # deleted at the vendor: not counted (DESIGN.md)
        )
        .group_by(events.c.source, hour)
    )


def load_overview(
    engine: sa.Engine, now: datetime, configured: Mapping[str, str] | None = None
) -> Overview:
    """Every source of the database (and every ``configured`` name -> kind) as of ``now``."""
    configured = configured or {}
    hours = hour_starts(now)
    since, until = hours[0], hours[-1] + timedelta(hours=1)
    first_hour = int(since.timestamp()) // 3600
    bw = backfill_windows
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        states = {
            row.source: row
            for row in conn.execute(
                sa.select(
                    sync_state.c.source,
                    sync_state.c.last_success_at,
                    sync_state.c.last_error,
                    sync_state.c.last_error_at,
                    sync_state.c.consecutive_failures,
                    sync_state.c.paused_at,
                    sync_state.c.paused_by,
                    sync_state.c.paused_reason,
                )
            )
        }
        kind_rows = conn.execute(sa.select(sources.c.source, sources.c.kind))
        kinds: dict[str, str | None] = {source: kind for source, kind in kind_rows}  # noqa: C416
        totals = {
            source: (int(count), _aggregate_time(newest))
            for source, count, newest in conn.execute(
                sa.select(events.c.source, sa.func.count(), sa.func.max(events.c.occurred_at))
                .where(events.c.deleted_at.is_(None))
                .group_by(events.c.source)
            )
        }
        rejected = {
            source: int(count)
            for source, count in conn.execute(
                sa.select(rejected_events.c.source, sa.func.count()).group_by(
                    rejected_events.c.source
                )
            )
        }
        per_hour: dict[str, list[int]] = {}
        for source, hour, count in conn.execute(hourly_query(engine.dialect.name, since, until)):
            index = int(hour) - first_hour
            if 0 <= index < HOURS:
                per_hour.setdefault(source, [0] * HOURS)[index] += int(count)
        backfills: dict[str, list[BackfillProgress]] = {}
        for source, b_since, b_until, total, done, loaded in conn.execute(
            sa.select(
                bw.c.source,
                bw.c.since,
                bw.c.until,
                sa.func.count(),
                sa.func.count(bw.c.done_at),
                sa.func.sum(bw.c.events),
            )
            .group_by(bw.c.source, bw.c.since, bw.c.until)
            .having(sa.func.count(bw.c.done_at) < sa.func.count())
            .order_by(bw.c.source, bw.c.since)
        ):
            backfills.setdefault(source, []).append(
                BackfillProgress(
                    _utc(b_since), _utc(b_until), int(done), int(total), int(loaded or 0)
                )
            )
    names = sorted(set(states) | set(kinds) | set(configured))
    out = []
    for name in names:
        row = states.get(name)
        count, newest = totals.get(name, (0, None))
        paused_at = row.paused_at if row is not None else None
        failures = int(row.consecutive_failures) if row is not None else 0
        last_success = row.last_success_at if row is not None else None
        last_error_at = row.last_error_at if row is not None else None
        out.append(
            SourceOverview(
                source=name,
                kind=configured.get(name) or kinds.get(name),
                state=source_state(paused_at is not None, failures, last_success, last_error_at),
                last_success_at=last_success,
                last_error=row.last_error if row is not None else None,
                last_error_at=last_error_at,
                consecutive_failures=failures,
                newest_event_at=newest,
                events=count,
                rejected=rejected.get(name, 0),
                events_last_24h=tuple(per_hour.get(name, [0] * HOURS)),
                backfills=tuple(backfills.get(name, ())),
                paused_at=paused_at,
                paused_by=row.paused_by if row is not None else None,
                paused_reason=row.paused_reason if row is not None else None,
            )
        )
    return Overview(now, hours, tuple(out))


def _utc(value: datetime | str) -> datetime:
    converted = _aggregate_time(value)
    assert converted is not None
    return converted
