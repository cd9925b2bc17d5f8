"""drive(): pages that are already fetched commit together, with the last one's cursor.

On both databases. The sink of the first commit waits until the connector
has built every page (a slow first commit), so which pages are ready when
is deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from syncd.db.store import Store
from syncd.engine import LiveCursor, drive
from syncd.sources.base import Page
from tests.factories import event


class SlowFirstCommit:
    """The live cursor, but the first save waits for every page to be built."""

    def __init__(self, store: Store, built: threading.Event) -> None:
        self.live = LiveCursor(store, "hq")
        self.built = built
        self.saving = threading.Event()
        self.saved: list[dict[str, Any]] = []

    def save(self, conn: sa.Connection, cursor: Mapping[str, Any], now: datetime) -> None:
        if not self.saved:
            self.saving.set()
            assert self.built.wait(10)
        self.saved.append(dict(cursor))
        self.live.save(conn, cursor, now)


def pages(count: int, size: int, sink: SlowFirstCommit) -> Iterator[Page]:
    """Page 1, then (once its commit has begun) the rest, as fast as they are taken."""
    for n in range(count):
        records = [event(n * size + i) for i in range(size)]
        yield Page(records, [], {"page": n + 1})
        if n == 0:
            assert sink.saving.wait(10)
    sink.built.set()


def test_ready_pages_commit_together_with_the_last_cursor(store: Store) -> None:
    built = threading.Event()
    sink = SlowFirstCommit(store, built)
    commits: list[int] = []
    progress = drive(
        store,
        "hq",
        pages(5, 1000, sink),
        sink,
        on_page=lambda page, _written: commits.append(len(page.records)),
        commit_rows=5000,
    )
    # Page 1 alone (nothing else was ready), then pages 2-5 in one unit.
    assert commits == [1000, 4000]
    assert sink.saved == [{"page": 1}, {"page": 5}]
    assert progress.pages == 5
    assert progress.written.inserted == 5000
    assert store.load_state("hq").cursor == {"page": 5}
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == 5000


def test_a_unit_never_exceeds_the_row_limit(store: Store) -> None:
    built = threading.Event()
    sink = SlowFirstCommit(store, built)
    commits: list[int] = []
    drive(
        store,
        "hq",
        pages(5, 1000, sink),
        sink,
        on_page=lambda page, _written: commits.append(len(page.records)),
        commit_rows=2500,
    )
    assert commits == [1000, 2000, 2000]
    assert sink.saved == [{"page": 1}, {"page": 3}, {"page": 5}]
