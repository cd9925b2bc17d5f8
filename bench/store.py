"""Benchmark the event store: rows/s and peak RSS of ``Store.write_page``.

Three phases per method, in batches of ``--batch`` records (one ``write_page``
per batch, as the sync engine does):

1. ``new``: ``--rows`` events the table does not hold yet (all inserted);
2. ``unchanged``: the same events again (all skipped);
3. ``10% changed``: the same events, every 10th renamed (``person_name`` and the
   payload change, ``source_updated_at`` moves forward), so 10 % are updated.

Methods, each in its own subprocess (peak RSS is a process-lifetime figure) and
each starting from an empty ``events`` table:

- ``copy``: ``Store.write_page`` on PostgreSQL (COPY into a temporary table,
  one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE changed``);
- ``executemany``: the plain alternative on PostgreSQL, defined here and not in
  the package: psycopg 3's pipelined ``executemany`` of a parameterized
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE changed ... RETURNING`` (the
  Store's own clauses) in a SQLAlchemy transaction, one statement per event,
  committed the way the Store commits (asynchronously when it does);
- ``sqlite``: ``Store.write_page`` on a SQLite file.

Every phase is verified (the counts ``write_page`` returned, ``SELECT
count(*)`` and the number of renamed rows); a wrong result stops the run
before any figure is printed. The PostgreSQL database is created for the run
(``syncd_bench_<random>``, next to ``--database-url``) and dropped at the end,
also on Ctrl-C.

    .venv/bin/python bench/store.py [--rows 100000] [--batch 1000] [--repeat 1]
        [--methods copy,executemany,sqlite] [--database-url postgresql://...]

``--repeat N`` runs N interleaved rounds and compares medians: on a shared
machine one round can be off by a factor of two. The PostgreSQL rows also show
the WAL written and the checkpoints run during each phase (server-wide).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.config import normalize_database_url
from syncd.db import migrate
from syncd.db.engine import create_engine
from syncd.db.store import (
    _CHANGED,  # the Store's own clauses: both paths decide insert/update/skip alike
    _NOT_OLDER,
    _SET_CLAUSE,
    RECORD_COLUMNS,
    Store,
    WriteResult,
    dedupe_newest,
)
from syncd.records import EventRecord

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKER_URL = "SYNCD_BENCH_WORKER_URL"  # the database a worker process writes to
METHODS = ("copy", "executemany", "sqlite")
DATABASE = {"copy": "postgresql", "executemany": "postgresql", "sqlite": "sqlite"}
PHASES = ("new", "unchanged", "10% changed")
SOURCE = "bench_doorflow"
RENAMED = " (renamed)"
CHANGE_EVERY = 10

# --------------------------------------------------------------------------- data

FIRST = (
    "Joe", "Jane", "John", "Mary", "Ahmed", "Aisha", "Lars", "Ingrid", "Sven", "Karin",
    "Oliver", "Amelia", "Noah", "Olivia", "Liam", "Emma", "Mohammed", "Fatima", "Lucas", "Sofia",
    "Erik", "Maja", "Pierre", "Chloe", "Mateo", "Lucia", "Hiroshi", "Yuki", "Wei", "Priya",
)  # fmt: skip
LAST = (
    "Bloggs", "Doe", "Smith", "Jones", "Andersson", "Johansson", "Karlsson", "Nilsson",
    "Williams", "Brown", "Taylor", "Davies", "Müller", "Schmidt", "Dubois", "García",
    "Rossi", "Kowalski", "Nowak", "Tanaka", "Chen", "Patel", "Singh", "Mensah", "O'Brien",
)  # fmt: skip
DOORS = (
    "Front Entrance", "Reception", "Server Room", "Loading Dock", "Car Park Gate",
    "Stairwell A", "Stairwell B", "Lift Lobby", "Finance Office", "Meeting Room 1",
    "Kitchen", "Bike Store", "Roof Access", "Warehouse", "Lab", "Post Room",
)  # fmt: skip
# DoorFlow codes 10-33 with (label, category, traffic weight).
CODES: dict[int, tuple[str, str, int]] = {
    10: ("Admitted (Card/fob)", "access_granted", 520),
    11: ("Admitted (PIN)", "access_granted", 40),
    12: ("Admitted (Manual)", "access_granted", 10),
    13: ("Admitted (Request Exit)", "access_granted", 30),
    14: ("Admitted (Auxiliary)", "access_granted", 5),
    15: ("Admitted (Application)", "access_granted", 40),
    16: ("Admitted (Unlocked)", "access_granted", 20),
    17: ("Admitted (Apple Wallet)", "access_granted", 25),
    18: ("Admitted (Google Wallet)", "access_granted", 15),
    20: ("Rejected (Unauthorised card/fob)", "access_denied", 30),
    21: ("Rejected (Out of hours)", "access_denied", 12),
    22: ("Rejected (Lock down)", "access_denied", 2),
    23: ("Rejected (Tamper)", "access_denied", 1),
    24: ("Rejected (Unauthorised PIN)", "access_denied", 6),
    25: ("Rejected (Timeout)", "access_denied", 4),
    26: ("Rejected (Invalid credential type)", "access_denied", 2),
    27: ("Rejected (Unauthorised)", "access_denied", 8),
    28: ("Rejected (Passback detected)", "access_denied", 3),
    29: ("Rejected (Offline)", "access_denied", 2),
    30: ("Request exit button pressed", "exit_request", 80),
    31: ("Door state normal", "door_state", 60),
    32: ("Door state forced-open", "door_state", 5),
    33: ("Door state extended-open", "door_state", 20),
}
NO_PERSON = frozenset({30, 31, 32, 33})
CREDENTIAL_TYPE = {11: "pin", 17: "apple_wallet", 18: "google_wallet", 24: "pin"}
START = datetime(2026, 1, 5, tzinfo=UTC)
SPAN = timedelta(days=28)


@dataclass(frozen=True, slots=True)
class World:
    """The people and doors events are drawn from (fixed by the seed)."""

    persons: tuple[tuple[int, str, str], ...]  # (id, name, card number)
    doors: tuple[tuple[int, str, int], ...]  # (id, name, site id)


def make_world(seed: int) -> World:
    rng = random.Random(seed)
    persons = tuple(
        (
            310_000 + i,
            f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            f"{rng.randrange(10**9, 10**10)}",
        )
        for i in range(2000)
    )
    doors = tuple(
        (8_100 + i, f"{name} L{floor}", 40 + floor)
        for floor in range(1, 4)
        for i, name in enumerate(DOORS, start=100 * floor)
    )
    return World(persons, doors)


def _stamp(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pages(rows: int, batch: int, seed: int, *, changed: bool) -> Iterator[list[EventRecord]]:
    """The ``rows`` events in pages of ``batch``, generated lazily from ``seed``.

    Every call with the same arguments yields the same events; ``changed``
    renames every 10th one (events without a person get one named, as when the
    vendor attributes an event later) and moves its ``updated_at`` on a day.
    """
    world = make_world(seed)
    rng = random.Random(seed + 1)
    codes = list(CODES)
    weights = [CODES[c][2] for c in codes]
    span_ms = SPAN // timedelta(milliseconds=1)
    step_ms = max(1, span_ms // rows)
    event_id = 48_000_000
    page: list[EventRecord] = []
    for i in range(rows):
        event_id += rng.randint(1, 3)
        code = rng.choices(codes, weights)[0]
        label, category, _ = CODES[code]
        occurred = START + timedelta(milliseconds=span_ms * i // rows + rng.randrange(step_ms))
        updated = occurred + timedelta(milliseconds=rng.randrange(200, 5000))
        door_id, door_name, site_id = rng.choice(world.doors)
        person: tuple[int, str, str] | None = (
            None
            if code in NO_PERSON
            else world.persons[int(len(world.persons) * rng.random() ** 2)]
        )
        direction = rng.choice(("in", "out"))
        person_id = str(person[0]) if person else None
        person_name = person[1] if person else None
        card = person[2] if person and code not in CREDENTIAL_TYPE else None
        if changed and i % CHANGE_EVERY == 0:
            person_name = f"{person_name or 'Unknown person'}{RENAMED}"
            updated += timedelta(days=1)
        raw: dict[str, Any] = {
            "id": event_id,
            "event_code": code,
            "event_label": label,
            "created_at": _stamp(occurred),
            "updated_at": _stamp(updated),
            "door_controller_id": door_id,
            "door_controller_name": door_name,
            "site_id": site_id,
            "person_id": int(person_id) if person_id else None,
            "person_name": person_name,
            "credentials_number": card,
            "credential_type": CREDENTIAL_TYPE.get(code, "card") if person else None,
            "direction": direction,
            "acknowledged": False,
            "additional_data": {"card_number": card, "reader": f"Reader {door_id % 4 + 1}"},
            "controller_firmware": "4.12.3",
        }
        page.append(
            EventRecord(
                event_key=str(event_id),
                vendor="doorflow",
                occurred_at=occurred,
                event_code=code,
                category=category,
                label=label,
                payload=orjson.dumps(raw),
                door_id=str(door_id),
                door_name=door_name,
                person_id=person_id,
                person_name=person_name,
                credential=card,
                source_updated_at=updated,
            )
        )
        if len(page) == batch:
            yield page
            page = []
    if page:
        yield page


# --------------------------------------------------------------------------- the alternative

_VALUES = ", ".join(["%s"] * (len(RECORD_COLUMNS) + 2))
EXECUTEMANY_UPSERT = f"""
INSERT INTO events ({", ".join(RECORD_COLUMNS)}, first_seen_at, last_seen_at)
VALUES ({_VALUES})
ON CONFLICT (source, event_key) DO UPDATE
    SET {_SET_CLAUSE}, last_seen_at = excluded.last_seen_at
    WHERE {_CHANGED} AND {_NOT_OLDER}
RETURNING (xmax = 0) AS inserted
"""
# Store.write_page commits PostgreSQL pages without waiting for the WAL flush;
# the alternative does the same whenever the Store does, so that the two differ
# only in how the rows reach the table.
ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF"
STORE_ASYNC_COMMIT = "synchronous_commit TO OFF" in inspect.getsource(Store.write_page)


def executemany_write_page(
    engine: sa.Engine, source: str, records: Sequence[EventRecord], now: datetime
) -> WriteResult:
    """``Store.write_page`` without rejected records and cursor, as a plain executemany.

    One SQLAlchemy transaction; in it, psycopg's pipelined ``executemany`` of
    the upsert on the transaction's own DBAPI connection (as the Store does for
    COPY). ``returning=True`` brings back one row per inserted or updated
    event, which is how the counts come in-band, as in the Store's merge.
    SQLAlchemy's own ``exec_driver_sql`` executemany cannot return those rows,
    and counting the existing keys in a query of its own costs a round trip
    (and, on a table with no statistics, a scan of the source's rows).
    """
    unique = dedupe_newest(records)
    if not unique:
        return WriteResult(unchanged=len(records))
    inserted = updated = 0
    with engine.begin() as conn:
        if STORE_ASYNC_COMMIT:
            conn.exec_driver_sql(ASYNC_COMMIT)
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        with raw.cursor() as cur:
            cur.executemany(
                EXECUTEMANY_UPSERT,
                [
                    (
                        source, r.event_key, r.vendor, r.occurred_at, r.event_code,
                        r.category, r.label, r.door_id, r.door_name, r.person_id,
                        r.person_name, r.credential, r.system_id, r.sequence_id,
                        r.source_updated_at, r.payload.decode(), now, now,
                    )
                    for r in unique
                ],
                returning=True,
            )  # fmt: skip
            while True:
                for (was_inserted,) in cur.fetchall():
                    if was_inserted:
                        inserted += 1
                    else:
                        updated += 1
                if not cur.nextset():
                    break
    return WriteResult(
        inserted=inserted, updated=updated, unchanged=len(records) - inserted - updated
    )


# --------------------------------------------------------------------------- worker


@dataclass(slots=True)
class PhaseResult:
    phase: str
    rows: int
    seconds: float
    inserted: int
    updated: int
    unchanged: int
    peak_rss_mb: float
    table_rows: int
    renamed_rows: int
    renamed_payloads: int
    wal_mb: float | None  # PostgreSQL: WAL written server-wide during the phase
    checkpoints: int | None  # PostgreSQL: checkpoints the server ran during the phase


@dataclass(frozen=True, slots=True)
class Run:
    method: str
    round: int
    result: dict[str, Any]


class WrongResult(AssertionError):
    """The store did not do what the phase requires: no figures may be reported."""


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _check_table(engine: sa.Engine) -> tuple[int, int, int]:
    if engine.dialect.name == "postgresql":
        payload_name = "payload->>'person_name'"
    else:
        payload_name = "json_extract(payload, '$.person_name')"
    query = sa.text(
        "SELECT count(*), "
        "count(*) FILTER (WHERE person_name LIKE :renamed), "
        f"count(*) FILTER (WHERE {payload_name} LIKE :renamed) "
        "FROM events WHERE source = :source"
    )
    with engine.connect() as conn:
        row = conn.execute(query, {"renamed": f"%{RENAMED}", "source": SOURCE}).one()
    return int(row[0]), int(row[1]), int(row[2])


def _verify(result: PhaseResult, rows: int, method: str) -> None:
    changed = len(range(0, rows, CHANGE_EVERY))
    expected = {
        "new": (rows, 0, 0, 0),
        "unchanged": (0, 0, rows, 0),
        "10% changed": (0, changed, rows - changed, changed),
    }[result.phase]
    got = (result.inserted, result.updated, result.unchanged, result.renamed_rows)
    problems = []
    if got != expected:
        problems.append(
            "inserted/updated/unchanged/renamed rows = "
            f"{'/'.join(map(str, got))}, expected {'/'.join(map(str, expected))}"
        )
    if result.table_rows != rows:
        problems.append(f"SELECT count(*) = {result.table_rows}, expected {rows}")
    if result.renamed_payloads != expected[3]:
        problems.append(f"{result.renamed_payloads} payloads renamed, expected {expected[3]}")
    if problems:
        raise WrongResult(f"{method}, phase {result.phase!r}: " + "; ".join(problems))


def _server_counters(engine: sa.Engine) -> tuple[float, int] | None:
    """PostgreSQL's WAL position (bytes) and checkpoint count; None on SQLite."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        version = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
        view = (
            "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
            if version >= 170000
            else "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
        )
        wal = conn.execute(
            sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')")
        ).scalar_one()
        checkpoints = conn.execute(sa.text(view)).scalar_one()
    return float(wal), int(checkpoints)


def run_worker(method: str, url: str, rows: int, batch: int, seed: int) -> dict[str, Any]:
    engine = create_engine(url)
    store = Store(engine)
    with engine.connect() as conn:  # the pool's connection, opened before the baseline
        conn.execute(sa.text("SELECT 1"))
    baseline = peak_rss_mb()
    results: list[PhaseResult] = []
    for phase in PHASES:
        print(f"  {method}: {phase} ...", file=sys.stderr, flush=True)
        before = _server_counters(engine)
        total = WriteResult()
        seconds = 0.0
        for page in pages(rows, batch, seed, changed=phase == "10% changed"):
            now = datetime.now(UTC)
            started = time.perf_counter()
            if method == "executemany":
                written = executemany_write_page(engine, SOURCE, page, now)
            else:
                written = store.write_page(SOURCE, page, [], None, now)
            seconds += time.perf_counter() - started
            total += written
        peak = peak_rss_mb()
        after = _server_counters(engine)
        table_rows, renamed_rows, renamed_payloads = _check_table(engine)
        result = PhaseResult(
            phase,
            rows,
            seconds,
            total.inserted,
            total.updated,
            total.unchanged,
            peak,
            table_rows,
            renamed_rows,
            renamed_payloads,
            (after[0] - before[0]) / 2**20 if before and after else None,
            after[1] - before[1] if before and after else None,
        )
        _verify(result, rows, method)
        results.append(result)
    engine.dispose()
    return {"baseline_rss_mb": baseline, "phases": [asdict(r) for r in results]}


# --------------------------------------------------------------------------- driver


def _admin_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgDatabase:
    """A fresh, migrated database next to the admin URL, dropped by :meth:`drop`."""

    def __init__(self, admin_url: str) -> None:
        self.admin = _admin_dsn(admin_url)
        self.name = f"syncd_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = (
            make_url(admin_url)
            .set(drivername="postgresql+psycopg", database=self.name)
            .render_as_string(hide_password=False)
        )
        engine = create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            migrate.upgrade(engine)
            with engine.connect() as conn:
                settings: dict[str, str] = dict(
                    conn.execute(
                        sa.text(
                            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                            "('fsync', 'synchronous_commit', 'shared_buffers', 'autovacuum')"
                        )
                    ).all()
                )
                version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        except BaseException:
            self.drop()
            raise
        finally:
            engine.dispose()
        self.description = (
            f"PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in settings.items())})"
        )

    def reset(self) -> str:
        """Empty the tables and flush the previous method's dirty pages; says what it did."""
        engine = create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text("TRUNCATE events, sync_state, rejected_events RESTART IDENTITY")
                )
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("CHECKPOINT"))
                    conn.commit()
            except sa.exc.DBAPIError:
                return "TRUNCATE (CHECKPOINT not permitted)"
        finally:
            engine.dispose()
        return "TRUNCATE + CHECKPOINT"

    def drop(self) -> None:
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        print(f"dropped database {self.name}", file=sys.stderr)


def _fresh_sqlite(directory: Path) -> str:
    path = directory / f"bench_{uuid.uuid4().hex[:8]}.db"
    url = f"sqlite:///{path}"
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return url


def _run_subprocess(method: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--rows",
        str(args.rows),
        "--batch",
        str(args.batch),
        "--seed",
        str(args.seed),
    ]
    # The URL goes by environment, not argv: it may carry a password.
    env = {**os.environ, WORKER_URL: url}
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench/store.py: {method} failed (exit {done.returncode}); no figures")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _table(runs: list[Run]) -> str:
    header = (
        "method",
        "database",
        "phase",
        "rows",
        "seconds",
        "rows/s",
        "peak RSS MB",
        "inserted",
        "updated",
        "unchanged",
        "WAL MB",
        "ckpts",
        "check: count(*), renamed",
    )
    several = max(r.round for r in runs) > 1
    lines: list[tuple[str, ...]] = []
    for run in runs:
        label = f"{run.method} #{run.round}" if several else run.method
        database = DATABASE[run.method]
        baseline = f"{run.result['baseline_rss_mb']:.1f}"
        lines.append((label, database, "baseline", "", "", "", baseline, *[""] * 6))
        for p in run.result["phases"]:
            lines.append(
                (
                    label,
                    database,
                    p["phase"],
                    f"{p['rows']:,}",
                    f"{p['seconds']:.2f}",
                    f"{p['rows'] / p['seconds']:,.0f}",
                    f"{p['peak_rss_mb']:.1f}",
                    f"{p['inserted']:,}",
                    f"{p['updated']:,}",
                    f"{p['unchanged']:,}",
                    "-" if p["wal_mb"] is None else f"{p['wal_mb']:.1f}",
                    "-" if p["checkpoints"] is None else str(p["checkpoints"]),
                    f"ok: {p['table_rows']:,}, {p['renamed_rows']:,}",
                )
            )
    return _render(header, lines, right=range(3, 12))


def _render(header: Sequence[str], lines: Sequence[Sequence[str]], right: range) -> str:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return " | ".join(cells).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(row) for row in lines)])


def _comparison(runs: list[Run]) -> str | None:
    rates: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for p in run.result["phases"]:
            rates.setdefault((run.method, p["phase"]), []).append(p["rows"] / p["seconds"])
    if not any(m == "copy" for m, _ in rates) or not any(m == "executemany" for m, _ in rates):
        return None
    several = max(r.round for r in runs) > 1
    what = "median rows/s" if several else "rows/s"
    header = ("phase", f"copy {what}", f"executemany {what}", "copy / executemany")
    lines = []
    for phase in PHASES:
        copy_rate = statistics.median(rates[("copy", phase)])
        many_rate = statistics.median(rates[("executemany", phase)])
        lines.append(
            (phase, f"{copy_rate:,.0f}", f"{many_rate:,.0f}", f"{copy_rate / many_rate:.2f}x")
        )
    return _render(header, lines, right=range(1, 4))


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SYNCD_BENCH_DATABASE_URL", DEFAULT_URL),
        help="a PostgreSQL server to create the benchmark database on "
        f"(default: $SYNCD_BENCH_DATABASE_URL, else {DEFAULT_URL})",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="events per phase")
    parser.add_argument("--batch", type=int, default=1000, help="events per write_page")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, in order")
    parser.add_argument("--seed", type=int, default=20260105)
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of all methods, interleaved (default 1)"
    )
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.batch < 1 or args.repeat < 1:
        parser.error("--rows, --batch and --repeat must be positive")

    if args.worker:
        try:
            url = os.environ[WORKER_URL]
            result = run_worker(args.worker, url, args.rows, args.batch, args.seed)
        except WrongResult as exc:
            print(f"WRONG RESULT: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        print(json.dumps(result))
        return 0

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"--methods: choose from {', '.join(METHODS)} (got {args.methods!r})")

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        runs, notes = run_all(args, methods)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except psycopg.OperationalError as exc:
        print(f"bench/store.py: PostgreSQL: {str(exc).strip()}", file=sys.stderr)
        return 2
    report(args, runs, notes)
    return 0


def run_all(args: argparse.Namespace, methods: Sequence[str]) -> tuple[list[Run], list[str]]:
    """Each method in its own subprocess on an empty table; the databases are removed after."""
    runs: list[Run] = []
    notes: list[str] = []
    load = os.getloadavg()[0]
    with ExitStack() as cleanup:
        pg: PgDatabase | None = None
        directory: Path | None = None
        if any(DATABASE[m] == "postgresql" for m in methods):
            pg = PgDatabase(normalize_database_url(args.database_url))
            cleanup.callback(pg.drop)
            print(f"created and migrated database {pg.name}", file=sys.stderr)
            commit = "synchronous_commit OFF" if STORE_ASYNC_COMMIT else "the server's setting"
            notes.append(f"{pg.description}; page transactions commit with {commit}")
        if "sqlite" in methods:
            temp = tempfile.TemporaryDirectory(prefix="syncd_bench_")
            directory = Path(cleanup.enter_context(temp))
            notes.append(
                f"SQLite {sqlite3.sqlite_version} (file in {directory}, WAL, synchronous=NORMAL)"
            )
        for round_ in range(1, args.repeat + 1):
            for method in methods:
                if DATABASE[method] == "postgresql":
                    assert pg is not None
                    url = pg.url
                    how = pg.reset()
                else:
                    assert directory is not None
                    url = _fresh_sqlite(directory)
                    how = "fresh file"
                print(
                    f"round {round_}: {method} on {DATABASE[method]} (empty table: {how})",
                    file=sys.stderr,
                )
                runs.append(Run(method, round_, _run_subprocess(method, url, args)))
    notes.append(
        f"load average (1 min) {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
        " (anything else running shares the CPUs)"
    )
    return runs, notes


def report(args: argparse.Namespace, runs: list[Run], notes: list[str]) -> None:
    print()
    print(
        f"syncd store benchmark: {args.rows:,} events per phase, batches of {args.batch:,}, "
        f"seed {args.seed}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLAlchemy {sa.__version__}, psycopg {psycopg.__version__} (libpq {psycopg.pq.version()})"
    )
    for note in notes:
        print(f"  {note}")
    print(
        "  seconds = time inside write_page only (data generation excluded); cursor None,"
        " no rejected records.\n"
        "  peak RSS = ru_maxrss of the method's own process, cumulative over its phases"
        " (baseline = after imports and the first connection).\n"
        "  WAL MB, ckpts = WAL written and checkpoints run by the PostgreSQL server during the"
        " phase, server-wide\n"
        "  (other databases' work included; after a checkpoint, first writes to a page log"
        " the whole page)."
    )
    print()
    print(_table(runs))
    comparison = _comparison(runs)
    if comparison:
        print()
        print(comparison)


if __name__ == "__main__":
    sys.exit(main())
