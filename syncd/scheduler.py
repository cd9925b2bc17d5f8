"""Every source on a schedule: the pass side of ``syncd run`` (and ``demo --keep-running``).

Scheduling is APScheduler 3's ``BackgroundScheduler`` with its in-memory job
store: one job per source, every ``interval`` seconds plus a jitter of at
most 10 %, the first pass of each spread over the first interval (at most
:data:`FIRST_PASS_SPREAD` seconds), ``max_instances=1`` (never two passes of
one source in this process), coalesced, on a thread pool of ``[daemon]
workers``. Replicas never share a job store (APScheduler's FAQ: that runs
jobs twice); they coordinate through the source lock the engine takes
(PostgreSQL advisory lock), so a source whose lock another process holds is
skipped this round and picked up by whoever is free next round. A replica
that gets the lock just after another finished re-checks under it that the
pass is still due (:func:`pass_due`), so all replicas together make one pass
per source per interval.

Each source keeps one :class:`~syncd.engine.SourceRuntime` for the life of
the process (HTTP client and pool, credentials and access token, retry
policy) and one stop event that ends its retry waits at once: the daemon
sets it on SIGTERM, and the watchdog sets it when a pass runs past
``max_pass_duration`` (the pass then ends after the page in hand, its lock
released). A failing source is retried after a growing backoff
(:func:`backoff_delay`) and recovers by itself; a database outage is just
failing passes.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import SourceConfig
from syncd.db.schema import events
from syncd.db.store import SourceState, Store
from syncd.engine import PassResult, SourceRuntime, describe_error, run_pass, utcnow
from syncd.metrics import CountingTransport, Metrics
from syncd.sources.http import RetryHooks

log = structlog.get_logger(__name__)

# A pass that outlasts its interval makes APScheduler warn at every missed
# run ("maximum number of running instances reached"): with max_instances=1
# and coalescing that is the intended behaviour, not news.
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)

FIRST_PASS_SPREAD = 60.0  # seconds: the first passes start within this, spread
JITTER_SHARE = 0.1
BACKOFF_MAX_FACTOR = 5.0
BACKOFF_MAX_SECONDS = 300.0
WATCH_EVERY = 0.5  # seconds between watchdog looks at running passes
# A pass another process began less than this share of the source's wait ago
# is this round's pass: above the jitter (each replica's own fire times drift
# by up to JITTER_SHARE of the interval), well below the next round.
DUE_SHARE = 0.8

TransportFactory = Callable[[SourceConfig], httpx.BaseTransport]


def shared_tls_transports() -> TransportFactory:
    """Transports that share TLS contexts: building a context costs ~0.2 s of CPU
    and a few hundred kB, once per source otherwise (1,000 sources: minutes).
    One context per distinct ``ca_file`` (None: httpx's default trust store)."""
    contexts: dict[Path | None, ssl.SSLContext] = {}
    lock = threading.Lock()

    def transport(config: SourceConfig) -> httpx.BaseTransport:
        with lock:
            context = contexts.get(config.ca_file)
            if context is None:
                context = contexts[config.ca_file] = config.tls_verify()
        return httpx.HTTPTransport(verify=context)

    return transport


def backoff_delay(failures: int, interval: float) -> float:
    """Seconds until the next pass of a source that failed ``failures`` times in a row.

    ``interval`` after the first failure, doubling after each further one,
    capped at 5 x the interval and at 300 s (so an interval above 300 s is
    retried sooner after a failure, never later).
    """
    if failures <= 0:
        return interval
    grown = interval * 2.0 ** min(failures - 1, 32)
    return min(grown, BACKOFF_MAX_FACTOR * interval, BACKOFF_MAX_SECONDS)


def next_pass_delay(
    failures: int, interval: float, retry_after: float | None, max_wait: float
) -> float:
    """Seconds until the next pass after a failed one: :func:`backoff_delay`, but
    never sooner than the wait a 429 that ended the pass asked for (capped at
    ``max_wait``, like a wait inside a pass)."""
    delay = backoff_delay(failures, interval)
    if retry_after is None:
        return delay
    return max(delay, min(retry_after, max_wait))


def pass_due(
    state: SourceState,
    now: datetime,
    own_last: datetime | None,
    interval: float,
) -> bool:
    """Whether this process should pass a source now, given its stored state.

    ``state.pass_started_at`` is when the newest pass began, in any process;
    ``own_last`` when this process last began one. The newest pass being our
    own means our schedule decides (it fired: the pass is due, even if the
    worker pool ran the last one late). One begun by another process less
    than :data:`DUE_SHARE` of the wait ago was this round's: skip. The wait
    is the interval, or the failure backoff while the source fails, so
    replicas share a failing source's backoff too.
    """
    last = state.pass_started_at
    if last is None or last == own_last:
        return True
    wait = backoff_delay(state.consecutive_failures, interval)
    return (now - last).total_seconds() >= DUE_SHARE * wait


def first_pass_offsets(intervals: Sequence[float], rng: random.Random) -> list[float]:
    """When each source's first pass starts (seconds from now): spread, soon."""
    return [rng.uniform(0.0, min(interval, FIRST_PASS_SPREAD)) for interval in intervals]


@dataclass(eq=False)
class _Slot:
    """One source's place in the scheduler (mutable, guarded by the scheduler)."""

    config: SourceConfig
    stop: threading.Event = field(default_factory=threading.Event)
    opening: threading.Lock = field(default_factory=threading.Lock)
    runtime: SourceRuntime | None = None
    last_started: datetime | None = None  # when this process last began a pass
    failures: int = 0
    started: float | None = None
    cancelled: bool = False
    newest_known: bool = False


class PassScheduler:
    """Runs every source's passes forever; :meth:`stop` ends them cleanly."""

    def __init__(
        self,
        store: Store,
        sources: Sequence[SourceConfig],
        *,
        workers: int,
        metrics: Metrics | None = None,
        transport: TransportFactory | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_result: Callable[[PassResult], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.transport = transport or shared_tls_transports()
        self.clock = clock
        self.on_result = on_result
        self.rng = rng or random.Random()
        self.stopping = threading.Event()
        self._slots = {config.name: _Slot(config) for config in sources}
        self._guard = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._watchdog = threading.Thread(target=self._watch, name="syncd-watchdog", daemon=True)
        for config in sources:
            self.metrics.add_source(
                config.name, config.kind, webhooks=config.webhook_secret is not None
            )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._load_state()
        now = datetime.now(UTC)
        slots = list(self._slots.values())
        offsets = first_pass_offsets([s.config.interval for s in slots], self.rng)
        for slot, offset in zip(slots, offsets, strict=True):
            interval = slot.config.interval
            self.scheduler.add_job(
                self._run,
                IntervalTrigger(
                    seconds=interval,
                    jitter=JITTER_SHARE * interval,
                    start_date=now + timedelta(seconds=offset),
                    timezone=UTC,
                ),
                args=(slot.config.name,),
                id=slot.config.name,
                name=f"pass {slot.config.name}",
            )
        self.scheduler.start()
        self._watchdog.start()

    def add_job(self, func: Callable[[], object], seconds: float, name: str) -> None:
        """Another periodic job on the same scheduler (the demo's simulated traffic)."""
        self.scheduler.add_job(func, IntervalTrigger(seconds=seconds, timezone=UTC), name=name)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running) and not self.stopping.is_set()

    def stop(self, grace: float) -> bool:
        """Stop scheduling, end every wait, let pages in hand commit; True if all ended."""
        self.stopping.set()
        for slot in self._slots.values():
            slot.stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + grace
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = self.busy()
        for slot in self._slots.values():
            if slot.runtime is not None and slot.started is None:
                slot.runtime.close()
        return not busy

    def busy(self) -> list[str]:
        """The sources with a pass running now."""
        return [name for name, slot in self._slots.items() if slot.started is not None]

    def _load_state(self) -> None:
        """Gauges start from what earlier processes recorded (a down database: at 0)."""
        try:
            states = self.store.all_states()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("state_not_loaded", error=describe_error(exc))
            return
        for name, state in states.items():
            if name in self._slots:
                self.metrics.set_state(name, state.last_success_at, state.consecutive_failures)
                self.metrics.set_paused(name, state.paused_at is not None)

    # -- what the HTTP side borrows --------------------------------------------------

    def configs(self) -> dict[str, SourceConfig]:
        return {name: slot.config for name, slot in self._slots.items()}

    def runtime(self, name: str) -> SourceRuntime:
        """The source's runtime, built on first use and kept."""
        slot = self._slots[name]
        with slot.opening:
            if slot.runtime is None:
                config = slot.config
                counting = CountingTransport(
                    self.transport(config),
                    lambda status: self.metrics.vendor_answered(config.name, status),
                )
                slot.runtime = SourceRuntime.open(
                    self.store,
                    config,
                    clock=self.clock,
                    transport=counting,
                    retry_hooks=RetryHooks(stop=slot.stop, on_retry=self.metrics.retried),
                )
            return slot.runtime

    def webhook_hooks(self, name: str) -> RetryHooks:
        """Webhook fetches wait on the daemon's stop, not on one pass's."""
        return RetryHooks(stop=self.stopping, on_retry=self.metrics.retried)

    # -- one pass --------------------------------------------------------------------

    def _run(self, name: str) -> None:
        slot = self._slots[name]
        if self.stopping.is_set():
            return
        with self._guard:
            slot.stop.clear()
            slot.cancelled = False
            slot.started = time.monotonic()
        if self.stopping.is_set():  # stop() ran between the check and the clear
            slot.stop.set()
        try:
            result = self._pass(slot)
            self._finish(slot, result)
        finally:
            slot.started = None

    def _pass(self, slot: _Slot) -> PassResult:
        config = slot.config
        try:
            runtime = self.runtime(config.name)
            return run_pass(
                self.store,
                config,
                clock=self.clock,
                stop=slot.stop,
                runtime=runtime,
                due=lambda state, now: self._due(slot, state, now),
            )
        except Exception as exc:  # the database is down, or the runtime cannot be built
            log.warning(
                "pass_failed",
                source=config.name,
                error_type=type(exc).__name__,
                error=describe_error(exc),
            )
            return PassResult(config.name, ok=False, error=describe_error(exc), kind=config.kind)

    def _due(self, slot: _Slot, state: SourceState, now: datetime) -> bool:
        """The engine asks under the lock; a yes means this process begins the pass now."""
        if not pass_due(state, now, slot.last_started, slot.config.interval):
            # Another process passed it: mirror what it achieved, so this
            # replica's gauges (and backoff, should it take over) stay current.
            slot.failures = state.consecutive_failures
            self.metrics.set_state(slot.config.name, state.last_success_at, slot.failures)
            return False
        slot.last_started = now
        return True

    def _finish(self, slot: _Slot, result: PassResult) -> None:
        if slot.cancelled:
            result = replace(result, ok=False, error="cancelled: ran past max_pass_duration")
        if not result.skipped:
            slot.failures = 0 if result.ok else slot.failures + 1
        now = self.clock()
        self.metrics.pass_finished(result, slot.failures, now)
        # Reconciliation, when due, ran inside the pass (the engine's, under its lock).
        if result.ok and not result.skipped:
            if result.written.inserted or not slot.newest_known:
                self._update_newest(slot)
        elif not result.ok and not self.stopping.is_set() and not slot.cancelled:
            # A pass cut by max_pass_duration kept what it committed and is
            # counted as failed, but the next starts on schedule: a backoff
            # would only slow a long catch-up down (issue 20).
            self._back_off(slot, result.retry_after)
        if self.on_result is not None:
            self.on_result(result)

    def _back_off(self, slot: _Slot, retry_after: float | None) -> None:
        config = slot.config
        delay = next_pass_delay(slot.failures, config.interval, retry_after, config.max_retry_wait)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        try:
            self.scheduler.modify_job(slot.config.name, next_run_time=when)
        except Exception as exc:  # the scheduler is shutting down
            log.debug("backoff_not_scheduled", source=slot.config.name, error=describe_error(exc))
            return
        log.info(
            "pass_backoff",
            source=slot.config.name,
            consecutive_failures=slot.failures,
            next_in_s=round(delay, 1),
        )

    def _update_newest(self, slot: _Slot) -> None:
        query = sa.select(sa.func.max(events.c.occurred_at)).where(
            events.c.source == slot.config.name
        )
        try:
            with self.store.engine.connect() as conn:
                newest = conn.execute(query).scalar()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("newest_not_read", source=slot.config.name, error=describe_error(exc))
            return
        if isinstance(newest, str):  # SQLite's max() returns the stored text
            newest = datetime.fromisoformat(newest).replace(tzinfo=UTC)
        slot.newest_known = True
        self.metrics.observe_newest(slot.config.name, newest)

    # -- max_pass_duration -----------------------------------------------------------

    def _watch(self) -> None:
        while not self.stopping.wait(WATCH_EVERY):
            self.cancel_overdue(time.monotonic())

    def cancel_overdue(self, now: float) -> list[str]:
        """Stop every pass running longer than its ``max_pass_duration``."""
        cancelled = []
        with self._guard:
            for name, slot in self._slots.items():
                started = slot.started
                if started is None or slot.cancelled:
                    continue
                if now - started > slot.config.max_pass_duration:
                    slot.cancelled = True
                    slot.stop.set()
                    cancelled.append(name)
        for name in cancelled:
            self.metrics.passes_cancelled.labels(name).inc()
            log.warning(
                "pass_cancelled",
                source=name,
                max_pass_duration_s=self._slots[name].config.max_pass_duration,
            )
        return cancelled
