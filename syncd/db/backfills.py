"""``backfill_windows``: the plan and progress of every history load.

A backfill is identified by (source, since, until) and is the set of its
window rows. Rows are planned up front (so ``syncd status`` can show windows
done of total), a window's ``position`` is written inside each page's
transaction by :class:`~syncd.backfill.WindowSink`, and ``done_at`` marks it
finished. Nothing here reads or writes ``sync_state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from syncd.db.schema import backfill_windows as bw
from syncd.db.store import Store

Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One window of one backfill, as stored."""

    source: str
    since: datetime
    until: datetime
    start: datetime
    end: datetime
    position: dict[str, Any]
    events: int
    reused: bool
    updated_at: datetime
    done_at: datetime | None

    @property
    def done(self) -> bool:
        return self.done_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "window_start": _iso(self.start),
            "window_end": _iso(self.end),
            "done": self.done,
            "reused": self.reused,
            "events": self.events,
            "position": self.position,
            "updated_at": _iso(self.updated_at),
            "done_at": _iso(self.done_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _row(row: sa.Row[Any]) -> WindowRow:
    return WindowRow(
        source=row.source,
        since=row.since,
        until=row.until,
        start=row.window_start,
        end=row.window_end,
        position=dict(row.position or {}),
        events=int(row.events),
        reused=bool(row.reused),
        updated_at=row.updated_at,
        done_at=row.done_at,
    )


def _key(source: str, since: datetime, until: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(bw.c.source == source, bw.c.since == since, bw.c.until == until)


def plan(
    store: Store,
    source: str,
    since: datetime,
    until: datetime,
    spans: Sequence[Span],
    now: datetime,
) -> None:
    """Record the windows of a backfill; windows already recorded are left as they are."""
    if not spans:
        return
    rows = [
        {
            "source": source,
            "since": since,
            "until": until,
            "window_start": start,
            "window_end": end,
            "position": {},
            "events": 0,
            "reused": False,
            "created_at": now,
            "updated_at": now,
        }
        for start, end in spans
    ]
    insert = store._insert(bw)
    with store.engine.begin() as conn:
        for chunk in range(0, len(rows), 1000):
            conn.execute(insert.on_conflict_do_nothing(), rows[chunk : chunk + 1000])


def windows_of(store: Store, source: str, since: datetime, until: datetime) -> list[WindowRow]:
    query = sa.select(bw).where(_key(source, since, until)).order_by(bw.c.window_start)
    with store.engine.connect() as conn:
        return [_row(row) for row in conn.execute(query)]


def done_spans(store: Store, source: str, since: datetime, until: datetime) -> list[Span]:
    """Finished windows of ``source`` (any backfill) that overlap ``[since, until)``.

    Only windows finished after they ended: one read while it was still open
    (``--until`` in the future) cannot vouch for events that came later.
    """
    query = sa.select(bw.c.window_start, bw.c.window_end).where(
        bw.c.source == source,
        bw.c.done_at >= bw.c.window_end,
        bw.c.window_start < until,
        bw.c.window_end > since,
    )
    with store.engine.connect() as conn:
        return [(row.window_start, row.window_end) for row in conn.execute(query)]


def mark_reused(
    store: Store,
    source: str,
    since: datetime,
    until: datetime,
    starts: Sequence[datetime],
    now: datetime,
) -> None:
    """Mark windows finished because finished windows of other backfills cover them."""
    if not starts:
        return
    with store.engine.begin() as conn:
        for start in starts:
            conn.execute(
                sa.update(bw)
                .where(
                    _key(source, since, until), bw.c.window_start == start, bw.c.done_at.is_(None)
                )
                .values(reused=True, done_at=now, updated_at=now, position={"done": True})
            )


def save_position(
    conn: sa.Connection,
    source: str,
    since: datetime,
    until: datetime,
    start: datetime,
    position: dict[str, Any],
    events: int,
    now: datetime,
) -> None:
    """Inside a page's transaction: the window's position, its running count, done at the end."""
    values: dict[str, Any] = {
        "position": position,
        "events": events,
        "updated_at": now,
    }
    if position.get("done"):
        values["done_at"] = sa.func.coalesce(bw.c.done_at, now)
    conn.execute(
        sa.update(bw).where(_key(source, since, until), bw.c.window_start == start).values(**values)
    )


def finish(
    store: Store, source: str, since: datetime, until: datetime, start: datetime, now: datetime
) -> None:
    """Mark a window done once its pages ran out (idempotent)."""
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(bw)
            .where(_key(source, since, until), bw.c.window_start == start, bw.c.done_at.is_(None))
            .values(done_at=now, updated_at=now, position={"done": True})
        )


def unfinished_until(store: Store, source: str, since: datetime) -> datetime | None:
    """The ``until`` of the newest unfinished backfill of ``source`` from ``since``."""
    query = (
        sa.select(bw.c.until)
        .where(bw.c.source == source, bw.c.since == since, bw.c.done_at.is_(None))
        .order_by(bw.c.created_at.desc(), bw.c.until.desc())
        .limit(1)
    )
    with store.engine.connect() as conn:
        value: datetime | None = conn.execute(query).scalar()
    return value


@dataclass(frozen=True, slots=True)
class BackfillSummary:
    """One backfill for ``syncd status``: its windows when unfinished."""

    source: str
    since: datetime
    until: datetime
    windows_total: int
    windows_done: int
    events: int
    updated_at: datetime
    windows: list[WindowRow]

    @property
    def done(self) -> bool:
        return self.windows_done == self.windows_total

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "done": self.done,
            "windows_total": self.windows_total,
            "windows_done": self.windows_done,
            "events": self.events,
            "updated_at": _iso(self.updated_at),
            "windows": [w.to_json() for w in self.windows],
        }


def summaries(store: Store) -> list[BackfillSummary]:
    """The unfinished backfills and the last finished one per source, newest first.

    Finished backfills pile up (a cron job backfilling every night); only
    the newest of each source still says something. Windows are listed only
    for unfinished ones.
    """
    query = (
        sa.select(
            bw.c.source,
            bw.c.since,
            bw.c.until,
            sa.func.count(),
            sa.func.count(bw.c.done_at),
            sa.func.sum(bw.c.events),
            sa.func.max(bw.c.updated_at),
        )
        .group_by(bw.c.source, bw.c.since, bw.c.until)
        .order_by(sa.func.max(bw.c.updated_at).desc())
    )
    with store.engine.connect() as conn:
        groups = conn.execute(query).all()
    out = []
    finished_shown: set[str] = set()
    for source, since, until, total, done, events, updated in groups:
        since_at, until_at = _utc(since), _utc(until)
        unfinished = int(done) < int(total)
        if not unfinished:
            if source in finished_shown:
                continue
            finished_shown.add(source)
        out.append(
            BackfillSummary(
                source=source,
                since=since_at,
                until=until_at,
                windows_total=int(total),
                windows_done=int(done),
                events=int(events or 0),
                updated_at=_utc(updated),
                windows=windows_of(store, source, since_at, until_at) if unfinished else [],
            )
        )
    return out


def _utc(value: datetime | str) -> datetime:
    # Grouped columns keep their type; max() on SQLite returns the stored text.
    from syncd.db.store import _aggregate_time

    converted = _aggregate_time(value)
    assert converted is not None
    return converted
