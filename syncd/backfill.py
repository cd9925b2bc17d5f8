"""Windowed, resumable history loads: ``syncd backfill``.

[since, until) is cut into windows of one duration aligned to ``since``
(:func:`windows`), loaded oldest first through the same page loop as a live
pass (:func:`syncd.engine.drive`) with a :class:`WindowSink`: each page's rows
commit with the window's position and its running count, and the last page
marks the window done. A backfill killed anywhere resumes from its last
committed page; a finished window is never read again.

Windows are UTC durations: ``1d`` is 24 hours from ``since``, whatever a
local clock does (a DST change makes no 23- or 25-hour window).

Overlap reuse: a window of a new backfill whose span is covered by the union
of finished windows of *any* backfill of the same source is marked done
without a request (``reused``), provided they finished after their end (a
window read while still open cannot vouch for what came later). Partly
covered windows are read in full: the upsert makes the overlap harmless, and
reads stay whole windows. Events a vendor receives late, after a window was
read, are not a backfill's to find: that is ``syncd reconcile``'s job.

The live cursor (``sync_state``) is never read nor written; a backfill holds
its own lock (:meth:`Store.backfill_lock`), so it runs beside ``syncd sync``
and ``syncd run`` of the same source, and both meet in the idempotent upsert.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import structlog

from syncd import wording
from syncd.config import SourceConfig
from syncd.db import backfills
from syncd.db.backfills import Span, WindowRow
from syncd.db.store import Store, WriteResult
from syncd.engine import Clock, Progress, SourceRuntime, drive, utcnow
from syncd.errors import SyncdError
from syncd.sources.base import Page
from syncd.sources.http import RetryHooks
from syncd.window_read import Listed, mark_deleted

log = structlog.get_logger(__name__)
# Progress events go to their own logger, so the command line can show them
# at info while everything else stays at the one-shot commands' error level.
progress_log = structlog.get_logger("syncd.backfill.progress")

DEFAULT_WINDOW = "1d"
MAX_WINDOWS = 100_000
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^\s*(\d+)\s*([dhms])\s*$", re.IGNORECASE)


# -- pure arithmetic -------------------------------------------------------------


def parse_window(text: str) -> timedelta:
    """``1d``, ``6h``, ``90m``, ``3600s`` -> a positive duration, or one clear error."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise SyncdError(
            f"--window {text!r} is not a positive duration such as 1d, 6h, 90m or 3600s"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])


def windows(since: datetime, until: datetime, step: timedelta) -> list[Span]:
    """[since, until) in windows of ``step`` aligned to ``since``; the last one clipped."""
    if since >= until:
        raise SyncdError("--since must be before --until (or now)")
    if step <= timedelta(0):
        raise SyncdError("--window must be a positive duration")
    count = -(-(until - since) // step)  # ceiling division of timedeltas
    if count > MAX_WINDOWS:
        raise SyncdError(
            f"--window {format_window(step)} makes {count} windows of this range "
            f"(at most {MAX_WINDOWS}): choose a longer window"
        )
    return [(since + i * step, min(since + (i + 1) * step, until)) for i in range(count)]


def format_window(step: timedelta) -> str:
    """The shortest exact form of a duration: ``1d``, ``6h``, ``90m``, ``3601s``."""
    seconds = int(step.total_seconds())
    for unit, size in _UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"  # pragma: no cover - seconds always divides


def covered(span: Span, done: Sequence[Span]) -> bool:
    """Whether the union of ``done`` spans covers ``span`` entirely."""
    start, end = span
    reach = start
    for low, high in sorted(done):
        if low > reach:
            break
        reach = max(reach, high)
        if reach >= end:
            return True
    return reach >= end


def counted(pages: Iterator[Page], start: datetime, end: datetime, base: int = 0) -> Iterator[Page]:
    """Each page's position wrapped with the window's running count of events read.

    The count then commits in the page's transaction with the position (a
    sink only sees the cursor), so a window's ``events`` never drifts from
    what was committed, whatever kills the process; being a running total
    (from ``base``, what was committed before), a commit unit of several
    pages keeps all of them. Only rows inside ``[start, end)`` are counted
    (a window read yields no others).
    """
    running = base
    for page in pages:
        running += sum(1 for r in page.records if start <= r.occurred_at < end)
        running += sum(
            1 for r in page.rejected if r.counted_at is None or start <= r.counted_at < end
        )
        yield Page(page.records, page.rejected, {"position": page.cursor, "events": running})


def bounds_ahead(rows: Sequence[WindowRow], limit: int = 16) -> list[datetime]:
    """The start and end of the next ``limit`` windows: one count probe each, shared.

    Consecutive windows share a bound, so counting ``limit`` windows costs
    ``limit + 1`` small requests, and a window the counts show empty costs
    no more (DESIGN.md: an empty window costs one request).
    """
    out: set[datetime] = set()
    for row in rows[:limit]:
        out.update((row.start, row.end))
    return sorted(out)


# -- the sink --------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSink:
    """A :class:`~syncd.engine.CursorSink` for one window of one backfill.

    Takes the cursors :func:`counted` makes: writes the position inside the
    window and adds the page's count, in the page's transaction; the last
    page's position (``{"done": True}``) marks the window done.
    """

    source: str
    since: datetime
    until: datetime
    start: datetime

    def save(self, conn: sa.Connection, cursor: Mapping[str, Any], now: datetime) -> None:
        backfills.save_position(
            conn,
            self.source,
            self.since,
            self.until,
            self.start,
            dict(cursor["position"]),
            int(cursor.get("events", 0)),
            now,
        )


# -- the run ---------------------------------------------------------------------


@dataclass(frozen=True)
class WindowDone:
    """What the progress display hears after each window."""

    start: datetime
    end: datetime
    events: int
    reused: bool


@dataclass(frozen=True)
class BackfillReport:
    source: str
    since: datetime
    until: datetime
    window: timedelta
    total: int
    done_before: int = 0
    reused: int = 0
    loaded: int = 0
    written: WriteResult = field(default_factory=WriteResult)
    events: int = 0
    pages: int = 0
    duration_s: float = 0.0
    stopped: bool = False
    held: tuple[HeldWindow, ...] = ()
    deleted: int = 0

    @property
    def complete(self) -> bool:
        return self.done_before + self.reused + self.loaded == self.total

    def summary(self) -> str:
        w = self.written
        text = (
            f"{self.source}: backfill {_iso(self.since)} .. {_iso(self.until)} "
            f"in {wording.counted(self.total, 'window')} of {format_window(self.window)}: "
            f"{self.loaded:,} loaded, {self.done_before:,} already done, {self.reused:,} reused; "
            f"{wording.counted(self.events, 'event')} read ({w.inserted:,} new, "
            f"{w.updated:,} updated, {w.unchanged:,} unchanged, {w.rejected:,} rejected) "
            f"in {wording.counted(self.pages, 'page')}, {self.duration_s:.1f}s"
        )
        if self.deleted:
            text += f"; {self.deleted} stored events no longer listed, marked deleted"
        if self.held:
            text += f"; {len(self.held)} windows held back: {self.held[0].describe()}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "window": format_window(self.window),
            "windows_total": self.total,
            "complete": self.complete,
            "held": [h.to_json() for h in self.held],
        }


@dataclass(frozen=True)
class HeldWindow:
    """A window read to its end that the vendor does not vouch for yet (IntServ)."""

    start: datetime
    end: datetime
    least_sync_time: str
    systems: tuple[str, ...]

    def describe(self) -> str:
        who = (
            "system " + ", ".join(self.systems)
            if self.systems
            else "a system not in `systems` (list them in the config to see which)"
        )
        return (
            f"{_iso(self.start)} .. {_iso(self.end)} is held back by {who}: least_sync_time "
            f"is {self.least_sync_time}; rerun when it is back online"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "window_start": _iso(self.start),
            "window_end": _iso(self.end),
            "least_sync_time": self.least_sync_time,
            "systems": list(self.systems),
        }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def resolve_until(
    store: Store, source: str, since: datetime, until: datetime | None, now: datetime
) -> datetime:
    """``--until``, else the unfinished backfill's from the same ``since``, else now."""
    if until is not None:
        return until
    return backfills.unfinished_until(store, source, since) or now


class BackfillRefused(SyncdError):
    """The backfill did not start: nothing was read, nothing to resume."""


class BackfillLocked(BackfillRefused):
    """Another backfill of this source holds its backfill lock."""


def run_backfill(
    store: Store,
    config: SourceConfig,
    since: datetime,
    until: datetime,
    step: timedelta,
    *,
    clock: Clock = utcnow,
    transport: httpx.BaseTransport | None = None,
    stop: threading.Event | None = None,
    on_plan: Callable[[list[WindowRow]], None] | None = None,
    on_page: Callable[[Page], None] | None = None,
    on_window: Callable[[WindowDone], None] | None = None,
) -> BackfillReport:
    """Load ``[since, until)`` of ``config``'s source window by window; resumable.

    Exceptions (vendor, database) propagate after everything committed so far
    stays committed; rerunning resumes. ``stop`` ends the run after the page
    in hand (``BackfillReport.stopped``).
    """
    spans = windows(since, until, step)
    with store.backfill_lock(config.name) as acquired:
        if not acquired:
            raise BackfillLocked(
                f"another syncd backfill of {config.name} is running; wait for it or stop it first"
            )
        return _locked(
            store, config, since, until, step, spans, clock, transport, stop,
            on_plan, on_page, on_window,
        )  # fmt: skip


def _locked(
    store: Store,
    config: SourceConfig,
    since: datetime,
    until: datetime,
    step: timedelta,
    spans: list[Span],
    clock: Clock,
    transport: httpx.BaseTransport | None,
    stop: threading.Event | None,
    on_plan: Callable[[list[WindowRow]], None] | None,
    on_page: Callable[[Page], None] | None,
    on_window: Callable[[WindowDone], None] | None,
) -> BackfillReport:
    started = time.perf_counter()
    name = config.name
    rows = backfills.windows_of(store, name, since, until)
    if not rows:
        backfills.plan(store, name, since, until, spans, clock())
        rows = backfills.windows_of(store, name, since, until)
    elif [(row.start, row.end) for row in rows] != spans:
        _check_same_plan(rows, step)
    done_before = sum(1 for row in rows if row.done)
    reused = _reuse(store, name, since, until, rows, clock())
    rows = backfills.windows_of(store, name, since, until) if reused else rows
    progress_log.info(
        "backfill_started",
        source=name,
        since=_iso(since),
        until=_iso(until),
        window=format_window(step),
        windows=len(rows),
        windows_done=done_before + reused,
    )
    if on_plan is not None:
        on_plan(rows)
    report = BackfillReport(
        name, since, until, step, len(rows), done_before=done_before, reused=reused
    )
    todo = [row for row in rows if not row.done]
    if not todo:
        return _finished(report, started)
    # The stop also ends retry waits (a 429's Retry-After), not only the page loop.
    hooks = RetryHooks(stop=stop) if stop is not None else None
    totals: dict[datetime, int | None] = {}
    with SourceRuntime.open(
        store, config, clock=clock, transport=transport, retry_hooks=hooks
    ) as runtime:
        for index, row in enumerate(todo):
            if stop is not None and stop.is_set():
                return _finished(report, started, stopped=True)
            if _paused_now(store, name):  # `syncd pause` from anywhere: stop, resumable
                return _finished(report, started, stopped=True)
            if row.start not in totals or row.end not in totals:
                totals = runtime.source.window_totals(bounds_ahead(todo[index:]))
            report, stopped = _load_window(
                store, runtime, row, report, clock, stop, on_page, totals
            )
            if stopped:
                return _finished(report, started, stopped=True)
            if on_window is not None:
                on_window(WindowDone(row.start, row.end, report.events, reused=False))
    return _finished(report, started)


def _paused_now(store: Store, source: str) -> bool:
    """Read before each window: a pause set while a backfill runs stops it there."""
    from syncd.db.pauses import paused

    if paused(store, source) is None:
        return False
    log.info("backfill_paused", source=source)
    return True


def _check_same_plan(rows: list[WindowRow], step: timedelta) -> None:
    """A backfill is (source, since, until): its stored windows are its plan.

    Rerun with another ``--window`` while unfinished, it would mix two
    plans; finished, there is nothing left to do whatever the window.
    """
    if all(row.done for row in rows):
        return
    first = rows[0]
    planned = format_window(first.end - first.start)
    raise BackfillRefused(
        f"the unfinished backfill of {first.source} from {_iso(first.since)} to "
        f"{_iso(first.until)} has {planned} windows, not {format_window(step)}: "
        f"rerun it with --window {planned}"
    )


def _reuse(
    store: Store,
    source: str,
    since: datetime,
    until: datetime,
    rows: list[WindowRow],
    now: datetime,
) -> int:
    """Mark the unfinished windows that finished windows of other backfills cover."""
    open_rows = [row for row in rows if not row.done]
    if not open_rows:
        return 0
    done = backfills.done_spans(store, source, since, until)
    starts = [row.start for row in open_rows if covered((row.start, row.end), done)]
    backfills.mark_reused(store, source, since, until, starts, now)
    for start in starts:
        progress_log.info("backfill_window_reused", source=source, window_start=_iso(start))
    return len(starts)


def _load_window(
    store: Store,
    runtime: SourceRuntime,
    row: WindowRow,
    report: BackfillReport,
    clock: Clock,
    stop: threading.Event | None,
    on_page: Callable[[Page], None] | None,
    totals: Mapping[datetime, int | None],
) -> tuple[BackfillReport, bool]:
    """One window from its stored position; (report after it, stopped?)."""
    started = time.perf_counter()
    began = clock()
    source = runtime.source
    vendor = _window_count(totals, row)
    listed = Listed(whole=not row.position.get("pass"))
    progress = Progress()
    read = 0
    if vendor == 0:
        listed.complete = True  # the vendor counts nothing there: no listing to read
    else:
        sink = WindowSink(row.source, row.since, row.until, row.start)
        position = {} if "held" in row.position else row.position
        base = 0 if not position else row.events
        listing = source.window_pages(
            row.start, row.end, position, clock(), end_total=totals.get(row.end)
        )
        pages = counted(listed.watch(listing), row.start, row.end, base)

        def page_done(page: Page, _written: WriteResult) -> None:
            nonlocal read
            read += len(page.records) + len(page.rejected)
            if on_page is not None:
                on_page(page)

        progress = drive(store, row.source, pages, sink, clock=clock, stop=stop, on_page=page_done)
    report = _add(report, progress.written, progress.pages, read)
    if progress.stopped and not _finished_position(store, row):
        return report, True
    if listed.held is not None:
        held = HeldWindow(
            row.start,
            row.end,
            str(listed.held.get("held")),
            tuple(map(str, listed.held.get("systems") or ())),
        )
        progress_log.warning(
            "backfill_window_held",
            source=row.source,
            window_start=_iso(row.start),
            window_end=_iso(row.end),
            least_sync_time=held.least_sync_time,
            systems=list(held.systems),
        )
        return _replace(report, held=(*report.held, held)), bool(progress.stopped)
    deleted = mark_deleted(
        store, row.source, row.start, row.end, source.listed_codes, listed, began, clock()
    )
    # The connector's last page normally marks the window done; a window the
    # counts showed empty has no page at all and is finished here.
    backfills.finish(store, row.source, row.since, row.until, row.start, clock())
    report = _replace(report, loaded=report.loaded + 1, deleted=report.deleted + deleted)
    progress_log.info(
        "backfill_window_done",
        source=row.source,
        window_start=_iso(row.start),
        window_end=_iso(row.end),
        events=(row.events if row.position.get("pass") else 0) + read,
        pages=progress.pages,
        duration_s=round(time.perf_counter() - started, 3),
        windows_done=report.done_before + report.reused + report.loaded,
        windows=report.total,
    )
    return report, bool(progress.stopped)


def _window_count(totals: Mapping[datetime, int | None], row: WindowRow) -> int | None:
    """The vendor's count of a window from the shared probes, when it has counts."""
    above_start, above_end = totals.get(row.start), totals.get(row.end)
    if above_start is None or above_end is None:
        return None
    return max(0, above_start - above_end)


def _finished_position(store: Store, row: WindowRow) -> bool:
    """Whether the window was marked done by its last page (a stop on the last page)."""
    for each in backfills.windows_of(store, row.source, row.since, row.until):
        if each.start == row.start:
            return each.done
    return False


def _add(report: BackfillReport, written: WriteResult, pages: int, events: int) -> BackfillReport:
    return _replace(
        report,
        written=report.written + written,
        pages=report.pages + pages,
        events=report.events + events,
    )


def _replace(report: BackfillReport, **changes: Any) -> BackfillReport:
    return replace(report, **changes)


def _finished(report: BackfillReport, started: float, *, stopped: bool = False) -> BackfillReport:
    report = _replace(report, duration_s=time.perf_counter() - started, stopped=stopped)
    event = "backfill_stopped" if stopped else "backfill_finished"
    progress_log.info(
        event,
        source=report.source,
        windows=report.total,
        windows_done=report.done_before + report.reused + report.loaded,
        events=report.events,
        duration_s=round(report.duration_s, 3),
    )
    return report
