"""The backfill's progress bar on a terminal (``rich``, on stderr).

Windows done of total, events read, events per second, and the time left
estimated from the windows' rate. Off a terminal the command logs
``backfill_window_done`` lines instead (:mod:`syncd.backfill`).
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from syncd.backfill import WindowDone
from syncd.db.backfills import WindowRow
from syncd.sources.base import Page


class ProgressBar:
    """Callbacks for :func:`syncd.backfill.run_backfill` drawing one rich bar."""

    def __init__(self, source: str, console: Console | None = None) -> None:
        self.source = source
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("windows"),
            TextColumn("{task.fields[events]} events"),
            TextColumn("{task.fields[rate]} events/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.task: TaskID | None = None
        self.events = 0
        self.started = time.monotonic()

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def plan(self, rows: list[WindowRow]) -> None:
        done = sum(1 for row in rows if row.done)
        self.started = time.monotonic()
        self.task = self.progress.add_task(
            f"backfill {self.source}", total=len(rows), completed=done, events=0, rate="-"
        )

    def page(self, page: Page) -> None:
        self.events += int(page.cursor.get("events", 0))
        self._update()

    def window(self, _done: WindowDone) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
        self._update()

    def _update(self) -> None:
        if self.task is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.progress.update(self.task, events=self.events, rate=f"{self.events / elapsed:,.0f}")
