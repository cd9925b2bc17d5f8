"""Reconciliation: find what the vendor has that the table lacks, cheaply.

A live pass re-reads only ``lookback`` behind its watermark, so an event an
offline controller uploads later than that is never listed by a pass. This
module finds such events without re-reading history:

1. For a span ``[since, until)`` compare the vendor's count
   (:meth:`~syncd.sources.base.Source.vendor_count`) with what syncd holds
   there (:meth:`~syncd.db.store.Store.count_span`: stored events of the
   codes the vendor lists, plus rejected records whose time was readable).
2. Equal: the span is complete; nothing more is asked. Different (either
   way: a surplus can hide a gap next to it): split the span in two and
   compare each half.
3. A span the vendor counts at most :data:`REREAD_PAGES` pages of events
   for (or one second long) is re-read in full through the same page loop
   as every other write, so what was missing is upserted and what was
   there is untouched. Re-reading three pages costs about what splitting
   once more costs (two spans, two probes each), so below that, reading wins.

On a complete history this costs two count probes for the whole span. Each
difference costs about two probes per halving down to one page, so requests
grow with the logarithm of the span. Rejected records whose time could not
be read are the one thing no count can place; the vendor counts them in
their true span, syncd nowhere, so bisection walks down to that span and
re-reads it (a few requests per such record per reconciliation). They can
never *mask* a missing event: masking needs a local surplus, and a record
without a time adds to no span.

Spans are checked oldest first, each count probe asking the upper bound
first, so an event arriving during the check can only make the vendor look
ahead (an extra re-read), never hide a gap.

IntServ has no count to compare: its ``least_sync_time`` cursor already
guarantees that every event before it was delivered, for the systems in
scope, so reconciliation there reports "not needed" and makes no request.
"""

from __future__ import annotations

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
    stopped: bool = False
    """Ended early by a stop (the pass's ``max_pass_duration``, a shutdown): not finished."""

    @property
    def found(self) -> int:
        """Events that were missing and are now stored."""
        return self.written.inserted

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "supported": self.supported,
            "spans_checked": self.spans_checked,
            "spans_reread": self.spans_reread,
            "found": self.found,
            "updated": self.written.updated,
            "rejected": self.written.rejected,
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "note": self.note,
            "stopped": self.stopped,
        }

    def summary(self) -> str:
        if not self.supported:
            return f"{self.source}: {self.note}"
        return (
            f"{self.source}: {counted(self.spans_checked, 'span')} checked, "
            f"{self.spans_reread:,} re-read, {counted(self.found, 'missing event')} found, "
            f"{self.written.updated:,} updated, {counted(self.requests, 'vendor request')}, "
            f"{self.duration_s:.1f}s"
        )


NOT_NEEDED = (
    "reconciliation not needed: the vendor offers no counts, and its least_sync_time "
    "cursor already guarantees every event before it was delivered"
)


def split(since: datetime, until: datetime) -> datetime:
    """The midpoint of a span, on a whole second, strictly inside it."""
    middle = since + (until - since) / 2
    middle = middle.replace(microsecond=0)
    return middle if middle > since else since + MIN_SPAN


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
        report = _bisect(store, config, runtime, since, until, clock, stop)
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


def _bisect(
    store: Store,
    config: SourceConfig,
    runtime: SourceRuntime,
    since: datetime,
    until: datetime,
    clock: Clock,
    stop: threading.Event | None = None,
) -> ReconcileReport:
    source = runtime.source
    spans = [(since, until)]
    checked = reread = 0
    written = WriteResult()
    while spans:
        if stop is not None and stop.is_set():
            log.info("reconcile_stopping", source=config.name, spans_left=len(spans))
            return ReconcileReport(
                config.name, since, until, spans_checked=checked, spans_reread=reread,
                written=written, stopped=True,
            )  # fmt: skip
        low, high = spans.pop()
        vendor = source.vendor_count(low, high)
        if vendor is None:
            return ReconcileReport(config.name, since, until, supported=False, note=NOT_NEEDED)
        checked += 1
        local = store.count_span(config.name, low, high, source.listed_codes)
        if vendor == local:
            continue
        if vendor <= REREAD_PAGES * config.page_size or high - low <= MIN_SPAN:
            log.info(
                "reconcile_reread",
                source=config.name,
                since=low.isoformat(),
                until=high.isoformat(),
                vendor=vendor,
                local=local,
            )
            pages = source.window_pages(low, high, {}, clock())
            written += drive(store, config.name, pages, NoCursor(), clock=clock, stop=stop).written
            reread += 1
            continue
        middle = split(low, high)
        spans.extend([(middle, high), (low, middle)])  # oldest first: popped next
    return ReconcileReport(
        config.name, since, until, spans_checked=checked, spans_reread=reread, written=written
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
