"""``syncd demo``: both simulators, a few real passes, and a report from SQL.

What it does (the ``syncd demo`` row of DESIGN.md's command table): start the
DoorFlow and IntServ simulators on free loopback ports, sync them into the
configured database (migrated if empty) under two sources built here, in code
(``demo-doorflow``, ``demo-intserv``; no ``[[sources]]`` needed), for a few
passes while new events keep arriving, then print a report whose every figure
is a SQL query over ``events`` / ``rejected_events`` (SQLAlchemy Core, so the
same on SQLite and PostgreSQL). ``--keep-running`` then keeps polling until
SIGINT/SIGTERM.

What the passes show
--------------------
- pass 1 loads the history (two days, a few thousand events per vendor);
- every later pass first takes one *step* of the timeline (below): new
  events, some of DoorFlow's uploaded about two minutes late, which the
  lookback re-read picks up;
- pass 2 runs against 429s (with a ``Retry-After``) and 5xx answers, retried
  by the connectors; the fault draws are seeded so that the first requests of
  that pass always meet one of each, and the sources allow a short wait
  (``max_retry_wait``) so they cost well under a second;
- with 3 or more passes, IntServ system ``abc123-002`` goes offline at pass 2
  and comes back at the last pass, releasing the events it buffered with
  their old ``event_time``: the connector's held-back ``least_sync_time`` is
  what makes it pick them up.
The report's "handled" line counts those from the simulators' ``stats`` and
the steps, and checks that the database holds exactly the events the
simulators serve (DoorFlow's list serves every code but 50-63, remote
control, which it does not list). Categories are the vendors' own grouping
(DESIGN.md "Categories"): DoorFlow 13 "Admitted (Request Exit)" counts as
``access_granted``, only 30 as ``exit_request``.

The demo world is a timeline, and why reruns replay it
------------------------------------------------------
The world is deterministic: fixed seeds, one :class:`SimClock`, an anchor
``T0`` (the end of the history) and numbered steps; step ``i`` moves the
clock second by second to ``T0 + i * STEP_SECONDS``, adding a fixed number
of events to each simulator every second. Nothing else changes *what* the
simulators hold (faults and the offline system only change *when* it can be
read), so step ``i`` always produces the same events.

A rerun on the same database must continue, not start a new world. A fresh
seed or clock would not do: DoorFlow's natural key is its event ``id``,
which the simulator numbers from a fixed base in arrival order, so a new
world would serve *different* events under ids already stored and the upsert
would overwrite the first run's rows; IntServ's stored ``least_sync_time``
could lie in the new world's future and fail the pass. So a rerun rebuilds
the same world: ``T0`` is read back from ``demo-doorflow``'s cursor (its
``origin`` is the ``start`` the demo configured, ``T0`` minus the history),
the steps already taken from the newest demo event stored (the newest of
step ``i``'s events is stamped within a second before
``T0 + i * STEP_SECONDS``), and the simulators replay those steps in memory
(about 0.2 s per thousand steps; a thousand is well over an hour of
``--keep-running``) before the run's passes continue the timeline. The cursors continue
too; whatever is re-read is the same bytes under the same key and counts as
"unchanged", never as a duplicate. A first run anchors ``T0`` a minute
before the wall clock, so the data looks current; a rerun's events carry the
timeline's times, which may be days old.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from syncd.bi import sync_sources
from syncd.config import Secret, Settings, SourceConfig
from syncd.db.engine import describe_url
from syncd.db.schema import events, rejected_events
from syncd.db.store import Store
from syncd.engine import PassResult, run_pass
from syncd.errors import SyncdError
from syncd.simulators import DoorFlowSimulator, Faults, IntServSimulator, SimClock
from syncd.sources.doorflow import DoorFlowCursor
from syncd.wording import counted

DOORFLOW_SOURCE = "demo-doorflow"
INTSERV_SOURCE = "demo-intserv"
DEMO_SOURCES = (DOORFLOW_SOURCE, INTSERV_SOURCE)

# The timeline. Changing any of these makes a new world: reruns against a
# database synced by another version would then re-read rather than dedupe.
DOORFLOW_SEED = 7
INTSERV_SEED = 11
HISTORY = timedelta(days=2)
DOORFLOW_HISTORY = 3000
INTSERV_HISTORY = 2000
STEP_SECONDS = 5
DOORFLOW_PER_SECOND = 3
INTSERV_PER_SECOND = 2
DOORFLOW_PER_STEP = DOORFLOW_PER_SECOND * STEP_SECONDS
INTSERV_PER_STEP = INTSERV_PER_SECOND * STEP_SECONDS
LATE_SHARE = 0.15
LATE_DELAY = 120.0
LOOKBACK = 300.0
MALFORMED_SHARE = 0.001
FIRST_ANCHOR_BEHIND = timedelta(minutes=1)

# Seeded so that the first requests of the faulty pass meet a 429, then a
# 5xx, and no 300 consecutive requests hold more than 3 faults in a row, well
# inside MAX_RETRIES attempts.
FAULTS = Faults(rate_limit=0.2, server_errors=0.2, retry_after=0.2, seed=1806)
MAX_RETRIES = 6
MAX_RETRY_WAIT = 0.5
LATEST_ROWS = 8
BUSIEST_DOORS = 6
DENIED_REASONS = 8
TRY_QUERY = "SELECT category, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"


# -- the world ---------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """Where the timeline stands: its anchor and the steps already taken."""

    anchor: datetime
    steps: int
    resumed: bool


def timeline_position(store: Store, wall_now: datetime) -> Position:
    """Read back a previous run's anchor and steps, or anchor a new timeline."""
    cursor = store.load_state(DOORFLOW_SOURCE).cursor
    if cursor:
        try:
            origin = DoorFlowCursor.from_json(cursor, wall_now).origin
        except (KeyError, TypeError, ValueError) as exc:
            raise SyncdError(
                f"cannot continue the demo: the {DOORFLOW_SOURCE} cursor is not readable "
                f"({type(exc).__name__}); use a fresh database (--database-url)"
            ) from exc
        anchor = origin + HISTORY
        query = sa.select(sa.func.max(events.c.occurred_at)).where(
            events.c.source.in_(DEMO_SOURCES)
        )
        with store.engine.connect() as conn:
            newest = _as_utc(conn.execute(query).scalar_one())
        steps = 0
        if newest is not None:
            # The newest of step i's events lies in [T0 + i*STEP - 1 s, T0 + i*STEP].
            behind = (newest - anchor).total_seconds() - 1.0
            steps = max(0, math.ceil(behind / STEP_SECONDS))
        return Position(anchor, steps, resumed=True)
    anchor = wall_now.replace(microsecond=0) - FIRST_ANCHOR_BEHIND
    return Position(anchor, 0, resumed=False)


def _as_utc(value: datetime | str | None) -> datetime | None:
    # SQLite's max() gives back the stored text; PostgreSQL an aware datetime.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class World:
    """The two simulators and their clock, at a step of the timeline."""

    def __init__(self, position: Position) -> None:
        self.anchor = position.anchor
        self.clock = SimClock(position.anchor)
        self.doorflow = DoorFlowSimulator(
            seed=DOORFLOW_SEED,
            history=DOORFLOW_HISTORY,
            history_days=HISTORY / timedelta(days=1),
            clock=self.clock,
            late_share=LATE_SHARE,
            late_delay=LATE_DELAY,
            malformed_share=MALFORMED_SHARE,
        )
        self.intserv = IntServSimulator(
            seed=INTSERV_SEED,
            history=INTSERV_HISTORY,
            history_days=HISTORY / timedelta(days=1),
            clock=self.clock,
            malformed_share=MALFORMED_SHARE,
        )
        self.offline_system = self.intserv.systems[1]
        self.steps = 0
        for _ in range(position.steps):
            self.step()

    def step(self) -> int:
        """Take the next step; return how many DoorFlow events arrived late in it."""
        before = self.doorflow.event_count
        base = self.anchor + timedelta(seconds=self.steps * STEP_SECONDS)
        self.steps += 1
        for second in range(1, STEP_SECONDS + 1):  # spread over the step, both vendors
            self.clock.set(base + timedelta(seconds=second))
            self.doorflow.generate(DOORFLOW_PER_SECOND)
            self.intserv.generate(INTSERV_PER_SECOND)
        # Everything beyond the on-time events: generated late ones and
        # history events whose upload was due by now.
        return self.doorflow.event_count - before - DOORFLOW_PER_STEP

    @contextlib.contextmanager
    def serving(self) -> Iterator[World]:
        with self.doorflow, self.intserv:
            yield self

    def set_faults(self, faults: Faults) -> None:
        self.doorflow.faults = faults
        self.intserv.faults = faults

    def retries(self) -> tuple[int, int, int]:
        """Requests answered 429, 5xx and dropped, both simulators together."""
        stats = [self.doorflow.stats, self.intserv.stats]
        return (
            sum(s.get("rate_limited", 0) for s in stats),
            sum(s.get("server_errors", 0) for s in stats),
            sum(s.get("dropped", 0) for s in stats),
        )

    def sources(self, interval: float) -> tuple[SourceConfig, SourceConfig]:
        """The two demo sources: the simulators' URLs and credentials, short retries."""
        doorflow = _source_config(DOORFLOW_SOURCE, "doorflow", self.doorflow.base_url, self.anchor)
        intserv = _source_config(INTSERV_SOURCE, "intserv", self.intserv.base_url, self.anchor)
        return (
            replace(doorflow, interval=interval, token=Secret(self.doorflow.token)),
            replace(intserv, interval=interval, api_key=Secret(self.intserv.api_key)),
        )


def _source_config(name: str, kind: str, base_url: str, anchor: datetime) -> SourceConfig:
    return SourceConfig(
        name=name,
        kind=kind,
        base_url=base_url,
        start=anchor - HISTORY,  # all of the history; a rerun's cursor starts later
        lookback=LOOKBACK,  # covers the late uploads; keeps --keep-running's re-reads short
        timeout=10.0,
        max_retries=MAX_RETRIES,
        max_retry_wait=MAX_RETRY_WAIT,
    )


# -- running -----------------------------------------------------------------------


@dataclass
class Tally:
    """What this run did, for the "handled" line."""

    passes: int = 0
    failures: list[str] = field(default_factory=list)
    doorflow_late: int = 0
    intserv_buffered: int = 0
    offline_phase: bool = False


def run_demo(
    ready_engine: Callable[[], sa.Engine],
    settings: Settings,
    *,
    passes: int,
    keep_running: bool,
    interval: float,
    console: Console | None = None,
) -> int:
    """Run the demo; return the exit status (0 unless a pass failed).

    ``ready_engine`` gives the configured database with a current schema
    (migrating an empty one); it is called once the demo knows it can run.
    """
    clashing = [s.name for s in settings.sources if s.name in DEMO_SOURCES]
    if clashing:
        raise SyncdError(
            f"the demo uses the source names {' and '.join(DEMO_SOURCES)}, but the "
            f"configuration defines {', '.join(clashing)}: rename it or use another database"
        )
    out = console or make_console()
    engine = ready_engine()
    store = Store(engine)
    database_url = settings.database_url
    started = time.perf_counter()
    position = timeline_position(store, datetime.now(UTC))
    world = World(position)
    tally = Tally()
    with world.serving():
        configs = world.sources(interval)
        sync_sources(engine, [*settings.sources, *configs], datetime.now(UTC))
        _intro(out, world, position, database_url)
        for number in range(1, passes + 1):
            _one_pass(out, store, world, configs, tally, number, passes)
        elapsed = time.perf_counter() - started
        _say(out, f"{tally.passes} passes in {elapsed:.1f}s", style="dim")
        report(out, engine, world, tally, database_url)
        if keep_running:
            _keep_running(out, store, world, configs, interval)
    if tally.failures:
        _say(out, f"{len(tally.failures)} pass(es) failed: {tally.failures[0]}", style="red")
        return 1
    return 0


def make_console() -> Console:
    wide = None if sys.stdout.isatty() else 150
    return Console(width=wide, highlight=False, soft_wrap=False)


def _say(out: Console, text: str, style: str | None = None) -> None:
    out.print(Text(text, style=style or ""), soft_wrap=True)


def _intro(out: Console, world: World, position: Position, database_url: str) -> None:
    _say(out, f"syncd demo: two simulated vendors -> {_shown(database_url)}", "bold")
    df, isv = world.doorflow, world.intserv
    _say(
        out,
        f"  DoorFlow simulator on {df.base_url} (source {DOORFLOW_SOURCE}): "
        f"{DOORFLOW_HISTORY:,} events of history over {HISTORY.days} days",
    )
    _say(
        out,
        f"  IntServ simulator on {isv.base_url} (source {INTSERV_SOURCE}): "
        f"{INTSERV_HISTORY:,} events over {HISTORY.days} days, systems {', '.join(isv.systems)}",
    )
    if position.resumed:
        _say(
            out,
            f"  This database has synced the demo before: continuing its timeline at step "
            f"{position.steps} (simulated time {_time(world.clock.now())} UTC); the "
            "simulators replayed the same seeded events, so re-read ones count as unchanged.",
            "dim",
        )
    else:
        _say(out, f"  Simulated time starts at {_time(world.clock.now())} UTC.", "dim")


def _one_pass(
    out: Console,
    store: Store,
    world: World,
    configs: Sequence[SourceConfig],
    tally: Tally,
    number: int,
    passes: int,
) -> None:
    notes: list[str] = []
    offline_span = passes >= 3  # offline from pass 2, back at the last pass
    if number == 2 and offline_span:
        world.intserv.set_offline(world.offline_system, True)
        notes.append(f"IntServ system {world.offline_system} goes offline")
    if number == passes and offline_span:
        buffered = world.intserv.buffered()
        world.intserv.set_offline(world.offline_system, False)
        tally.intserv_buffered += buffered
        tally.offline_phase = True
        notes.append(
            f"{world.offline_system} is back online with {buffered} buffered events "
            "(old event_time)"
        )
    if number > 1:
        late = world.step()
        tally.doorflow_late += late
        notes.insert(
            0,
            f"+{DOORFLOW_PER_STEP + late} DoorFlow events ({late} uploaded late), "
            f"+{INTSERV_PER_STEP} IntServ events",
        )
    if number == 2:
        world.set_faults(FAULTS)
        notes.append("injecting 429 and 5xx answers")
    if notes:
        _say(out, f"pass {number}/{passes}: " + "; ".join(notes), "dim")
    try:
        for config in configs:
            _report_pass(out, f"pass {number}/{passes}", run_pass(store, config), tally)
    finally:
        if number == 2:
            world.set_faults(Faults())
    tally.passes += 1


def _report_pass(out: Console, label: str, result: PassResult, tally: Tally) -> None:
    w = result.written
    if result.skipped:
        line = "skipped: another syncd holds its lock"
    elif result.ok:
        line = (
            f"{w.inserted:>6,} new {w.updated:>4,} updated {w.unchanged:>6,} unchanged "
            f"{w.rejected:>3,} rejected   {counted(result.pages, 'page')}, {result.duration_s:.1f}s"
        )
    else:
        line = f"FAILED: {result.error}"
        tally.failures.append(f"{result.source}: {result.error}")
    _say(out, f"{label}  {result.source:<14} {line}", None if result.ok else "red")


def _keep_running(
    out: Console,
    store: Store,
    world: World,
    configs: Sequence[SourceConfig],
    interval: float,
) -> None:
    """Poll with the daemon's scheduler (syncd run's, without HTTP) until Ctrl-C."""
    from syncd.scheduler import PassScheduler

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread: Ctrl-C aborts instead
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
    _say(
        out,
        f"\nPolling both sources every {interval:g}s (each poll adds {STEP_SECONDS}s of "
        "simulated traffic); Ctrl-C to stop.",
        "bold",
    )
    polls: dict[str, int] = {}

    def report_poll(result: PassResult) -> None:
        polls[result.source] = polls.get(result.source, 0) + 1
        _report_pass(out, f"poll {polls[result.source]}", result, Tally())

    scheduler = PassScheduler(store, configs, workers=2, on_result=report_poll)
    scheduler.add_job(world.step, interval, name="simulated traffic")
    try:
        scheduler.start()
        while not stop.wait(0.5):
            pass
    finally:
        scheduler.stop(grace=8.0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _say(out, f"Stopped after {sum(polls.values())} passes.")


# -- the report ---------------------------------------------------------------------


Row = tuple[Any, ...]


@dataclass(frozen=True)
class Figures:
    """What the report shows, as read from the tables (demo sources only)."""

    by_category: list[Row]  # category, source, count
    latest: list[Row]  # occurred_at, source, category, door, system, person, label
    doors: list[Row]  # door, system, source, count, denied (door_activity_daily)
    denied: list[Row]  # reason, code, source, count (denied_access)
    rejected: list[Row]  # source, reason, count

    def totals(self) -> dict[str, int]:
        totals = dict.fromkeys(DEMO_SOURCES, 0)
        for _category, source, count in self.by_category:
            totals[source] += int(count)
        return totals


def read_figures(engine: sa.Engine) -> Figures:
    """Every figure of the report, by SQL (the same on SQLite and PostgreSQL).

    Doors and denials come from the BI views, so the demo shows them working.
    """
    demo = events.c.source.in_(DEMO_SOURCES)
    n = sa.func.count().label("n")
    queries: dict[str, sa.Executable] = {
        "by_category": sa.select(events.c.category, events.c.source, n)
        .where(demo)
        .group_by(events.c.category, events.c.source),
        "latest": sa.select(
            events.c.occurred_at,
            events.c.source,
            events.c.category,
            events.c.door_name,
            events.c.system_id,
            events.c.person_name,
            events.c.label,
        )
        .where(demo)
        .order_by(events.c.occurred_at.desc(), events.c.id.desc())
        .limit(LATEST_ROWS),
        # the BI views (docs/sql.md): the report asks what a BI user would
        "doors": sa.text(
            "SELECT door_name, system_id, source, sum(events) AS n, sum(denied) AS denied "
            "FROM door_activity_daily WHERE source IN (:doorflow, :intserv) "
            "AND door_name IS NOT NULL GROUP BY source, system_id, door_id, door_name "
            "ORDER BY n DESC, door_name LIMIT :limit"
        ).bindparams(doorflow=DOORFLOW_SOURCE, intserv=INTSERV_SOURCE, limit=BUSIEST_DOORS),
        "denied": sa.text(
            "SELECT reason, event_code, source, count(*) AS n FROM denied_access "
            "WHERE source IN (:doorflow, :intserv) GROUP BY source, event_code, reason "
            "ORDER BY n DESC, reason"
        ).bindparams(doorflow=DOORFLOW_SOURCE, intserv=INTSERV_SOURCE),
        "rejected": sa.select(rejected_events.c.source, rejected_events.c.reason, n)
        .where(rejected_events.c.source.in_(DEMO_SOURCES))
        .group_by(rejected_events.c.source, rejected_events.c.reason)
        .order_by(n.desc(), rejected_events.c.reason),
    }
    with engine.connect() as conn:
        rows = {name: [tuple(r) for r in conn.execute(query)] for name, query in queries.items()}
    return Figures(**rows)


def report(out: Console, engine: sa.Engine, world: World, tally: Tally, database_url: str) -> None:
    """The tables and lines after the passes."""
    figures = read_figures(engine)
    out.print()
    out.print(_category_table(figures))
    out.print(_latest_table(figures))
    out.print(_doors_table(figures))
    out.print(_denied_table(figures))
    if figures.rejected:
        total = sum(int(count) for _source, _reason, count in figures.rejected)
        _say(
            out, f"Rejected (malformed) records, kept in rejected_events with the reason: {total:,}"
        )
        for source, reason, count in figures.rejected:
            _say(out, f"  {count:>4,}  {source:<14} {reason}")
    _handled(out, world, tally, figures.totals())
    _where(out, database_url)


def _category_table(figures: Figures) -> Table:
    counts: dict[str, dict[str, int]] = {}
    for category, source, count in figures.by_category:
        counts.setdefault(category, {})[source] = int(count)
    totals = figures.totals()
    table = _table("Events by category")
    table.add_column("category")
    for source in DEMO_SOURCES:
        table.add_column(source, justify="right")
    table.add_column("all", justify="right")
    for category in sorted(counts, key=lambda c: (-sum(counts[c].values()), c)):
        row = counts[category]
        table.add_row(
            Text(category),
            *(f"{row.get(s, 0):,}" for s in DEMO_SOURCES),
            f"{sum(row.values()):,}",
        )
    table.add_section()
    table.add_row(
        Text("total", style="bold"),
        *(f"{totals[s]:,}" for s in DEMO_SOURCES),
        f"{sum(totals.values()):,}",
    )
    return table


def _latest_table(figures: Figures) -> Table:
    table = _table("Latest events")
    for column in ("time (UTC)", "source", "category", "door", "person", "label"):
        table.add_column(column)
    for when, source, category, door, system, person, label in figures.latest:
        table.add_row(
            _time(_as_utc(when)),
            Text(source),
            Text(category),
            Text(_door(door, system)),
            Text(person or "-"),
            Text(label or "-"),
        )
    return table


def _doors_table(figures: Figures) -> Table:
    table = _table("Busiest doors")
    table.add_column("door")
    table.add_column("source")
    table.add_column("events", justify="right")
    table.add_column("denied", justify="right")
    for door, system, source, count, denied in figures.doors:
        table.add_row(
            Text(_door(door, system)), Text(source), f"{count:,}", f"{int(denied or 0):,}"
        )
    return table


def _denied_table(figures: Figures) -> Table:
    table = _table("Denied attempts by reason")
    table.add_column("reason")
    table.add_column("source")
    table.add_column("attempts", justify="right")
    for label, code, source, count in figures.denied[:DENIED_REASONS]:
        table.add_row(Text(label or f"code {code}"), Text(source), f"{count:,}")
    rest = figures.denied[DENIED_REASONS:]
    if rest:
        others = sum(int(row[3]) for row in rest)
        table.add_row(Text(f"{len(rest)} other reasons", style="dim"), "", f"{others:,}")
    table.add_section()
    everything = sum(int(row[3]) for row in figures.denied)
    table.add_row(Text("total", style="bold"), "", f"{everything:,}")
    return table


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)


def _handled(out: Console, world: World, tally: Tally, totals: dict[str, int]) -> None:
    rate_limited, server_errors, dropped = world.retries()
    retried = rate_limited + server_errors + dropped
    late = tally.doorflow_late + tally.intserv_buffered
    how = [
        f"{tally.doorflow_late} DoorFlow events uploaded up to "
        f"{LATE_DELAY * 1.25 / 60:g} min after they happened"
    ]
    if tally.offline_phase:
        how.append(
            f"{tally.intserv_buffered} events IntServ system {world.offline_system} "
            "buffered while offline"
        )
    parts = [
        f"{retried} retries after faults ({rate_limited} x 429 rate limit, "
        f"{server_errors} x 5xx" + (f", {dropped} dropped connections" if dropped else "") + ")",
        f"{late} late events picked up ({', '.join(how)})",
    ]
    out.print()
    _say(out, "Handled: " + "; ".join(parts) + ".", "bold")
    expected = {
        # What a sync can hold: DoorFlow does not list remote-control events (50-63).
        DOORFLOW_SOURCE: len(world.doorflow.truth(listable=True)),
        INTSERV_SOURCE: len(world.intserv.truth()),
    }
    if all(totals[s] == expected[s] for s in DEMO_SOURCES):
        _say(
            out,
            "Nothing lost, nothing twice: the database holds exactly the events the simulators "
            f"serve ({expected[DOORFLOW_SOURCE]:,} DoorFlow, {expected[INTSERV_SOURCE]:,} "
            "IntServ), once each.",
        )
    unlisted = len(world.doorflow.truth()) - expected[DOORFLOW_SOURCE]
    if unlisted:
        _say(
            out,
            f"DoorFlow's history also holds {counted(unlisted, 'remote-control event')} "
            "(codes 50-63) that its event list cannot return: only webhooks deliver those "
            "(see the README's webhooks section).",
        )
    else:
        _say(
            out,
            "Note: the simulators serve "
            + ", ".join(f"{expected[s]:,} ({s})" for s in DEMO_SOURCES)
            + " events; the database holds "
            + ", ".join(f"{totals[s]:,}" for s in DEMO_SOURCES)
            + " (a pass that failed or was skipped catches up on the next run).",
            "yellow",
        )


def _where(out: Console, database_url: str) -> None:
    url = sa.make_url(database_url)
    out.print()
    _say(out, f"Your data is in {_shown(database_url)}", "bold")
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            _say(out, "(an in-memory database: it is gone now that the demo has ended)")
            return
        path = Path(database)
        if not path.is_absolute():
            _say(out, f"  ({path.resolve()})")
        _say(out, f"Try:  sqlite3 {shlex.quote(database)} {_quote(TRY_QUERY)}")
    elif url.get_backend_name() == "postgresql":
        plain = url.set(drivername="postgresql", password=None)
        target = plain.render_as_string(hide_password=False)
        asks = " (psql asks for the password)" if url.password else ""
        _say(out, f"Try:  psql {shlex.quote(target)} -c {_quote(TRY_QUERY)}{asks}")
    else:
        _say(out, f"Try, in your SQL client:  {TRY_QUERY}")


def _shown(database_url: str) -> str:
    """The URL as users write it (``postgresql://``, not the driver's), password hidden."""
    url = sa.make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql")
    return describe_url(url.render_as_string(hide_password=False))


def _quote(sql: str) -> str:
    return '"' + sql.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _door(door: str | None, system: str | None) -> str:
    if door is None:
        return "-"
    return f"{door} ({system})" if system else door


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"
