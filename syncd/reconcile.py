"""Reconciliation: find what the vendor has that the table lacks, cheaply.

A live pass re-reads only ``lookback`` behind its watermark, so an event an
offline controller uploads later than that is never listed by a pass. This
module finds such events without re-reading history:

1. For a span ``[since, until)`` compare the vendor's count
   (:meth:`~syncd.sources.base.Source.window_totals`, the bounds asked
   newest first) with what syncd holds there
   (:meth:`~syncd.db.store.Store.count_span`: stored events of the codes the
   vendor lists that are not marked deleted, plus rejected records by their
   time, or for one without a readable time where the listing placed it).
2. Equal: the span is complete; nothing more is asked. Different (either
   way: a surplus can hide a gap next to it): split the span in two and
   compare each half (three probes: its bounds and the middle).
3. A span the vendor counts at most :data:`REREAD_PAGES` pages of events
   for (or one second long) is re-read in full through the same window read
   as a backfill window (complete in any listing order) and the same page
   loop as every other write, so what was missing is upserted and what was
   there is untouched; a stored event the complete re-read no longer lists
   is marked deleted (:mod:`syncd.window_read`).

On a complete history this costs two count probes for the whole span, rejects
included: one without a readable time counts where its neighbours in the
listing put it (:func:`syncd.records.place`), as the vendor counts it. Each
difference costs three probes per halving down to a few pages, so requests
grow with the logarithm of the span, and they are capped at what re-reading
the whole span costs (:class:`_Bisection`): past that, what is still open is
re-read at once. A deleted event marked as such neither counts as present
nor masks a missing one.

Events loaded are told apart by where the next live pass begins
(:meth:`~syncd.sources.base.Source.next_pass_since`): older ones are *late
uploads* (missing, found only here), newer ones *new since the last pass*
(the next pass would have read them anyway).

Spans are checked oldest first, each count probe asking the upper bound
first, so an event arriving during the check can only make the vendor look
ahead (an extra re-read), never hide a gap.

IntServ has no count to compare: its ``least_sync_time`` cursor already
guarantees that every event before it was delivered, for the systems in
scope, so reconciliation there reports "not needed" and makes no request.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog

from syncd.config import SourceConfig
from syncd.db.store import Store, WriteResult
from syncd.engine import Clock, NoCursor, SourceRuntime, drive, utcnow
from syncd.window_read import Listed, mark_deleted
from syncd.wording import counted

log = structlog.get_logger(__name__)

REREAD_PAGES = 3
"""Spans the vendor counts this many pages for, or fewer, are re-read rather than split."""

MIN_SPAN = timedelta(seconds=1)
"""Below this a span is re-read rather than split (ties share a second)."""


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconciliation did; ``supported`` False means the vendor has no counts."""

    source: str
    since: datetime
    until: datetime
    supported: bool = True
    spans_checked: int = 0
    spans_reread: int = 0
    written: WriteResult = field(default_factory=WriteResult)
    requests: int = 0
    duration_s: float = 0.0
    note: str = ""
    late: int = 0
    deleted: int = 0
    capped: bool = False
    stopped: bool = False
    """Ended early by a stop (the pass's ``max_pass_duration``, a shutdown): not finished."""

    @property
    def found(self) -> int:
        """Events that were not stored and are now: late uploads and new ones."""
        return self.written.inserted

    @property
    def new(self) -> int:
        """Events newer than where the next live pass reads: it would have read them anyway."""
        return self.written.inserted - self.late

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "supported": self.supported,
            "spans_checked": self.spans_checked,
            "spans_reread": self.spans_reread,
            "found": self.found,
            "late_uploads": self.late,
            "new_since_last_pass": self.new,
            "updated": self.written.updated,
            "rejected": self.written.rejected,
            "deleted": self.deleted,
            "requests": self.requests,
            "capped": self.capped,
            "duration_s": round(self.duration_s, 3),
            "note": self.note,
            "stopped": self.stopped,
        }

    def summary(self) -> str:
        if not self.supported:
            return f"{self.source}: {self.note}"
        text = (
            f"{self.source}: {counted(self.spans_checked, 'span')} checked, "
            f"{self.spans_reread:,} re-read, "
            f"{counted(self.late, 'missing event')} found (late uploads), "
            f"{self.new:,} new since the last pass, {self.written.updated:,} updated, "
        )
        if self.deleted:
            text += f"{self.deleted} marked deleted, "
        return text + f"{self.requests} vendor requests, {self.duration_s:.1f}s"


NOT_NEEDED = (
    "reconciliation not needed: the vendor offers no counts, and its least_sync_time "
    "cursor already guarantees every event before it was delivered"
)


def split(since: datetime, until: datetime) -> datetime:
    """The midpoint of a span, on a whole second, strictly inside it."""
    middle = since + (until - since) / 2
    middle = middle.replace(microsecond=0)
    return middle if middle > since else since + MIN_SPAN


def bisection_cost(differ: int, vendor: int, page_size: int) -> int:
    """What finding ``differ`` differences in a span of ``vendor`` events costs, at least.

    Each needs its own path of splits (three probes each) down to a span of
    :data:`REREAD_PAGES` pages and that span's re-read, as long as they lie
    apart. When that already exceeds a plain re-read, reconciliation re-reads
    at once.
    """
    depth = max(0, math.ceil(math.log2(max(1.0, vendor / (REREAD_PAGES * page_size)))))
    leaf = pages_for(min(vendor, REREAD_PAGES * page_size // 2), page_size)  # halves: 1.5-3
    return differ * (3 * depth + leaf)


def pages_for(count: int, page_size: int) -> int:
    """Listing pages a window read of ``count`` events costs, oldest first."""
    return -(-count // page_size) if count > 0 else 0


@dataclass(frozen=True)
class Span:
    """A span to check: its bounds, the vendor's count and the count since its end."""

    low: datetime
    high: datetime
    vendor: int
    above: int  # the vendor's count since ``high``, asked with ``vendor``


def reconcile(
    store: Store,
    config: SourceConfig,
    *,
    since: datetime,
    until: datetime,
    runtime: SourceRuntime | None = None,
    clock: Clock = utcnow,
    transport: httpx.BaseTransport | None = None,
    stop: threading.Event | None = None,
) -> ReconcileReport:
    """Reconcile ``config``'s source over ``[since, until)``; raises on vendor errors.

    ``stop`` set ends it between spans and pages (``ReconcileReport.stopped``);
    what was re-read and committed stays.
    """
    started = time.perf_counter()
    own = runtime is None
    if runtime is None:
        runtime = SourceRuntime.open(store, config, clock=clock, transport=transport)
    requests = _RequestCounter(runtime.client)
    try:
        report = _Bisection(store, config, runtime, clock, requests, stop).run(since, until)
    finally:
        requests.detach()
        if own:
            runtime.close()
    duration = time.perf_counter() - started
    done = ReconcileReport(
        **{**report.__dict__, "requests": requests.count, "duration_s": duration}
    )
    log.info("reconcile_finished", **done.to_json())
    return done


class _Bisection:
    """Count, split where counts differ, re-read small spans; capped at a re-read's cost.

    The cap: a plain re-read of ``[since, until)`` costs the count that says
    how much there is plus its pages (:func:`pages_for`). When the first
    difference already predicts a bisection dearer than that
    (:func:`bisection_cost`: many differences, far apart), the whole span is
    re-read at once, which then costs exactly a re-read. Otherwise each step
    (a split: three probes; a re-read: its pages) is taken only while the
    requests stay within the cap; past it, the spans still open are re-read
    without more probes. Reads that must go on past a window (a list ordered
    by id whose late upload comes last) cost what they cost either way.
    """

    def __init__(
        self,
        store: Store,
        config: SourceConfig,
        runtime: SourceRuntime,
        clock: Clock,
        requests: _RequestCounter,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.stop = stop
        self.config = config
        self.source = runtime.source
        self.clock = clock
        self.requests = requests
        self.checked = self.reread = self.late = self.deleted = 0
        self.written = WriteResult()
        self.capped = False
        self.boundary = self.source.next_pass_since(store.load_state(config.name).cursor, clock())

    def run(self, since: datetime, until: datetime) -> ReconcileReport:
        name = self.config.name
        top = self._spans([since, until])
        if top is None:
            return ReconcileReport(name, since, until, supported=False, note=NOT_NEEDED)
        page = self.config.page_size
        cap = self.requests.count + pages_for(top[0].vendor, page)
        pending = top
        while pending:
            if self.stop is not None and self.stop.is_set():
                log.info("reconcile_stopping", source=name, spans_left=len(pending))
                return self._report(since, until, stopped=True)
            span = pending.pop()
            self.checked += 1
            local = self.store.count_span(name, span.low, span.high, self.source.listed_codes)
            if span.vendor == local:
                continue
            small = span.vendor <= REREAD_PAGES * page or span.high - span.low <= MIN_SPAN
            step = pages_for(span.vendor, page) if small else 3
            if self.checked == 1 and not small:
                step = bisection_cost(abs(span.vendor - local), span.vendor, page)
            if self.requests.count + step > cap:
                log.info("reconcile_over_cap", source=name, vendor=span.vendor, local=local,
                         step=step, cap=cap)  # fmt: skip
                self.capped = True
                self._reread_all([*pending, span])
                break
            if small:
                self._reread(span.low, span.high, span.above, span.vendor, local)
                continue
            halves = self._spans([span.low, self._split(span.low, span.high), span.high])
            assert halves is not None
            pending.extend(reversed(halves))  # oldest first: popped next
        return self._report(since, until, stopped=self.stop is not None and self.stop.is_set())

    def _report(self, since: datetime, until: datetime, stopped: bool) -> ReconcileReport:
        return ReconcileReport(
            self.config.name,
            since,
            until,
            spans_checked=self.checked,
            spans_reread=self.reread,
            written=self.written,
            late=self.late,
            deleted=self.deleted,
            capped=self.capped,
            stopped=stopped,
        )

    def _split(self, low: datetime, high: datetime) -> datetime:
        """About the middle, at a listed event's time that no reject was placed at."""
        middle = split(low, high)
        at = self.store.split_point(self.config.name, middle, high, self.source.listed_codes)
        return at if at is not None and low < at < high else middle

    def _spans(self, bounds: list[datetime]) -> list[Span] | None:
        """The spans between ``bounds``, counted by probes asked newest bound first."""
        totals = self.source.window_totals(bounds)
        if any(totals[b] is None for b in bounds):
            return None
        counts = [int(totals[b] or 0) for b in bounds]
        return [
            Span(low, high, max(0, counts[i] - counts[i + 1]), counts[i + 1])
            for i, (low, high) in enumerate(itertools.pairwise(bounds))
        ]

    def _reread_all(self, spans: list[Span]) -> None:
        """Past the cap: re-read every span still open, oldest first, without more probes."""
        log.info("reconcile_capped", source=self.config.name, spans=len(spans))
        for span in sorted(spans, key=lambda s: s.low):
            self._reread(span.low, span.high, span.above, span.vendor, None)

    def _reread(
        self,
        low: datetime,
        high: datetime,
        above: int,
        vendor: int | None,
        local: int | None,
    ) -> None:
        name = self.config.name
        log.info(
            "reconcile_reread",
            source=name,
            since=low.isoformat(),
            until=high.isoformat(),
            vendor=vendor,
            local=local,
        )
        older = min(high, self.boundary)
        before = self.store.stored_in_span(name, low, older) if low < older else 0
        began = self.clock()
        listed = Listed(whole=True)
        pages = self.source.window_pages(low, high, {}, began, end_total=above)
        progress = drive(
            self.store, name, listed.watch(pages), NoCursor(), clock=self.clock, stop=self.stop
        )
        self.written += progress.written
        self.reread += 1
        if low < older:
            self.late += self.store.stored_in_span(name, low, older) - before
        self.deleted += mark_deleted(
            self.store, name, low, high, self.source.listed_codes, listed, began, self.clock()
        )


def reconcile_due(config: SourceConfig, reconciled_at: datetime | None, now: datetime) -> bool:
    """Due ``reconcile_every`` after the last one (or after the first successful pass)."""
    if reconciled_at is None or config.reconcile_days <= 0:
        return False
    return now >= reconciled_at + timedelta(seconds=config.reconcile_every)


def reconcile_if_due(
    store: Store,
    config: SourceConfig,
    *,
    runtime: SourceRuntime,
    clock: Clock = utcnow,
    stop: threading.Event | None = None,
) -> ReconcileReport | None:
    """Run the scheduled reconciliation of the last ``reconcile_days`` when it is due.

    One ended by ``stop`` is not recorded as done: it is due again next pass.
    """
    now = clock()
    state = store.load_state(config.name)
    if not reconcile_due(config, state.reconciled_at, now):
        return None
    since = now - timedelta(days=config.reconcile_days)
    if config.start is not None:
        since = max(since, config.start)
    report = reconcile(
        store, config, since=since, until=now, runtime=runtime, clock=clock, stop=stop
    )
    if not report.stopped:
        store.record_reconciled(config.name, clock())
    return report


class _RequestCounter:
    """Counts the requests a client sends while attached (token refreshes included)."""

    def __init__(self, client: httpx.Client) -> None:
        self.count = 0
        self._client = client
        client.event_hooks["request"].append(self._seen)

    def _seen(self, request: httpx.Request) -> None:
        self.count += 1

    def detach(self) -> None:
        hooks = self._client.event_hooks["request"]
        if self._seen in hooks:
            hooks.remove(self._seen)
