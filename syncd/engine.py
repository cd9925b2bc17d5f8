"""One pass of one source: lock, read the cursor, pages -> store, record the outcome.

The engine knows nothing about any vendor. It asks the connector for pages and
commits each page's rows with the cursor that follows them, so a pass stopped
anywhere (exception, SIGKILL, power loss) resumes on the next run from the
last committed page without losing or duplicating anything. The connector
runs a few pages ahead in a thread (:mod:`syncd.prefetch`) so fetching
overlaps writing, and the pages that arrived during one commit go into the
next one together; memory holds a few pages, whatever the backlog.

Three shapes of work share one loop, :func:`drive`: the live pass (pages
commit with the live cursor, ``sync_state.cursor``), a backfill window (pages
commit with the window's position, :mod:`syncd.backfill`) and a
reconciliation re-read (pages commit with no position at all). What differs
is the :class:`CursorSink` the loop is handed.

A source's :class:`SourceRuntime` (HTTP client and its connection pool, the
credentials and their access token, the retry policy, the connector) is built
once and lent to every pass: the daemon keeps one per source for its whole
life, so an OAuth access token is reused until it nears expiry instead of
being refreshed (and the refresh token rotated) on every pass. The OAuth
grant itself is not the runtime's: it lives in ``sync_state``, shared by
every process using the source (:class:`syncd.db.store.StoredCredentials`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import sqlalchemy as sa
import structlog

from syncd import __version__
from syncd.config import SourceConfig
from syncd.db.store import SourceState, Store, StoredCredentials, WriteResult
from syncd.errors import RateLimited, SourceError, WaitInterrupted
from syncd.prefetch import prefetched_batches
from syncd.sources import source_class
from syncd.sources.auth import SharedOAuth
from syncd.sources.base import Page, Source, SourceContext
from syncd.sources.deadline import deadline_hooks
from syncd.sources.http import RetryHooks

if TYPE_CHECKING:
    from syncd.reconcile import ReconcileReport

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
DueCheck = Callable[[SourceState, datetime], bool]
EventHooks = Mapping[str, list[Callable[..., Any]]]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PassResult:
    source: str
    ok: bool
    skipped: bool = False
    written: WriteResult = field(default_factory=WriteResult)
    pages: int = 0
    duration_s: float = 0.0
    error: str | None = None
    kind: str = ""
    reconciled: ReconcileReport | None = None
    retry_after: float | None = None
    """A pass that failed on a 429: the wait the vendor asked for (its last word)."""
    paused: bool = False
    """Not run because the source is paused (``syncd pause``); ``skipped`` too."""
    stopped: bool = False
    """Asked to stop (Ctrl-C, shutdown, ``max_pass_duration``): what committed stays."""


def make_client(
    config: SourceConfig,
    transport: httpx.BaseTransport | None = None,
    event_hooks: EventHooks | None = None,
) -> httpx.Client:
    """The HTTP client a connector gets: base URL, timeouts, our User-Agent.

    Redirects stay off (httpx's default): a vendor API that redirects is
    misconfigured, and following one could send credentials elsewhere.
    Certificates are verified against httpx's default trust store, or the
    source's ``ca_file`` (:meth:`SourceConfig.tls_verify`); a ``transport``
    given brings its own verification (the daemon's, built the same way).
    ``timeout`` bounds each request as a whole, connect to last body byte
    (:mod:`syncd.sources.deadline`), not each read.
    """
    hooks = deadline_hooks(config.timeout)
    for key, value in (event_hooks or {}).items():
        hooks.setdefault(key, []).extend(value)
    return httpx.Client(
        base_url=config.base_url,
        verify=config.tls_verify() if transport is None else True,
        timeout=httpx.Timeout(config.timeout),
        headers={"User-Agent": f"syncd/{__version__}", "Accept": "application/json"},
        transport=transport,
        event_hooks=hooks,
    )


def build_source(
    config: SourceConfig,
    client: httpx.Client,
    store: Store,
    state: SourceState,
    clock: Clock = utcnow,
    retry_hooks: RetryHooks | None = None,
) -> Source:
    context = SourceContext(
        codes=store.load_codes(config.kind),
        refresh_token=state.refresh_token,
        refresh_token_origin=state.refresh_token_origin,
        save_refresh_token=lambda token, origin: store.save_refresh_token(
            config.name, token, clock(), origin
        ),
        retry_hooks=retry_hooks,
        credentials=StoredCredentials(store, config.name, clock),
    )
    return source_class(config.kind)(config, client, context)


class SourceRuntime:
    """What one source keeps across passes: client, credentials, connector.

    Built once per source (per process) and lent to each pass; ``close()``
    releases the connection pool. A one-shot command builds one for its
    single pass.
    """

    def __init__(self, config: SourceConfig, client: httpx.Client, source: Source) -> None:
        self.config = config
        self.client = client
        self.source = source

    @classmethod
    def open(
        cls,
        store: Store,
        config: SourceConfig,
        *,
        clock: Clock = utcnow,
        transport: httpx.BaseTransport | None = None,
        event_hooks: EventHooks | None = None,
        state: SourceState | None = None,
        retry_hooks: RetryHooks | None = None,
    ) -> SourceRuntime:
        client = make_client(config, transport, event_hooks)
        try:
            loaded = state if state is not None else store.load_state(config.name)
            source = build_source(config, client, store, loaded, clock, retry_hooks)
        except BaseException:
            client.close()
            raise
        return cls(config, client, source)

    def close(self) -> None:
        try:
            self._save_unsaved_grant()
        finally:
            self.client.close()

    def _save_unsaved_grant(self) -> None:
        """A rotated OAuth token whose save failed gets a last try before the process forgets it."""
        auth = self.client.auth
        if not isinstance(auth, SharedOAuth) or auth.unsaved is None:
            return
        try:
            auth.save_unsaved()
        except SourceError as exc:
            log.error(
                "oauth_token_not_saved",
                source=self.config.name,
                error=describe_error(exc),
                hint=f"authorize again: syncd auth doorflow --source {self.config.name}",
            )

    def __enter__(self) -> SourceRuntime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the one loop ----------------------------------------------------------------


class CursorSink(Protocol):
    """Where the position after each page is committed, in the page's transaction."""

    def save(self, conn: sa.Connection, cursor: Mapping[str, Any], now: datetime) -> None: ...


@dataclass(frozen=True)
class LiveCursor:
    """The live pass's sink: ``sync_state.cursor`` of ``source``."""

    store: Store
    source: str

    def save(self, conn: sa.Connection, cursor: Mapping[str, Any], now: datetime) -> None:
        self.store.save_cursor(conn, self.source, dict(cursor), now)


class NoCursor:
    """A sink that keeps no position: reconciliation re-reads are idempotent."""

    def save(self, conn: sa.Connection, cursor: Mapping[str, Any], now: datetime) -> None:
        return None


@dataclass(frozen=True)
class Progress:
    written: WriteResult = field(default_factory=WriteResult)
    pages: int = 0
    stopped: bool = False
    likely_new: bool = False


# A commit unit: the pages already fetched while the last commit ran, up to
# this many rows. A cold load (the database is the slower side) commits
# several pages per transaction, paying the per-transaction round trips once
# for all of them; a pass that is caught up (the vendor is the slower side)
# commits each page as soon as it arrives. No page ever waits for a later one,
# so the time a fetched row waits for its commit stays bounded by one commit.
COMMIT_ROWS = 5_000
# Pages fetched ahead at most: memory holds these, the unit being written and
# the page being built, whatever the backlog.
PREFETCH_PAGES = 4


def drive(
    store: Store,
    source: str,
    pages: Iterator[Page],
    sink: CursorSink,
    *,
    clock: Clock = utcnow,
    stop: threading.Event | None = None,
    on_page: Callable[[Page, WriteResult], None] | None = None,
    commit_rows: int = COMMIT_ROWS,
) -> Progress:
    """Commit ``pages`` in order, rows with the sink's position after them.

    Pages are committed in units (:data:`COMMIT_ROWS`): one transaction holds
    one or more consecutive pages and the position after the last of them,
    so every row still commits together with a cursor that covers it.
    ``on_page`` is called once per commit, with the unit as one page.
    ``stop`` is checked between commits: when set, the loop ends after the
    unit in hand is committed, and while waiting for the next page it ends
    at once (a request or retry wait in progress is abandoned: nothing of it
    was committed). Exceptions propagate; everything committed before them
    stays.
    """
    progress = Progress()
    try:
        for unit in prefetched_batches(
            pages, depth=PREFETCH_PAGES, limit=commit_rows, weight=_page_rows, stop=stop
        ):
            progress = _commit(store, source, unit, sink, clock(), progress, on_page)
            if stop is not None and stop.is_set():
                break
    except WaitInterrupted:
        if stop is None or not stop.is_set():
            raise
        # The producer's retry wait ended on this stop before the loop noticed it.
    if stop is not None and stop.is_set():
        log.info("pass_stopping", source=source, reason="stop requested")
        return replace(progress, stopped=True)
    return progress


def _commit(
    store: Store,
    source: str,
    unit: list[Page],
    sink: CursorSink,
    now: datetime,
    progress: Progress,
    on_page: Callable[[Page, WriteResult], None] | None,
) -> Progress:
    """One commit unit: its rows and the position after its last page, in one transaction."""
    page = _joined(unit)
    written = store.write_page(
        source,
        page.records,
        page.rejected,
        page.cursor,
        now,
        sink=sink,
        likely_new=progress.likely_new,
    )
    log.info(
        "page_committed",
        source=source,
        pages=len(unit),
        rows=len(page.records),
        inserted=written.inserted,
        updated=written.updated,
        unchanged=written.unchanged,
        rejected=written.rejected,
    )
    if on_page is not None:
        on_page(page, written)
    # A unit whose rows were all new predicts the next one's.
    likely_new = written.inserted > 0 and written.inserted == len(page.records)
    return Progress(progress.written + written, progress.pages + len(unit), likely_new=likely_new)


def _page_rows(page: Page) -> int:
    return len(page.records) + len(page.rejected)


def _joined(unit: list[Page]) -> Page:
    """Consecutive pages as one: their rows, and the position after the last."""
    if len(unit) == 1:
        return unit[0]
    return Page(
        [record for page in unit for record in page.records],
        [item for page in unit for item in page.rejected],
        unit[-1].cursor,
    )


# -- the live pass ---------------------------------------------------------------


def run_pass(
    store: Store,
    config: SourceConfig,
    *,
    clock: Clock = utcnow,
    transport: httpx.BaseTransport | None = None,
    stop: threading.Event | None = None,
    runtime: SourceRuntime | None = None,
    due: DueCheck | None = None,
) -> PassResult:
    """Run one incremental pass of ``config``'s source; never raises for its failures.

    ``runtime`` is the source's long-lived runtime (the daemon's); without
    one, a runtime is built for this pass and closed after it. ``due`` (the
    daemon's) is asked under the lock, with the stored state and now, whether
    the pass is still due: another replica may have just made it, and then
    this one is skipped. Without it (``syncd sync``) the pass always runs. Any exception
    in the pass, expected or not, is recorded as this source's failure
    (``sync_state.last_error``) and returned, so one source never stops
    another.
    """
    if _is_paused(store, config.name):
        return PassResult(config.name, ok=True, skipped=True, kind=config.kind, paused=True)
    with store.source_lock(config.name) as acquired:
        if not acquired:
            log.info("pass_skipped", source=config.name, reason="locked by another process")
            return PassResult(config.name, ok=True, skipped=True, kind=config.kind)
        return _locked_pass(store, config, clock, transport, stop, runtime, due)


def _is_paused(store: Store, source: str) -> bool:
    """Read before the lock, by every process each round: a pause set anywhere
    stops this source's vendor calls within one interval (no lock, no request)."""
    from syncd.db.pauses import paused

    if paused(store, source) is None:
        return False
    log.info("pass_skipped", source=source, reason="paused")
    return True


def _locked_pass(
    store: Store,
    config: SourceConfig,
    clock: Clock,
    transport: httpx.BaseTransport | None,
    stop: threading.Event | None,
    runtime: SourceRuntime | None,
    due: DueCheck | None = None,
) -> PassResult:
    started = time.perf_counter()
    now = clock()
    progress = Progress()
    # Read after the lock is held: another replica may have just moved it.
    state = store.load_state(config.name)
    if due is not None and not due(state, now):
        log.info("pass_skipped", source=config.name, reason="passed by another process")
        return PassResult(config.name, ok=True, skipped=True, kind=config.kind)
    log.info("pass_started", source=config.name, kind=config.kind, cursor=state.cursor)
    own = runtime is None
    reconciled = None
    try:
        # Every pass says when it began, so replicas can tell it is done this round.
        store.record_pass_started(config.name, now)
        if runtime is None:
            # The pass's stop ends its retry waits too (a daemon's runtime
            # comes with its own stop wired in).
            hooks = RetryHooks(stop=stop) if stop is not None else None
            runtime = SourceRuntime.open(
                store, config, clock=clock, transport=transport, state=state, retry_hooks=hooks
            )
        progress = drive(
            store,
            config.name,
            runtime.source.pages(state.cursor, now),
            LiveCursor(store, config.name),
            clock=clock,
            stop=stop,
        )
        if not progress.stopped:
            store.record_success(config.name, clock())
            reconciled = _reconcile_if_due(store, config, runtime, clock, stop)
    except WaitInterrupted:
        # Asked to stop (shutdown, or the pass ran past max_pass_duration)
        # during a retry wait: what was committed stays; not a failure.
        log.info("pass_stopping", source=config.name, reason="stopped during a retry wait")
        progress = Progress(progress.written, progress.pages, stopped=True)
    except Exception as exc:  # recorded as this source's failure, never propagated
        return _failed(store, config, clock, progress, started, exc)
    finally:
        if own and runtime is not None:
            runtime.close()
    duration = time.perf_counter() - started
    total = progress.written
    log.info(
        "pass_finished",
        source=config.name,
        pages=progress.pages,
        inserted=total.inserted,
        updated=total.updated,
        unchanged=total.unchanged,
        rejected=total.rejected,
        stopped=progress.stopped,
        duration_s=round(duration, 3),
    )
    return PassResult(
        config.name,
        ok=True,
        written=total,
        pages=progress.pages,
        duration_s=duration,
        kind=config.kind,
        reconciled=reconciled,
        stopped=progress.stopped,
    )


def _reconcile_if_due(
    store: Store,
    config: SourceConfig,
    runtime: SourceRuntime,
    clock: Clock,
    stop: threading.Event | None,
) -> ReconcileReport | None:
    """The scheduled reconciliation, inside the pass's lock, ended by the pass's stop
    (a shutdown, ``max_pass_duration``) like the pass itself."""
    if stop is not None and stop.is_set():
        return None
    from syncd.reconcile import reconcile_if_due

    return reconcile_if_due(store, config, runtime=runtime, clock=clock, stop=stop)


def describe_error(exc: BaseException) -> str:
    """One line for ``last_error`` and the CLI: the type, then what it said.

    A database error gives its driver's first line only: never the statement
    nor its parameters (which can be secrets, such as a rotated refresh token).
    """
    if isinstance(exc, sa.exc.SQLAlchemyError):
        from syncd.db.engine import first_line

        return f"{type(exc).__name__}: {first_line(exc)}"  # not the SQL nor the doc link
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text[:300]}"


def _failed(
    store: Store,
    config: SourceConfig,
    clock: Clock,
    progress: Progress,
    started: float,
    exc: Exception,
) -> PassResult:
    message = describe_error(exc)
    expected = isinstance(exc, SourceError)
    try:
        store.record_failure(config.name, message, clock())
    except Exception as db_exc:  # the database itself may be what failed
        log.warning("failure_not_recorded", source=config.name, error=describe_error(db_exc))
    duration = time.perf_counter() - started
    # A warning, not an error: the caller reports the failure (the CLI's one
    # line, the daemon's metrics); the log keeps the details. An unexpected
    # exception is a bug: its traceback goes to the log, never to the user.
    log.warning(
        "pass_failed",
        source=config.name,
        error_type=type(exc).__name__,
        # A database error's text is its driver's first line (describe_error):
        # str() of SQLAlchemy's would carry the statement and its parameters.
        error=message if isinstance(exc, sa.exc.SQLAlchemyError) else str(exc),
        pages=progress.pages,
        inserted=progress.written.inserted,
        duration_s=round(duration, 3),
        exc_info=not expected,
    )
    return PassResult(
        config.name,
        ok=False,
        written=progress.written,
        pages=progress.pages,
        duration_s=duration,
        error=str(exc) if expected else message,
        kind=config.kind,
        retry_after=exc.retry_after if isinstance(exc, RateLimited) else None,
    )
