"""The ``syncd`` command line (the contract in DESIGN.md).

Errors a user can cause end with one line on stderr and exit 1, never a
traceback: they are raised as :class:`~syncd.errors.SyncdError` (or a database
driver error) and turned into that line here, at the edge. Logging is
configured here too, once, before any command runs.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson
import sqlalchemy as sa
import structlog

from syncd import __version__
from syncd.config import Settings, load_settings
from syncd.errors import ConfigError, DatabaseUnavailable, SyncdError
from syncd.simulators.cli import simulate
from syncd.wording import counted

if TYPE_CHECKING:
    from syncd.backfill import BackfillReport
    from syncd.backfill_progress import ProgressBar
    from syncd.bi_role import RoleRecipe
    from syncd.config import SourceConfig
    from syncd.db.backfills import BackfillSummary
    from syncd.db.store import Store
    from syncd.engine import PassResult

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """What the global options resolve to; settings are loaded on first use."""

    config_path: str | None
    database_url: str | None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The settings, without requiring any source's secrets (see :meth:`sources`)."""
        if self._settings is None:
            self._settings = load_settings(self.config_path, self.database_url, secrets_for=())
        return self._settings

    def sources(self, names: Sequence[str] = ()) -> list[SourceConfig]:
        """The named (else every) configured source, with its secrets.

        A command needs the secrets of the sources it touches, and only
        those: one ConfigError lists every secret these sources lack.
        """
        settings = self.settings
        chosen = [settings.source(name) for name in names] if names else list(settings.sources)
        problems = [problem for source in chosen for problem in source.secret_problems]
        if problems:
            raise ConfigError.of(problems)
        return chosen

    def sqlite_file_missing(self) -> bool:
        """Whether the database is a SQLite file that does not exist (yet)."""
        return _sqlite_file_missing(self.settings.database_url)

    def engine(self) -> sa.Engine:
        from syncd.db.engine import check_connection, create_engine

        engine = create_engine(self.settings.database_url)
        check_connection(engine)
        return engine


pass_context = click.make_pass_decorator(Context)


def _sqlite_file_missing(url: str) -> bool:
    """A SQLite file URL whose file does not exist: opening it would create it."""
    from pathlib import Path

    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return False
    return not Path(database).exists()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="TOML configuration (else $SYNCD_CONFIG, else ./syncd.toml when present).",
)
@click.option(
    "--database-url",
    metavar="URL",
    help="Database (else $SYNCD_DATABASE_URL, else the config's, else sqlite:///syncd.db).",
)
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level (else $SYNCD_LOG_LEVEL, else error: only the outcome is printed).",
)
@click.option(
    "--log-format",
    default=None,
    type=click.Choice(["json", "console"]),
    help="Log format (else $SYNCD_LOG_FORMAT; JSON off a terminal, console on one).",
)
@click.version_option(__version__, prog_name="syncd")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    database_url: str | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Copy access-control events from vendor clouds into SQL, exactly once."""
    from syncd.logging import configure_logging

    # One-shot commands are quiet unless asked: their outcome is printed, and
    # a failure is one clear line on stderr. `--log-level info` shows every
    # page and pass as structured events.
    configure_logging(
        level=log_level or "error",
        json=None if log_format is None else log_format == "json",
    )
    ctx.obj = Context(config_path, database_url)


@cli.command()
@pass_context
def migrate(ctx: Context) -> None:
    """Upgrade the database to the newest schema."""
    from syncd.bi import sync_sources
    from syncd.db import migrate as migrations
    from syncd.db.engine import describe_url

    engine = ctx.engine()
    before = migrations.current_revision(engine)
    migrations.upgrade(engine)
    after = migrations.current_revision(engine)
    sync_sources(engine, ctx.settings.sources, datetime.now(UTC))
    where = describe_url(ctx.settings.database_url)
    if before == after:
        click.echo(f"{where}: schema already current (revision {after})")
    else:
        click.echo(f"{where}: migrated from {before or 'empty'} to revision {after}")


def _ready_engine(ctx: Context, *, migrate_if_empty: bool) -> sa.Engine:
    """An engine whose schema is current (migrating an empty database if allowed)."""
    from syncd.db import migrate as migrations

    engine = ctx.engine()
    current = migrations.current_revision(engine)
    migrations.check_known(current)
    if current is None and migrate_if_empty:
        migrations.upgrade(engine)
        return engine
    if current != migrations.head_revision():
        state = "has no syncd schema" if current is None else f"is at revision {current}"
        raise DatabaseUnavailable(f"the database {state}: run `syncd migrate` first")
    return engine


@cli.command()
@click.option(
    "--source",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this source (repeatable). Default: every configured source.",
)
@pass_context
def sync(ctx: Context, names: Sequence[str]) -> None:
    """One incremental pass of each (or each named) source, then exit."""
    from syncd.bi import sync_sources
    from syncd.db.store import Store

    settings = ctx.settings
    if not settings.sources:
        raise SyncdError(
            "no sources configured: add [[sources]] to syncd.toml (see README) or try `syncd demo`"
        )
    sources = ctx.sources(names)
    store = Store(_ready_engine(ctx, migrate_if_empty=True))
    # The views need the sources and their calendars, the passes do not: on
    # PostgreSQL the (first-run) calendar write overlaps the passes instead of
    # delaying the first page or the exit. SQLite has one writer: after them.
    with (
        _interruptible(
            "stopping after the page in hand commits (Ctrl-C again to quit at once)",
            "the next sync resumes from the last committed page",
        ) as stop,
        _alongside(
            lambda: sync_sources(store.engine, settings.sources, datetime.now(UTC)),
            concurrent=store.engine.dialect.name == "postgresql",
        ),
    ):
        failed = _sync_each(store, sources, stop)
    if stop.is_set():
        click.echo(
            "syncd: interrupted; the next sync resumes from the last committed page", err=True
        )
        raise SystemExit(1)
    if failed:
        raise SystemExit(1)


@contextlib.contextmanager
def _interruptible(stopping: str, quit_note: str) -> Iterator[threading.Event]:
    """The one home of Ctrl-C for the one-shot commands: a stop event for the block.

    The first SIGINT sets the event (the work ends after the page in hand
    commits, retry waits end at once) and says so on stderr; a second one
    ends the process at once, without a traceback: a transaction in flight
    is rolled back by the database, never half-committed, and ``quit_note``
    (how to resume) is printed first.
    """
    import os
    import signal

    stop = threading.Event()

    def interrupted(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            sys.stderr.write(f"\nsyncd: interrupted; {quit_note}\n")
            sys.stderr.flush()
            os._exit(130)
        stop.set()
        sys.stderr.write(f"\nsyncd: {stopping}\n")
        sys.stderr.flush()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        # Once interrupted, the handler stays: a Ctrl-C while the command
        # winds down (its summary, its exit) still ends it at once, quietly.
        if not stop.is_set():
            signal.signal(signal.SIGINT, previous)


def _sync_each(store: Store, sources: Sequence[SourceConfig], stop: threading.Event) -> int:
    """One guarded pass per source, one line each; return how many failed."""
    from syncd.engine import run_pass

    failed = 0
    for source in sources:
        if stop.is_set():
            click.echo(f"{source.name}: not started (interrupted)")
            continue
        result = _guarded_pass(store, source, lambda s, c: run_pass(s, c, stop=stop))
        if result.paused:
            click.echo(f"{source.name}: paused (`syncd resume {source.name}` to sync it again)")
        elif result.skipped:
            click.echo(f"{source.name}: skipped, another syncd is syncing it")
        elif result.ok:
            w = result.written
            outcome = "stopped" if result.stopped else "ok"
            click.echo(
                f"{source.name}: {outcome}, {w.inserted:,} new, {w.updated:,} updated, "
                f"{w.unchanged:,} unchanged, {w.rejected:,} rejected "
                f"in {counted(result.pages, 'page')}, {result.duration_s:.1f}s"
            )
            if result.reconciled is not None:
                click.echo(f"  reconciled {result.reconciled.summary()}")
        else:
            failed += 1
            click.echo(f"syncd: {source.name} failed: {result.error}", err=True)
    return failed


@contextlib.contextmanager
def _alongside(work: Callable[[], object], *, concurrent: bool) -> Iterator[None]:
    """Run ``work`` in a thread during the block (or after it); re-raise its error at the end."""
    if not concurrent:
        yield
        work()
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="syncd-alongside")
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if errors:
        raise errors[0]


def _parse_instant(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 instant from the command line (naive means UTC), or a clear error."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SyncdError(
            f"{option} {value!r} is not an ISO 8601 time such as 2026-01-01 or 2026-01-01T06:00:00Z"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@cli.command()
@click.option("--source", "name", required=True, metavar="NAME", help="The source to check.")
@click.option("--since", metavar="ISO", help="Start of the span (default: now - reconcile_days).")
@click.option("--until", metavar="ISO", help="End of the span (default: now).")
@click.option("--json", "as_json", is_flag=True, help="A machine-readable summary.")
@pass_context
def reconcile(ctx: Context, name: str, since: str | None, until: str | None, as_json: bool) -> None:
    """Find and load events the vendor has that the table lacks (late uploads)."""
    from datetime import timedelta

    from syncd.db.store import Store
    from syncd.engine import describe_error, utcnow
    from syncd.reconcile import reconcile as run_reconcile

    (config,) = ctx.sources([name])
    now = utcnow()
    until_at = _parse_instant(until, "--until") or now
    since_at = _parse_instant(since, "--since") or (
        max(
            now - timedelta(days=config.reconcile_days),
            config.start or datetime.min.replace(tzinfo=UTC),
        )
    )
    if since_at >= until_at:
        raise SyncdError("--since must be before --until (or now)")
    store = Store(_ready_engine(ctx, migrate_if_empty=True))
    _refuse_paused(store, name, "reconcile")
    try:
        report = run_reconcile(store, config, since=since_at, until=until_at)
    except SyncdError as exc:
        raise SyncdError(f"reconcile of {name} failed: {describe_error(exc)}") from exc
    if as_json:
        click.echo(orjson.dumps(report.to_json()).decode())
    else:
        click.echo(report.summary())


def _guarded_pass(
    store: Store, source: SourceConfig, run_pass: Callable[[Store, SourceConfig], PassResult]
) -> PassResult:
    """``run_pass``, with an unexpected exception recorded as this source's failure.

    The engine turns vendor errors into a failed result; anything else (a bug,
    a value the database refused) must not skip the remaining sources nor
    leave ``syncd status`` without an error: it is recorded in ``last_error``
    and reported like any failure. The traceback goes to the log (warning
    level), never to the one-line outcome.
    """
    import structlog

    from syncd.engine import PassResult

    try:
        return run_pass(store, source)
    except Exception as exc:  # one source must never stop the others
        from syncd.engine import describe_error

        message = describe_error(exc)
        structlog.get_logger(__name__).warning(
            "pass_crashed", source=source.name, error=message, exc_info=True
        )
        # If the database is the problem, the outcome line still says so.
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            store.record_failure(source.name, message, datetime.now(UTC))
        return PassResult(source.name, ok=False, error=message)


@cli.command()
@click.option("--source", "name", required=True, metavar="NAME", help="The source to load.")
@click.option("--since", required=True, metavar="ISO", help="Start of the history (inclusive).")
@click.option(
    "--until",
    metavar="ISO",
    help="End (exclusive; default: the unfinished backfill's from --since, else now).",
)
@click.option(
    "--window",
    default="1d",
    show_default=True,
    metavar="DURATION",
    help="Window length aligned to --since, in UTC: 1d, 6h, 90m, 3600s.",
)
@pass_context
def backfill(ctx: Context, name: str, since: str, until: str | None, window: str) -> None:
    """Load history in windows, resumable, beside the live sync (never moves its cursor)."""
    from syncd.backfill import parse_window, resolve_until, windows
    from syncd.db.store import Store
    from syncd.engine import utcnow

    since_at = _parse_instant(since, "--since")
    assert since_at is not None
    until_given = _parse_instant(until, "--until")
    step = parse_window(window)
    (config,) = ctx.sources([name])
    if until_given is not None:
        windows(since_at, until_given, step)  # a bad range is one line before any I/O
    store = Store(_ready_engine(ctx, migrate_if_empty=True))
    _refuse_paused(store, name, "backfill")
    until_at = resolve_until(store, name, since_at, until_given, utcnow())
    windows(since_at, until_at, step)
    resume = _resume_command(ctx, name, since_at, until_at, window)
    _run_backfill(store, config, since_at, until_at, step, resume)


def _resume_command(ctx: Context, name: str, since: datetime, until: datetime, window: str) -> str:
    """The exact command that resumes this backfill (the database URL is not repeated)."""
    import shlex

    parts = ["syncd"]
    if ctx.config_path:
        parts += ["--config", ctx.config_path]
    parts += ["backfill", "--source", name, "--since", _iso(since) or ""]
    parts += ["--until", _iso(until) or "", "--window", window]
    return shlex.join(parts)


def _run_backfill(
    store: Store,
    config: SourceConfig,
    since: datetime,
    until: datetime,
    step: timedelta,
    resume: str,
) -> None:
    import logging
    import os

    from syncd.backfill_progress import ProgressBar

    root = click.get_current_context().find_root().params
    tty = sys.stderr.isatty()
    if not tty and root.get("log_level") is None and not os.environ.get("SYNCD_LOG_LEVEL"):
        # Off a terminal the progress is log lines: backfill's own events at
        # info, everything else at the one-shot commands' error level.
        logging.getLogger("syncd.backfill.progress").setLevel(logging.INFO)
    bar = ProgressBar(config.name) if tty else None
    with _interruptible(
        "stopping after the page in hand commits (Ctrl-C again to quit at once)",
        f"to resume: {resume}",
    ) as stop:
        report = _backfill_reporting(store, config, since, until, step, resume, stop, bar)
    click.echo(report.summary())
    if report.stopped and not report.complete:
        click.echo(f"syncd: backfill of {config.name} interrupted; to resume: {resume}", err=True)
        raise SystemExit(1)
    if report.held:
        held = report.held[0]
        click.echo(
            f"syncd: backfill of {config.name}: window {held.describe()}: {resume}", err=True
        )
        raise SystemExit(1)


def _backfill_reporting(
    store: Store,
    config: SourceConfig,
    since: datetime,
    until: datetime,
    step: timedelta,
    resume: str,
    stop: threading.Event,
    bar: ProgressBar | None,
) -> BackfillReport:
    """:func:`run_backfill` with its failures as one line that says how to resume."""
    from syncd.backfill import BackfillRefused, run_backfill
    from syncd.engine import describe_error

    try:
        if bar is not None:
            bar.start()
        report = run_backfill(
            store, config, since, until, step, stop=stop,
            on_plan=bar.plan if bar else None,
            on_page=bar.page if bar else None,
            on_window=bar.window if bar else None,
        )  # fmt: skip
    except BackfillRefused:
        raise  # its own line says what to do
    except SyncdError as exc:
        raise SyncdError(
            f"backfill of {config.name} failed: {describe_error(exc)}; rerun to resume: {resume}"
        ) from exc
    except Exception as exc:  # a bug or the database: one line, details in the log
        structlog.get_logger("syncd.backfill").warning(
            "backfill_failed", source=config.name, error=describe_error(exc), exc_info=True
        )
        raise SyncdError(
            f"backfill of {config.name} failed: {describe_error(exc)}; rerun to resume: {resume}"
        ) from exc
    finally:
        if bar is not None:
            bar.stop()
    return report


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@cli.command()
@click.option(
    "--migrate",
    "migrate_first",
    is_flag=True,
    help="Upgrade the schema first (else an empty or outdated schema is refused).",
)
@click.option("--listen", metavar="HOST:PORT", help="HTTP address (overrides [daemon] listen).")
@pass_context
def run(ctx: Context, migrate_first: bool, listen: str | None) -> None:
    """The daemon: schedule every source, serve HTTP, stop cleanly on SIGTERM/SIGINT."""
    import os

    from syncd.config import parse_listen
    from syncd.daemon import Daemon, serve
    from syncd.db.engine import check_connection, create_engine
    from syncd.logging import configure_logging
    from syncd.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts: RSS flat over months of passes

    settings = ctx.settings
    if not settings.sources:
        raise SyncdError(
            "no sources configured: add [[sources]] to syncd.toml (see README) or try `syncd demo`"
        )
    ctx.sources()  # the daemon touches every source
    if not migrate_first and ctx.sqlite_file_missing():
        # Checked before opening it: opening would create the file.
        raise DatabaseUnavailable(
            "the database has no syncd schema: run `syncd migrate` first, or `syncd run --migrate`"
        )
    host, port = (
        parse_listen(listen, "--listen")
        if listen is not None
        else (settings.daemon.host, settings.daemon.port)
    )
    url = settings.database_url
    # No pre-ping (a round trip per checkout, several per pass): after a
    # database restart the first use of a dead connection fails that pass and
    # SQLAlchemy discards the pool's connections; the next pass reconnects. A
    # connection attempt to an unreachable server gives up after a few seconds.
    options: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # A pass holds two connections (its source lock's and the page
        # writes'); webhook writes, readiness and gauges need a few more.
        options["pool_size"] = 2 * settings.daemon.workers + 4
        options["max_overflow"] = 4
    engine = create_engine(url, **options)
    check_connection(engine)
    if not migrate_first:
        # Before the lock: a refused start leaves no lock file behind.
        _ready_engine_check(engine)
    _lock = _daemon_lock(engine)  # held until the process exits
    if migrate_first:
        from syncd.db import migrate as migrations

        migrations.upgrade(engine)
    from syncd.bi import sync_sources

    # The BI views read each source's zone and hours from the database.
    sync_sources(engine, settings.sources, datetime.now(UTC))
    # From here on the daemon logs its life (the schema check stays one line).
    root = click.get_current_context().find_root().params
    if root.get("log_level") is None:
        log_format = root.get("log_format")
        configure_logging(level="info", json=None if log_format is None else log_format == "json")
    daemon = Daemon(settings, engine, host=host, port=port)
    serve(daemon)
    sys.stdout.flush()
    sys.stderr.flush()
    # Every page in hand is committed and every lock released (a pass that
    # overran the grace has its open transaction rolled back by the database
    # when the process ends): exit now rather than wait, at interpreter exit,
    # for a worker's vendor request to time out.
    os._exit(0)


def _ready_engine_check(engine: sa.Engine) -> None:
    from syncd.db import migrate as migrations

    current = migrations.current_revision(engine)
    if current != migrations.head_revision():
        state = "has no syncd schema" if current is None else f"is at revision {current}"
        raise DatabaseUnavailable(
            f"the database {state}: run `syncd migrate` first, or `syncd run --migrate`"
        )


def _daemon_lock(engine: sa.Engine) -> Any:
    """On a SQLite file: hold ``<db>.daemon.lock`` for the process, or refuse."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    import fcntl

    handle = open(f"{database}.daemon.lock", "a+")  # noqa: SIM115  (held for the process)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SyncdError(
            f"another `syncd run` is using {database}: on SQLite one daemon runs per "
            "database (use PostgreSQL to run several)"
        ) from None
    return handle


@cli.command()
@click.option(
    "--source",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this source (repeatable). Default: every configured source.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def check(ctx: Context, names: Sequence[str], as_json: bool) -> None:
    """Preflight: secrets, connection, credentials, scope, clock, database; one line each."""
    from syncd.check import format_lines, run_checks

    settings = ctx.settings
    sources = [settings.source(name) for name in names] if names else list(settings.sources)
    lines, seconds = run_checks(sources, settings.database_url)
    failed = any(line.status == "failed" for line in lines)
    if as_json:
        document = {"ok": not failed, "checks": [line.to_json() for line in lines]}
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        if not sources:
            click.echo("no sources configured: add [[sources]] to syncd.toml (see README)")
        for text in format_lines(lines):
            click.echo(text)
        verdict = "some checks failed" if failed else "all checks passed"
        click.echo(f"{verdict} ({seconds:.1f}s)")
    if failed:
        raise SystemExit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Per source: cursor, last success, last error, lag, row count, paused."""
    from syncd.db.backfills import summaries

    store = _existing_store(ctx)  # read-only: never creates the database
    now = datetime.now(UTC)
    states = store.all_states() if store else {}
    stats = store.source_stats() if store else {}
    loads: list[BackfillSummary] = summaries(store) if store else []
    configured = {s.name: s.kind for s in ctx.settings.sources}
    names = list(configured) + sorted((set(states) | set(stats)) - set(configured))
    rows = []
    for name in names:
        state = states.get(name)
        stat = stats.get(name)
        newest = stat.newest_occurred_at if stat else None
        rows.append(
            {
                "source": name,
                "kind": configured.get(name),
                "configured": name in configured,
                "rows": stat.rows if stat else 0,
                "rejected": stat.rejected if stat else 0,
                "newest_event_at": _iso(newest),
                "lag_seconds": round((now - newest).total_seconds(), 1) if newest else None,
                "last_success_at": _iso(state.last_success_at) if state else None,
                "last_error": state.last_error if state else None,
                "last_error_at": _iso(state.last_error_at) if state else None,
                "consecutive_failures": state.consecutive_failures if state else 0,
                "reconciled_at": _iso(state.reconciled_at) if state else None,
                "cursor": _readable_cursor(state.cursor) if state else {},
                "paused_at": _iso(state.paused_at) if state else None,
                "paused_by": state.paused_by if state else None,
                "paused_reason": state.paused_reason if state else None,
            }
        )
    if as_json:
        document = {"sources": rows, "backfills": [b.to_json() for b in loads]}
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    _print_status(rows)
    _print_paused(rows)
    _print_backfills(loads)
    if store is None:
        click.echo("no database file yet: the first `syncd sync` (or `syncd migrate`) creates it")


def _existing_store(ctx: Context) -> Store | None:
    """The database's store, or None when its SQLite file does not exist (nothing synced).

    That file is not opened: opening would create it. A database that exists
    but has no (or another version's) schema is refused with its fix.
    """
    from syncd.db.store import Store

    if ctx.sqlite_file_missing():
        return None
    return Store(_ready_engine(ctx, migrate_if_empty=False))


def _readable_cursor(value: Any) -> Any:
    """The cursor with a ``scope`` kept as JSON text (IntServ's filters) shown as JSON."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            parsed = item
            if key == "scope" and isinstance(item, str):
                with contextlib.suppress(orjson.JSONDecodeError):
                    parsed = orjson.loads(item)
            out[key] = _readable_cursor(parsed)
        return out
    if isinstance(value, list):
        return [_readable_cursor(item) for item in value]
    return value


def _print_backfills(loads: list[BackfillSummary], shown: int = 10) -> None:
    """One line per backfill; an unfinished one's open windows (the first ``shown``)."""
    for load in loads:
        state = "done" if load.done else "in progress"
        click.echo(
            f"backfill {load.source} {_iso(load.since)} .. {_iso(load.until)}: {state}, "
            f"{load.windows_done}/{load.windows_total} windows, {load.events} events, "
            f"updated {(_iso(load.updated_at) or '')[:19].replace('T', ' ')}"
        )
        open_windows = [w for w in load.windows if not w.done]
        for window in open_windows[:shown]:
            where = "resumes inside" if window.position else "not started"
            click.echo(
                f"  window {_iso(window.start)} .. {_iso(window.end)}: {where}, "
                f"{window.events} events so far"
            )
        if len(open_windows) > shown:
            click.echo(f"  ... and {len(open_windows) - shown} more windows to load")


def _print_status(rows: list[dict[str, Any]]) -> None:
    """A table that fits 80 columns; each last error on its own lines below it."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        click.echo("no sources configured and nothing synced yet")
        return
    table = Table(title="syncd status")
    table.add_column("source", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for column in ("rows", "rejected", "lag"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("last success", no_wrap=True)
    for row in rows:
        lag = row["lag_seconds"]
        never = row["last_success_at"] is None
        table.add_row(
            row["source"],
            row["kind"] or "not configured",
            f"{row['rows']:,}",
            f"{row['rejected']:,}",
            # A lag means "behind since the last success": none without one.
            "-" if lag is None or never else _duration(lag),
            (row["last_success_at"] or "never")[:19].replace("T", " "),
        )
    Console().print(table)
    for row in rows:
        if row["last_error"]:
            at = (row["last_error_at"] or "")[:19].replace("T", " ")
            click.echo(f"{row['source']} last error ({at}): {row['last_error']}")
    for row in rows:
        click.echo(f"{row['source']} cursor: {orjson.dumps(row['cursor']).decode()}")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


DEMO_DATABASE_URL = "sqlite:///syncd-demo.db"


@cli.command()
@click.option(
    "--passes",
    default=4,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Sync passes before the report (new events, a fault and late events between them).",
)
@click.option("--keep-running", is_flag=True, help="After the report, keep polling until Ctrl-C.")
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="S",
    help="Seconds between polls with --keep-running.",
)
@pass_context
def demo(ctx: Context, passes: int, keep_running: bool, interval: float) -> None:
    """Zero-config tour: sync both simulators into ./syncd-demo.db (or --database-url)."""
    from syncd.demo import run_demo
    from syncd.logging import configure_logging

    root = click.get_current_context().find_root().params
    if root.get("log_level") is None:  # the report, not log lines (SYNCD_LOG_LEVEL still wins)
        # Retries after the injected faults are counted in the report itself.
        log_format = root.get("log_format")
        configure_logging(level="error", json=None if log_format is None else log_format == "json")
    from syncd.config import DaemonConfig, normalize_database_url

    # The demo's own database, never the one a syncd.toml or
    # $SYNCD_DATABASE_URL names (its fake events would mix with real ones),
    # and none of the configured sources (nor their secrets).
    demo_ctx = Context(None, None)
    demo_ctx._settings = Settings(
        database_url=normalize_database_url(ctx.database_url or DEMO_DATABASE_URL),
        daemon=DaemonConfig(),
        sources=(),
        config_path=None,
    )
    status = run_demo(
        lambda: _ready_engine(demo_ctx, migrate_if_empty=True),
        demo_ctx.settings,
        passes=passes,
        keep_running=keep_running,
        interval=interval,
    )
    if status:
        raise SystemExit(status)


@cli.command("bi-role")
@click.option(
    "--role",
    default="syncd_bi",
    show_default=True,
    metavar="NAME",
    envvar="SYNCD_BI_ROLE",
    help="Role name (else $SYNCD_BI_ROLE).",
)
@click.option(
    "--password-env",
    default="SYNCD_BI_PASSWORD",
    show_default=True,
    metavar="VAR",
    help="Environment variable holding the role's password (for --apply).",
)
@click.option(
    "--password-file",
    default=None,
    metavar="PATH",
    help="File holding the role's password (for --apply; wins over --password-env).",
)
@click.option(
    "--statement-timeout",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="Longest query the role may run (PostgreSQL units: ms, s, min, h).",
)
@click.option("--apply", is_flag=True, help="Run the SQL on the database instead of printing it.")
@pass_context
def bi_role(
    ctx: Context,
    role: str,
    password_env: str,
    password_file: str | None,
    statement_timeout: str,
    apply: bool,
) -> None:
    """A read-only PostgreSQL role for BI tools: print the SQL, or --apply it."""
    from syncd.bi_role import RoleRecipe, role_script

    url = sa.make_url(ctx.settings.database_url)
    if url.get_backend_name() != "postgresql":
        raise SyncdError(
            "bi-role is for PostgreSQL; the database is "
            f"{url.get_backend_name()} (SQLite has no roles: share the file read-only)"
        )
    recipe = RoleRecipe(
        role=role, database=url.database or "postgres", statement_timeout=statement_timeout
    )
    if not apply:
        click.echo(role_script(recipe), nl=False)
        return
    password = _bi_password(password_env, password_file)
    _apply_role(_ready_engine(ctx, migrate_if_empty=False), recipe, password)
    click.echo(
        f"role {role} can now read every syncd table and view (but not "
        f"sync_state.refresh_token), read-only, statement_timeout {statement_timeout}"
    )


def _bi_password(password_env: str, password_file: str | None) -> str:
    import os
    from pathlib import Path

    if password_file is not None:
        try:
            password = Path(password_file).read_text().strip()
        except OSError as exc:
            raise SyncdError(
                f"cannot read --password-file {password_file}: {exc.strerror}"
            ) from exc
    else:
        password = os.environ.get(password_env, "")
    if not password:
        raise SyncdError(
            f"--apply needs the role's password: set ${password_env} or use --password-file"
        )
    return password


def _apply_role(engine: sa.Engine, recipe: RoleRecipe, password: str) -> None:
    from dataclasses import replace

    from syncd.bi_role import role_sql, scram_verifier

    # The server gets a SCRAM verifier, never the password: not even a
    # server log of DDL statements can show it.
    verifier = "'" + scram_verifier(password) + "'"
    with engine.begin() as conn:
        database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        for statement in role_sql(replace(recipe, database=database), password_sql=verifier):
            conn.exec_driver_sql(statement)


@cli.group()
def auth() -> None:
    """Authorize syncd at a vendor (OAuth), storing the grant in the database."""


@auth.command("doorflow")
@click.option("--source", "name", required=True, metavar="NAME", help="The DoorFlow source.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Loopback port of the redirect URI http://127.0.0.1:PORT/callback.",
)
@click.option(
    "--no-browser",
    is_flag=True,
    help="Print the URL and read the redirect address (or code) from standard input.",
)
@pass_context
def auth_doorflow(ctx: Context, name: str, port: int, no_browser: bool) -> None:
    """The OAuth authorization-code grant with PKCE; stores the refresh token."""
    from syncd.authorize import authorize
    from syncd.db.store import Store

    config = ctx.settings.source(name)
    store = Store(_ready_engine(ctx, migrate_if_empty=True))
    authorize(store, config, port=port, browser=not no_browser)
    click.echo(
        f"{name}: authorized; the refresh token is stored in the database "
        f"(refresh_token_env is not needed). Next: syncd sync --source {name}"
    )


# -- pause / resume ------------------------------------------------------------------


def _refuse_paused(store: Store, name: str, what: str) -> None:
    """One line and exit 1 when ``name`` is paused: nothing may call its vendor."""
    from syncd.db.pauses import paused

    held = paused(store, name)
    if held is not None:
        raise SyncdError(
            f"{name} is paused{_pause_note(held.by, held.reason)}: "
            f"`syncd resume {name}` first, then run the {what} again"
        )


def _pause_note(by: str | None, reason: str | None) -> str:
    return (f" by {by}" if by else "") + (f" ({reason})" if reason else "")


def _print_paused(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row.get("paused_at"):
            click.echo(
                f"{row['source']} paused since {row['paused_at'][:19].replace('T', ' ')}"
                f"{_pause_note(row['paused_by'], row['paused_reason'])}"
            )


def _checked_schema(engine: sa.Engine) -> sa.Engine:
    """``engine`` when its schema is at head; else one line that says to migrate."""
    from syncd.db import migrate as migrations

    current = migrations.current_revision(engine)
    migrations.check_known(current)
    if current != migrations.head_revision():
        state = "has no syncd schema" if current is None else f"is at revision {current}"
        raise DatabaseUnavailable(f"the database {state}: run `syncd migrate` first")
    return engine


def _pause_store(ctx: Context, name: str) -> Store:
    """The store, for a source that is configured or has a row in the database (else
    one line, exit 1); reads no secret (pause and resume need none)."""
    from syncd.config import load_database_and_names, unknown_source
    from syncd.db.engine import check_connection, create_engine
    from syncd.db.pauses import known_sources
    from syncd.db.store import Store

    url, configured = load_database_and_names(ctx.config_path, ctx.database_url)
    engine = create_engine(url)
    check_connection(engine)
    store = Store(_checked_schema(engine))
    if name not in configured and name not in known_sources(store):
        raise unknown_source(name, configured)
    return store


def _operator() -> str:
    """Who pauses: user@host, for `syncd status` and the status page."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@cli.command()
@click.argument("name", metavar="SOURCE")
@click.option("--reason", metavar="TEXT", help="Why, for `syncd status` and the status page.")
@pass_context
def pause(ctx: Context, name: str, reason: str | None) -> None:
    """Stop calling a source's vendor, in every process on the database, until resumed."""
    from syncd.db.pauses import pause as pause_source

    store = _pause_store(ctx, name)
    held = pause_source(store, name, reason=reason, by=_operator(), now=datetime.now(UTC))
    click.echo(
        f"{name}: paused since {_iso(held.at)}{_pause_note(held.by, held.reason)}; "
        "every syncd on this database stops calling its vendor within one interval"
    )


@cli.command()
@click.argument("name", metavar="SOURCE")
@pass_context
def resume(ctx: Context, name: str) -> None:
    """Call a paused source's vendor again; its next pass reads on from the stored cursor."""
    from syncd.db.pauses import resume as resume_source

    store = _pause_store(ctx, name)
    was = resume_source(store, name, datetime.now(UTC))
    if was is None:
        click.echo(f"{name}: not paused, nothing to do")
        return
    click.echo(
        f"{name}: resumed (paused since {_iso(was.at)}{_pause_note(was.by, was.reason)}); "
        "its next pass catches up from the stored cursor"
    )


cli.add_command(simulate)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: one clear line and exit 1 for user errors."""
    try:
        cli.main(args=argv, prog_name="syncd", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("syncd: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SyncdError as exc:
        for line in str(exc).splitlines() or [""]:  # several config problems: one line each
            click.echo(f"syncd: {line}", err=True)
        sys.exit(1)
    except sa.exc.SQLAlchemyError as exc:
        from syncd.db.engine import first_line

        click.echo(f"syncd: database error: {first_line(exc)}", err=True)
        sys.exit(1)
    except SystemExit:
        raise
    sys.exit(0)


if __name__ == "__main__":
    main()
