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
from syncd.errors import DatabaseUnavailable, SyncdError
from syncd.simulators.cli import simulate

if TYPE_CHECKING:
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
        if self._settings is None:
            self._settings = load_settings(self.config_path, self.database_url)
        return self._settings

    def engine(self) -> sa.Engine:
        from syncd.db.engine import check_connection, create_engine

        engine = create_engine(self.settings.database_url)
        check_connection(engine)
        return engine


pass_context = click.make_pass_decorator(Context)


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
    sources = [settings.source(name) for name in names] if names else list(settings.sources)
    store = Store(_ready_engine(ctx, migrate_if_empty=True))
    # The views need the sources and their calendars, the passes do not: on
    # PostgreSQL the (first-run) calendar write overlaps the passes instead of
    # delaying the first page or the exit. SQLite has one writer: after them.
    with _alongside(
        lambda: sync_sources(store.engine, settings.sources, datetime.now(UTC)),
        concurrent=store.engine.dialect.name == "postgresql",
    ):
        failed = _sync_each(store, sources)
    if failed:
        raise SystemExit(1)


def _sync_each(store: Store, sources: Sequence[SourceConfig]) -> int:
    """One guarded pass per source, one line each; return how many failed."""
    from syncd.engine import run_pass

    failed = 0
    for source in sources:
        result = _guarded_pass(store, source, run_pass)
        if result.skipped:
            click.echo(f"{source.name}: skipped, another syncd is syncing it")
        elif result.ok:
            w = result.written
            click.echo(
                f"{source.name}: ok, {w.inserted} new, {w.updated} updated, "
                f"{w.unchanged} unchanged, {w.rejected} rejected "
                f"in {result.pages} pages, {result.duration_s:.1f}s"
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

    config = ctx.settings.source(name)
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
    config = ctx.settings.source(name)
    if until_given is not None:
        windows(since_at, until_given, step)  # a bad range is one line before any I/O
    store = Store(_ready_engine(ctx, migrate_if_empty=True))
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
    import signal
    import threading

    from syncd.backfill import BackfillRefused, run_backfill
    from syncd.backfill_progress import ProgressBar
    from syncd.engine import describe_error

    root = click.get_current_context().find_root().params
    tty = sys.stderr.isatty()
    if not tty and root.get("log_level") is None and not os.environ.get("SYNCD_LOG_LEVEL"):
        # Off a terminal the progress is log lines: backfill's own events at
        # info, everything else at the one-shot commands' error level.
        logging.getLogger("syncd.backfill.progress").setLevel(logging.INFO)
    stop = threading.Event()

    def interrupted(_signum: int, _frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: now

    previous = signal.signal(signal.SIGINT, interrupted)
    bar = ProgressBar(config.name) if tty else None
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
        signal.signal(signal.SIGINT, previous)
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

    settings = ctx.settings
    if not settings.sources:
        raise SyncdError(
            "no sources configured: add [[sources]] to syncd.toml (see README) or try `syncd demo`"
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
        options["connect_args"] = {"connect_timeout": 5}
    engine = create_engine(url, **options)
    check_connection(engine)
    _lock = _daemon_lock(engine)  # held until the process exits
    if migrate_first:
        from syncd.db import migrate as migrations

        migrations.upgrade(engine)
    else:
        _ready_engine_check(engine)
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Per source: cursor, last success, last error, lag, row count."""
    from syncd.db.store import Store

    store = Store(_ready_engine(ctx, migrate_if_empty=False))
    now = datetime.now(UTC)
    states = store.all_states()
    stats = store.source_stats()
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
                "cursor": state.cursor if state else {},
            }
        )
    from syncd.db.backfills import summaries

    loads = summaries(store)
    if as_json:
        document = {"sources": rows, "backfills": [b.to_json() for b in loads]}
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    _print_status(rows)
    _print_backfills(loads)


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
    from rich.console import Console
    from rich.table import Table

    if not rows:
        click.echo("no sources configured and nothing synced yet")
        return
    table = Table(title="syncd status")
    table.add_column("source", no_wrap=True)
    table.add_column("kind")
    for column in ("rows", "rejected", "lag"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("last success", no_wrap=True)
    table.add_column("last error")
    for row in rows:
        lag = row["lag_seconds"]
        table.add_row(
            row["source"],
            row["kind"] or "-",
            str(row["rows"]),
            str(row["rejected"]),
            "-" if lag is None else _duration(lag),
            (row["last_success_at"] or "never")[:19].replace("T", " "),
            (row["last_error"] or "")[:80],
        )
    Console().print(table)
    for row in rows:
        click.echo(f"{row['source']} cursor: {orjson.dumps(row['cursor']).decode()}")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


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
    """Zero-config tour: sync both simulators into the database and report."""
    from syncd.demo import run_demo
    from syncd.logging import configure_logging

    root = click.get_current_context().find_root().params
    if root.get("log_level") is None:  # the report, not log lines (SYNCD_LOG_LEVEL still wins)
        log_format = root.get("log_format")
        configure_logging(
            level="warning", json=None if log_format is None else log_format == "json"
        )
    status = run_demo(
        lambda: _ready_engine(ctx, migrate_if_empty=True),
        ctx.settings,
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
        click.echo(f"syncd: {exc}", err=True)
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
