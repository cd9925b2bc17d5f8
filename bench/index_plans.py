"""Indexes of ``events`` that earn their cost: each one's load cost, and the plan of every query.

    python bench/index_plans.py [--rows 10000000] [--cost-rows 200000] [--runs 3]
                                [--skip-costs] [--skip-plans] [--before] [--analyze] [--drop]

Two parts, both against PostgreSQL (``--admin-url``, default
$SYNCD_TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres):

**Load cost per index** (``--cost-rows`` rows, default 200,000): the rows are
generated server-side (``bench/bi_views.py``'s generator), written once to a
server-side file, then timed as one binary ``COPY ... FROM`` that file into a
fresh table of ``events``' columns carrying: no index; the unique
(``source``, ``event_key``) only; that plus each one index of the schema at
head (and of the schema before migration 0011); every index at head; every
index before 0011. Median of ``--runs``, a ``CHECKPOINT`` before each. An
index's cost is its time over the unique-only table's.

**Plans at 10 M rows** (``--rows``): the database ``syncd_bench_indexes``
(migrated to head, filled once server-side with ``generate_series``; indexes
built after the rows, which is quicker) and every BI view's typical query
(``bench/bi_views.py``'s), the queries documented in docs/sql.md, ``status``'s
and reconciliation's counts, and the contract's readings by time, by source
and time, by person and time, by door and time: ``EXPLAIN`` of each, the
``events`` indexes it uses, and whether it reads ``events`` sequentially.
Exit 1 if a query that should use an index does not; ``--analyze`` runs each
query too and shows its time (best of two). ``--before`` also
downgrades the database to the indexes before 0011 and prints the same
table, to compare (then upgrades it again).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bi_views import GENERATE, QUERIES, SOURCES, fill

from syncd.bi import sync_sources
from syncd.config import SourceConfig
from syncd.db import migrate
from syncd.db.engine import create_engine

NAME = "syncd_bench_indexes"
COLUMNS = (
    "source, event_key, vendor, occurred_at, event_code, category, label, door_id, "
    "door_name, person_id, person_name, credential, system_id, sequence_id, "
    "source_updated_at, payload, first_seen_at, last_seen_at"
)
# The three indexes migration 0011 replaced, as they were (0001).
BEFORE_0011 = {
    "ix_events_occurred_at": "CREATE INDEX ix_events_occurred_at ON events (occurred_at)",
    "ix_events_person_id_occurred_at": (
        "CREATE INDEX ix_events_person_id_occurred_at ON events (person_id, occurred_at)"
    ),
    "ix_events_door_id_occurred_at": (
        "CREATE INDEX ix_events_door_id_occurred_at ON events (door_id, occurred_at)"
    ),
}
UNIQUE = "uq_events_source_event_key"

# (name, SQL, reads every row by design): beyond the BI views' typical queries.
MORE_QUERIES: list[tuple[str, str, bool]] = [
    # The contract: "indexes for reading by time, by source and time, by
    # person and time, by door and time".
    (
        "by time: one day, all sources",
        "SELECT * FROM events WHERE occurred_at >= '2026-06-01' AND occurred_at < '2026-06-02'",
        False,
    ),
    (
        "by source and time: one day",
        "SELECT * FROM events WHERE source = 'hq' "
        "AND occurred_at >= '2026-06-01' AND occurred_at < '2026-06-02'",
        False,
    ),
    (
        "by source: newest 100",
        "SELECT * FROM events WHERE source = 'hq' ORDER BY occurred_at DESC LIMIT 100",
        False,
    ),
    (
        "by person and time: one month",
        "SELECT * FROM events WHERE person_id = 'p-42' "
        "AND occurred_at >= '2026-06-01' AND occurred_at < '2026-07-01'",
        False,
    ),
    (
        "by door and time: one week",
        "SELECT * FROM events WHERE door_id = 'door-7' "
        "AND occurred_at >= '2026-06-01' AND occurred_at < '2026-06-08'",
        False,
    ),
    # syncd's own reads: reconciliation's count of a span (Store.count_span),
    # the newest event of a source (metrics), status's totals (every row).
    (
        "reconcile: count of one source's day",
        "SELECT count(*) FROM events WHERE source = 'hq' "
        "AND occurred_at >= '2026-06-01' AND occurred_at < '2026-06-02' "
        "AND event_code IN (1, 10, 20, 30, 31, 90, 100)",
        False,
    ),
    (
        "newest event of a source",
        "SELECT max(occurred_at) FROM events WHERE source = 'hq'",
        False,
    ),
    (
        "status: rows and newest per source",
        "SELECT source, count(*), max(occurred_at) FROM events GROUP BY source",
        True,
    ),
    # docs/sql.md's examples.
    (
        "docs: ten busiest doors last month",
        "SELECT door_name, sum(events) AS events, sum(denied) AS denied "
        "FROM door_activity_daily WHERE source = 'hq' "
        "AND day >= '2026-05-01' AND day < '2026-06-01' "
        "GROUP BY door_id, door_name ORDER BY events DESC LIMIT 10",
        False,
    ),
    (
        "docs: who was in on a day",
        "SELECT person_name, first_admit_at, last_admit_at FROM attendance_daily "
        "WHERE source = 'hq' AND day = '2026-05-30' ORDER BY first_admit_at",
        False,
    ),
    (
        "docs: denials by reason this week",
        "SELECT reason, count(*) FROM denied_access WHERE source = 'hq' "
        "AND day >= '2026-05-24' AND day < '2026-05-31' GROUP BY reason",
        False,
    ),
    (
        "docs: doors forced or held open",
        "SELECT door_name, label, changed_at FROM door_state_latest "
        "WHERE source = 'hq' AND event_code IN (32, 33)",
        False,
    ),
    (
        "docs: events per code at a source",
        "SELECT e.event_code, c.label, count(*) FROM events e LEFT JOIN event_codes c "
        "ON c.vendor = e.vendor AND c.code = e.event_code WHERE e.source = 'hq' "
        "GROUP BY e.event_code, c.label",
        True,
    ),
]
# The BI views' typical queries: sync_health counts every row of every source.
ALL_QUERIES = [(name, sql, name.startswith("sync_health")) for name, sql in QUERIES]
ALL_QUERIES += MORE_QUERIES


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


def _sa_url(admin: str, database: str) -> str:
    url = make_url(admin).set(drivername="postgresql+psycopg", database=database)
    return url.render_as_string(hide_password=False)


def _create_database(admin: str, name: str) -> None:
    with psycopg.connect(_dsn(admin), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database(admin: str, name: str) -> None:
    with psycopg.connect(_dsn(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _secondary_indexes(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Every index of ``events`` but the primary key and the unique key: name -> DDL."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' "
        "AND indexname NOT IN ('pk_events', %s) ORDER BY indexname",
        (UNIQUE,),
    ).fetchall()
    return dict(rows)


# -- load cost per index ---------------------------------------------------------


def costs(admin: str, rows: int, runs: int) -> None:
    name = f"syncd_bench_costs_{uuid.uuid4().hex[:8]}"
    _create_database(admin, name)
    path = f"/tmp/{name}.bin"  # noqa: S108 (the server's own file)
    try:
        engine = create_engine(_sa_url(admin, name), poolclass=sa.pool.NullPool)
        migrate.upgrade(engine)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(sa.text(GENERATE), {"lo": 1, "hi": rows, "total": rows})
        engine.dispose()
        with psycopg.connect(_dsn(_sa_url(admin, name)), autocommit=True) as conn:
            head = _secondary_indexes(conn)
            conn.execute(
                f"COPY (SELECT {COLUMNS} FROM events ORDER BY id) TO '{path}' (FORMAT BINARY)"
            )
            unique = "ALTER TABLE t ADD UNIQUE (source, event_key)"
            pk = "ALTER TABLE t ADD PRIMARY KEY (id)"
            variants: list[tuple[str, list[str]]] = [
                ("no index", []),
                ("unique (source, event_key) only", [unique]),
                ("+ primary key (id)", [unique, pk]),
            ]
            for index, ddl in head.items():
                old = BEFORE_0011.get(index)
                if old is not None:
                    variants.append((f"+ {index}, before 0011", [unique, _on_t(old)]))
                variants.append((f"+ {index}" + (", 0011" if old else ""), [unique, _on_t(ddl)]))
            before = {**head, **BEFORE_0011}
            variants.append(("all, before 0011", [unique, pk, *map(_on_t, before.values())]))
            variants.append(("all, head (this schema)", [unique, pk, *map(_on_t, head.values())]))
            print(
                f"\nload cost of each events index: {rows:,} rows, binary COPY from a server-side "
                f"file, median of {runs}; db cpu s: the server process's CPU"
            )
            print(f"{'table carries':<52} {'seconds':>8} {'db cpu s':>9} {'cpu over unique':>16}")
            base = None
            for label, ddls in variants:
                timings = [_timed_copy(conn, admin, path, ddls) for _ in range(runs)]
                seconds = statistics.median(t[0] for t in timings)
                cpu = statistics.median(t[1] for t in timings)
                if label.startswith("unique"):
                    base = cpu
                extra = (
                    ""
                    if base is None or not ddls or label.startswith("unique")
                    else (f"{cpu - base:+.2f}")
                )
                print(f"{label:<52} {seconds:>8.2f} {cpu:>9.2f} {extra:>16}", flush=True)
            conn.execute(f"COPY (SELECT 1 WHERE false) TO '{path}'")
        del now
    finally:
        _drop_database(admin, name)
        if os.path.exists(path):
            os.unlink(path)


def _on_t(ddl: str) -> str:
    """An index definition of ``events`` as one of the scratch table ``t`` (unnamed)."""
    _, _, rest = ddl.partition(" ON ")
    rest = rest.replace("public.events", "t", 1).replace("events", "t", 1)
    return "CREATE INDEX ON " + rest


def _timed_copy(
    conn: psycopg.Connection[Any], admin: str, path: str, ddls: list[str]
) -> tuple[float, float]:
    conn.execute("DROP TABLE IF EXISTS t")
    conn.execute("CREATE TABLE t (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY)")
    for ddl in ddls:
        conn.execute(ddl)
    with psycopg.connect(_dsn(admin), autocommit=True) as other:
        other.execute("CHECKPOINT")
    pid = conn.info.backend_pid
    before = _cpu(pid)
    started = time.perf_counter()
    conn.execute(f"COPY t ({COLUMNS}) FROM '{path}' (FORMAT BINARY)")
    seconds = time.perf_counter() - started
    cpu = _cpu(pid) - before
    conn.execute("DROP TABLE t")
    return seconds, cpu


def _cpu(pid: int) -> float:
    """The server process's CPU seconds so far: steadier than wall time on a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- plans at 10 M rows -------------------------------------------------------------


def ensure_filled(admin: str, rows: int) -> str:
    _create_database(admin, NAME)
    url = _sa_url(admin, NAME)
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    migrate.upgrade(engine)
    configs = [
        SourceConfig(name=name, kind="doorflow", base_url="http://127.0.0.1:1", timezone=zone)
        for name, zone in SOURCES.items()
    ]
    now = datetime.now(UTC)
    sync_sources(engine, configs, now)
    with engine.connect() as conn:
        have = int(conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
    if have != rows:
        # Rows first, indexes after: a sorted build is several times quicker
        # than maintaining eight indexes row by row.
        with psycopg.connect(_dsn(url), autocommit=True) as conn:
            indexes = _secondary_indexes(conn)
            for index in indexes:
                conn.execute(f"DROP INDEX {index}")
        fill(engine, rows, now)
        started = time.perf_counter()
        with psycopg.connect(_dsn(url), autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '256MB'")
            for ddl in indexes.values():
                conn.execute(ddl)
            conn.execute("ANALYZE events")
        print(f"  indexes built in {time.perf_counter() - started:.0f}s", flush=True)
    engine.dispose()
    return url


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def plans(url: str, title: str, analyze: bool = False) -> list[str]:
    """Print each query's events indexes; the names of those that lost their index path.

    ``analyze``: run each query (``EXPLAIN ANALYZE``, best of two) and show its time.
    """
    failed = []
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET jit = off")  # as for the BI role (syncd bi-role)
        indexes = sorted(_secondary_indexes(conn))
        total = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'events'")
        count = total.fetchone()
        print(f"\n{title}: about {count[0] if count else 0:,} events; indexes {', '.join(indexes)}")
        print(f"{'query':<50} {'cost':>10} {'ms':>8}  events read by")
        explain = "EXPLAIN (ANALYZE, FORMAT JSON)" if analyze else "EXPLAIN (FORMAT JSON)"
        for name, sql, full in ALL_QUERIES:
            ms = ""
            for _ in range(2 if analyze else 1):
                row = conn.execute(f"{explain} {sql}").fetchone()
                assert row is not None
                if analyze:
                    took = row[0][0]["Execution Time"]
                    ms = f"{took:.1f}" if not ms else f"{min(float(ms), took):.1f}"
            plan = row[0][0]["Plan"]
            used = []
            sequential = False
            for node in _nodes(plan):
                if node.get("Relation Name") == "events" or "events" in node.get("Index Name", ""):
                    if node["Node Type"] in ("Seq Scan", "Parallel Seq Scan"):
                        sequential = True
                    elif "Index Name" in node:
                        used.append(f"{node['Node Type'].lower()} {node['Index Name']}")
            how = ", ".join(dict.fromkeys(used)) or "-"
            if sequential:
                how = (
                    "SEQ SCAN"
                    + ("" if full else " (no index path!)")
                    + (f"; {how}" if used else "")
                )
            if (sequential or not used) and not full:
                failed.append(name)
            print(f"{name:<50} {plan['Total Cost']:>10,.0f} {ms:>8}  {how}", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "SYNCD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--cost-rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-costs", action="store_true")
    parser.add_argument("--skip-plans", action="store_true")
    parser.add_argument(
        "--before", action="store_true", help="also show the plans with the indexes before 0011"
    )
    parser.add_argument(
        "--analyze", action="store_true", help="run each query too (EXPLAIN ANALYZE, best of 2)"
    )
    parser.add_argument("--drop", action="store_true", help="drop the 10 M row database at the end")
    args = parser.parse_args()
    failed: list[str] = []
    if not args.skip_costs:
        costs(args.admin_url, args.cost_rows, args.runs)
    if not args.skip_plans:
        url = ensure_filled(args.admin_url, args.rows)
        if args.before:
            engine = create_engine(url, poolclass=sa.pool.NullPool)
            migrate.downgrade(engine, "0006")
            plans(url, "before migration 0011", args.analyze)
            migrate.upgrade(engine)
            engine.dispose()
        failed = plans(url, "this schema (head)", args.analyze)
        if args.drop:
            _drop_database(args.admin_url, NAME)
    if failed:
        raise SystemExit(f"no index path for: {', '.join(failed)}")


if __name__ == "__main__":
    main()
