"""One pass of one source: lock, read the cursor, pages -> store, record the outcome.

The engine knows nothing about any vendor. It asks the connector for pages and
commits each page's rows with the cursor that follows them, so a pass stopped
anywhere (exception, SIGKILL, power loss) resumes on the next run from the
last committed page without losing or duplicating anything. The connector
runs one page ahead in a thread (:mod:`syncd.prefetch`) so fetching overlaps
writing; memory holds a couple of pages, whatever the backlog.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import httpx
import structlog

from syncd import __version__
from syncd.config import SourceConfig
from syncd.db.store import SourceState, Store, WriteResult
from syncd.errors import SourceError
from syncd.prefetch import prefetched
from syncd.sources import source_class
from syncd.sources.base import Source, SourceContext

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


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


def make_client(config: SourceConfig, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The HTTP client a connector gets: base URL, timeouts, our User-Agent."""
    return httpx.Client(
        base_url=config.base_url,
        timeout=httpx.Timeout(config.timeout),
        headers={"User-Agent": f"syncd/{__version__}", "Accept": "application/json"},
        transport=transport,
    )


def build_source(
    config: SourceConfig,
    client: httpx.Client,
    store: Store,
    state: SourceState,
    clock: Clock = utcnow,
) -> Source:
    context = SourceContext(
        codes=store.load_codes(config.kind),
        count_local=partial(store.count_events, config.name),
        count_unplaced=partial(store.count_unplaced, config.name),
        refresh_token=state.refresh_token,
        refresh_token_origin=state.refresh_token_origin,
        save_refresh_token=lambda token, origin: store.save_refresh_token(
            config.name, token, clock(), origin
        ),
    )
    source: Source = source_class(config.kind)(config, client, context)
    return source


def run_pass(
    store: Store,
    config: SourceConfig,
    *,
    clock: Clock = utcnow,
    transport: httpx.BaseTransport | None = None,
    stop: threading.Event | None = None,
) -> PassResult:
    """Run one incremental pass of ``config``'s source; never raises for vendor errors.

    ``stop`` is checked between pages: when set, the pass ends after the page
    in hand is committed (the daemon's clean shutdown).
    """
    with store.source_lock(config.name) as acquired:
        if not acquired:
            log.info("pass_skipped", source=config.name, reason="locked by another process")
            return PassResult(config.name, ok=True, skipped=True)
        return _locked_pass(store, config, clock, transport, stop)


def _locked_pass(
    store: Store,
    config: SourceConfig,
    clock: Clock,
    transport: httpx.BaseTransport | None,
    stop: threading.Event | None,
) -> PassResult:
    started = time.perf_counter()
    now = clock()
    total = WriteResult()
    pages = 0
    state = store.load_state(config.name)
    log.info("pass_started", source=config.name, kind=config.kind, cursor=state.cursor)
    try:
        with make_client(config, transport) as client:
            source = build_source(config, client, store, state, clock)
            for page in prefetched(source.pages(state.cursor, now)):
                written = store.write_page(
                    config.name, page.records, page.rejected, page.cursor, clock()
                )
                total += written
                pages += 1
                log.info(
                    "page_committed",
                    source=config.name,
                    rows=len(page.records),
                    inserted=written.inserted,
                    updated=written.updated,
                    unchanged=written.unchanged,
                    rejected=written.rejected,
                    cursor=page.cursor,
                )
                if stop is not None and stop.is_set():
                    log.info("pass_stopping", source=config.name, reason="stop requested")
                    break
    except SourceError as exc:
        return _failed(store, config, clock, total, pages, started, exc)
    store.record_success(config.name, clock())
    duration = time.perf_counter() - started
    log.info(
        "pass_finished",
        source=config.name,
        pages=pages,
        inserted=total.inserted,
        updated=total.updated,
        unchanged=total.unchanged,
        rejected=total.rejected,
        duration_s=round(duration, 3),
    )
    return PassResult(config.name, ok=True, written=total, pages=pages, duration_s=duration)


def _failed(
    store: Store,
    config: SourceConfig,
    clock: Clock,
    total: WriteResult,
    pages: int,
    started: float,
    exc: SourceError,
) -> PassResult:
    message = f"{type(exc).__name__}: {exc}"
    store.record_failure(config.name, message, clock())
    duration = time.perf_counter() - started
    # A warning, not an error: the caller reports the failure (the CLI's one
    # line, the daemon's metrics); the log keeps the details.
    log.warning(
        "pass_failed",
        source=config.name,
        error_type=type(exc).__name__,
        error=str(exc),
        pages=pages,
        inserted=total.inserted,
        duration_s=round(duration, 3),
    )
    return PassResult(
        config.name, ok=False, written=total, pages=pages, duration_s=duration, error=str(exc)
    )
