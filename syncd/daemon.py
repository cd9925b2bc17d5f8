"""``syncd run``: the scheduler, the HTTP server and the webhook fetcher, wired and stopped.

What each part does lives in its module: :mod:`syncd.scheduler` (passes on
APScheduler, backoff, ``max_pass_duration``), :mod:`syncd.web` (routes on
cheroot), :mod:`syncd.webhooks` (verification and the background fetch),
:mod:`syncd.metrics` (the Prometheus registry). This module builds them from
the settings and runs the lifecycle of the contract: start, serve until
SIGTERM/SIGINT, then stop scheduling, end every wait, let each page in hand
commit (locks are released as each pass ends), close the HTTP server, and
return well within 10 s.
"""

from __future__ import annotations

import resource
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import FrameType

import sqlalchemy as sa
import structlog

from syncd import __version__
from syncd.api import StatusRoutes
from syncd.config import Settings
from syncd.db import migrate as migrations
from syncd.db.engine import first_line
from syncd.db.overview import Overview, load_overview
from syncd.db.store import Store
from syncd.engine import utcnow
from syncd.errors import SyncdError
from syncd.metrics import Metrics
from syncd.readiness import Readiness
from syncd.scheduler import PassScheduler, TransportFactory
from syncd.web import App, Routes, make_server
from syncd.webhooks import Answer, WebhookFetcher

log = structlog.get_logger(__name__)

# Passes get this long to commit the page in hand after SIGTERM; the HTTP
# server and the rest of the stop fit in what is left of the contract's 10 s.
STOP_GRACE = 7.0
HTTP_STOP_WAIT = 1.0  # then the HTTP server's workers are abandoned (daemon threads)
POOL_CLOSE_WAIT = 0.5  # closing pooled connections to a database that does not answer
HTTP_THREADS = 8
WEBHOOK_WORKERS = 2


class Daemon:
    """Everything ``syncd run`` runs, for one database and one configuration."""

    def __init__(
        self,
        settings: Settings,
        engine: sa.Engine,
        *,
        host: str,
        port: int,
        transport: TransportFactory | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = Store(engine)
        self.metrics = Metrics()
        self.head = migrations.head_revision()
        self.passes = PassScheduler(
            self.store,
            settings.sources,
            workers=settings.daemon.workers,
            metrics=self.metrics,
            transport=transport,
            clock=clock,
        )
        self.fetcher = WebhookFetcher(
            self.store,
            self.passes.runtime,
            self.passes.configs(),
            self.metrics,
            self.passes.webhook_hooks,
            stop=self.passes.stopping,
            workers=WEBHOOK_WORKERS,
            clock=clock,
        )
        secrets = {
            s.name: s.webhook_secret.reveal().encode()
            for s in settings.sources
            if s.kind == "doorflow" and s.webhook_secret is not None
        }
        names = frozenset(s.name for s in settings.sources)
        self.readiness = Readiness(self._schema_problem)
        routes = Routes(
            healthy=lambda: self.passes.running,
            not_ready=self.not_ready,
            webhook_secret=secrets.get,
            is_source=names.__contains__,
            on_webhook=self._on_webhook,
            metrics=self.metrics,
            status=StatusRoutes(self._overview),
        )
        self.server = make_server(App(routes), host, port, threads=HTTP_THREADS)
        self._gate = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-webhook-gate")
        self._serving: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.bind_addr[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind the HTTP port (one clear error if taken), then serve and schedule."""
        _raise_open_files_limit()
        try:
            self.server.prepare()
        except OSError as exc:
            host, port = self.server.bind_addr[:2]
            raise SyncdError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._serving = threading.Thread(target=self.server.serve, name="syncd-http", daemon=True)
        self._serving.start()
        self.passes.start()
        host, port = self.address
        log.info(
            "daemon_started",
            version=__version__,
            listen=f"{host}:{port}",
            sources=len(self.settings.sources),
            workers=self.settings.daemon.workers,
            database=self.engine.dialect.name,
        )

    def stop(self, grace: float = STOP_GRACE) -> bool:
        """The contract's stop; True when every pass ended within ``grace``.

        Every step is bounded, so a database that stopped answering (a pass
        blocked in a query, an HTTP worker in a request) cannot hold the
        process: what is in hand is then lost, never half-committed (the
        database rolls the open transaction back), and the next pass redoes it.
        """
        log.info("daemon_stopping", running_passes=self.passes.busy())
        clean = self.passes.stop(grace)
        self._gate.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()
        # cheroot's stop joins a worker it could not stop without a timeout.
        clean &= _bounded(self.server.stop, HTTP_STOP_WAIT, "http_server")
        if self._serving is not None:
            self._serving.join(timeout=0.5)
        clean &= _bounded(self.engine.dispose, POOL_CLOSE_WAIT, "database_pool")
        log.info("daemon_stopped", clean=clean, abandoned_passes=self.passes.busy())
        return clean

    def not_ready(self) -> str | None:
        """None when the database answers with the head schema; else why not.

        Bounded in time (:class:`~syncd.readiness.Readiness`): the HTTP worker
        that asks never waits on a database that does not answer.
        """
        if self.passes.stopping.is_set():
            return "stopping"
        return self.readiness.check()

    def _schema_problem(self) -> str | None:
        try:
            current = migrations.current_revision(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            return f"database unavailable: {first_line(exc)}"
        if current != self.head:
            return f"schema at revision {current or 'none'}, expected {self.head}"
        return None

    def _overview(self) -> Overview:
        """What GET / and /api/v1/sources show: every source of the database."""
        kinds = {s.name: s.kind for s in self.settings.sources}
        return load_overview(self.engine, utcnow(), kinds)

    def _on_webhook(self, source: str, answer: Answer) -> None:
        # The pause is read off the HTTP thread: a slow database never delays
        # the vendor's 200.
        try:
            self._gate.submit(self._fetch_unless_paused, source, answer)
        except RuntimeError:
            # Stopping: never fetched, so never acknowledged. The vendor
            # redelivers it (the only way back for webhook-only codes 50-63);
            # a listable event is also read by the next poll.
            log.info("webhook_not_fetched", source=source, reason="stopping")

    def _fetch_unless_paused(self, source: str, answer: Answer) -> None:
        if self._paused(source):
            # Answered 200 already; the first pass after `syncd resume` reads
            # these events from the stored cursor (webhook-only codes excepted).
            self.metrics.webhook_notifications.labels(source, "paused").inc(
                len(answer.notifications)
            )
            log.info(
                "webhook_deferred",
                source=source,
                reason="paused",
                notifications=len(answer.notifications),
            )
            return
        self.fetcher.submit(source, answer.notifications)

    def _paused(self, source: str) -> bool:
        """Read per webhook (a primary-key lookup): a pause set by any process counts.
        A database that does not answer: fetch as before (the store retries or
        the next poll catches up), never a 5xx to the vendor."""
        from syncd.db.pauses import paused

        try:
            return paused(self.store, source) is not None
        except sa.exc.SQLAlchemyError as exc:
            log.warning("pause_not_read", source=source, error=first_line(exc))
            return False


def _bounded(step: Callable[[], object], seconds: float, what: str) -> bool:
    """Run ``step`` in a daemon thread, waiting ``seconds`` at most; True if it ended."""
    thread = threading.Thread(target=step, name=f"syncd-stop-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        log.warning("stop_step_abandoned", step=what, waited_s=seconds)
        return False
    return True


def _raise_open_files_limit(wanted: int = 65536) -> None:
    """Each source keeps a keep-alive connection to its vendor: 1,000 sources need
    more descriptors than a soft limit of 1024 gives. Raise it toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(daemon: Daemon) -> bool:
    """Run ``daemon`` until SIGTERM or SIGINT (main thread only); True on a clean stop."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.start()
        while not stop.wait(0.5):  # a timed wait: signal handlers run promptly
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return daemon.stop()
