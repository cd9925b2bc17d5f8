"""What backfill windows and reconciliation re-reads share around a window read.

A window read (:meth:`~syncd.sources.base.Source.window_pages`) yields only
the rows of its window and ends with ``{"done": True}`` when it is complete,
whatever order the vendor lists in. :class:`Listed` watches one: the keys it
listed, whether it ended complete, or held back (IntServ's
``least_sync_time``). After a complete read that started at the window's
beginning, a stored event of the window that it no longer listed was deleted
at the vendor: :func:`mark_deleted` sets its ``deleted_at`` (DESIGN.md,
"History and repair"). A read resumed after a crash has not seen the keys
of its first part, so it marks nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from syncd.db.store import Store
from syncd.sources.base import Page

log = structlog.get_logger(__name__)

MAX_TRACKED_KEYS = 500_000
"""A window listing more keys than this marks no deletions (memory stays bounded)."""


@dataclass
class Listed:
    """The keys one window read listed, and how it ended."""

    whole: bool  # the read began at the window's start (not resumed)
    keys: set[str] = field(default_factory=set)
    complete: bool = False
    held: Mapping[str, Any] | None = None

    def watch(self, pages: Iterator[Page]) -> Iterator[Page]:
        for page in pages:
            if self.whole:
                self.keys.update(r.event_key for r in page.records)
                self.keys.update(r.event_key for r in page.rejected if r.event_key)
                if len(self.keys) > MAX_TRACKED_KEYS:
                    self.whole = False
                    self.keys = set()
            self.complete = bool(page.cursor.get("done"))
            self.held = page.cursor if "held" in page.cursor else None
            yield page


def mark_deleted(
    store: Store,
    source: str,
    since: datetime,
    until: datetime,
    codes: frozenset[int] | None,
    listed: Listed,
    began: datetime,
    now: datetime,
) -> int:
    """Mark deleted the stored events of a completely re-read window it no longer listed.

    ``codes`` are the codes the listing can return: an event no listing can
    return (DoorFlow 50-63, webhook-only) is never marked. ``began``: when
    the read began; rows first stored after it are left alone.
    """
    if not (listed.whole and listed.complete):
        return 0
    absent = store.mark_absent(source, since, until, codes, listed.keys, began, now)
    if absent:
        log.info(
            "events_marked_deleted",
            source=source,
            since=since.isoformat(),
            until=until.isoformat(),
            events=len(absent),
        )
    return len(absent)
