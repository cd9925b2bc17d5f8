"""``syncd pause`` / ``syncd resume``: a source's pause, kept in ``sync_state``.

The pause is shared state, not process memory: every process on the database
(each replica of ``syncd run``, a ``syncd sync`` from cron, a backfill) reads
it before it calls the source's vendor, so a pause takes effect everywhere
within one interval and survives restarts. A source that never ran gets its
``sync_state`` row here (an empty cursor: its first pass starts at ``start``
as it would have).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from syncd.db.schema import sync_state
from syncd.db.store import Store

REASON_MAX = 500  # characters kept of --reason: a note for people, not a document


@dataclass(frozen=True, slots=True)
class Pause:
    """Who paused a source, when and why (``reason`` may be None)."""

    source: str
    at: datetime
    by: str | None
    reason: str | None


def pause(store: Store, source: str, *, reason: str | None, by: str, now: datetime) -> Pause:
    """Pause ``source``; pausing a paused source keeps its first ``at`` and updates the note."""
    reason = (reason or "").strip()[:REASON_MAX] or None
    insert = store._insert(sync_state).values(
        source=source,
        cursor={},
        updated_at=now,
        paused_at=now,
        paused_reason=reason,
        paused_by=by,
    )
    with store.engine.begin() as conn:
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["source"],
                set_={
                    "updated_at": now,
                    "paused_at": sa.func.coalesce(sync_state.c.paused_at, now),
                    "paused_reason": reason,
                    "paused_by": by,
                },
            )
        )
    found = paused(store, source)
    assert found is not None
    return found


def resume(store: Store, source: str, now: datetime) -> Pause | None:
    """Clear the pause of ``source``; the pause it had, or None when it was not paused."""
    with store.engine.begin() as conn:
        was = _select(conn, source)
        if was is not None:
            conn.execute(
                sync_state.update()
                .where(sync_state.c.source == source)
                .values(paused_at=None, paused_reason=None, paused_by=None, updated_at=now)
            )
    return was


def paused(store: Store, source: str) -> Pause | None:
    """The pause of ``source``, or None when it runs (one primary-key lookup)."""
    with store.engine.connect() as conn:
        return _select(conn, source)


def _select(conn: sa.Connection, source: str) -> Pause | None:
    row = conn.execute(
        sa.select(sync_state.c.paused_at, sync_state.c.paused_by, sync_state.c.paused_reason).where(
            sync_state.c.source == source
        )
    ).first()
    if row is None or row.paused_at is None:
        return None
    return Pause(source, row.paused_at, row.paused_by, row.paused_reason)


def known_sources(store: Store) -> set[str]:
    """Every source the database has a row for (in ``sync_state`` or ``sources``)."""
    from syncd.db.schema import sources

    with store.engine.connect() as conn:
        names = set(conn.execute(sa.select(sync_state.c.source)).scalars())
        names.update(conn.execute(sa.select(sources.c.source)).scalars())
    return names
