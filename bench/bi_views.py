"""BI views on 10 million events (PostgreSQL): the plan and time of each typical query.

    python bench/bi_views.py [--admin-url URL] [--rows N] [--runs 3] [--drop]

Creates the database ``syncd_bench_bi`` next to ``--admin-url`` (default
$SYNCD_TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres)
and fills it once, server-side with ``generate_series`` (no rows travel from
Python): four sources in four time zones, two years, 200 doors and 5,000
people per source, about 70 % admits, 10 % denials, 8 % exit requests, 10 %
door states/tamper/device status, 2 % sync events. A rerun finds the rows and
only measures; ``--drop`` drops the database at the end.

For each typical BI query (one source and a date range; one door; one
person) it prints the best of ``--runs`` timings and, with ``--plans``, the
``EXPLAIN (ANALYZE, BUFFERS)`` plan. The figures are in docs/sql.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.bi import sync_sources
from syncd.config import SourceConfig
from syncd.db import migrate
from syncd.db.engine import create_engine

NAME = "syncd_bench_bi"
SOURCES = {
    "hq": "Europe/Stockholm",
    "ny": "America/New_York",
    "sydney": "Australia/Sydney",
    "kolkata": "Asia/Kolkata",
}
CHUNK = 1_000_000

GENERATE = """
INSERT INTO events (source, event_key, vendor, occurred_at, event_code, category, label,
                    door_id, door_name, person_id, person_name, credential, source_updated_at,
                    payload, first_seen_at, last_seen_at)
SELECT
    (ARRAY['hq', 'ny', 'sydney', 'kolkata'])[1 + h.s],
    g::text,
    'doorflow',
    at,
    code,
    category,
    label,
    'door-' || h.d,
    'Door ' || h.d,
    CASE WHEN category IN ('access_granted', 'access_denied') THEN 'p-' || h.p END,
    CASE WHEN category IN ('access_granted', 'access_denied')
         THEN 'Person ' || h.p END,
    CASE WHEN category IN ('access_granted', 'access_denied') THEN 'card-' || h.p END,
    at,
    jsonb_build_object('id', g),
    at,
    at
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
-- hashes, not arithmetic on g, so source, door, person and category are independent
CROSS JOIN LATERAL (
    SELECT
        abs(hashint8extended(g, 1) % 4) AS s,
        abs(hashint8extended(g, 2) % 200) AS d,
        abs(hashint8extended(g, 3) % 5000) AS p,
        abs(hashint8extended(g, 4) % 100) AS r
) AS h
CROSS JOIN LATERAL (
    SELECT TIMESTAMPTZ '2025-01-01 00:00:00+00'
        + (CAST(g AS float8) / :total) * INTERVAL '730 days' AS at
) AS t
CROSS JOIN LATERAL (
    SELECT
        CASE WHEN h.r < 70 THEN 10 WHEN h.r < 80 THEN 20 + h.r % 10 WHEN h.r < 88 THEN 30
             WHEN h.r < 96 THEN 31 + h.r % 3 WHEN h.r = 96 THEN 90 WHEN h.r = 97 THEN 1
             ELSE 100 END AS code,
        CASE WHEN h.r < 70 THEN 'access_granted' WHEN h.r < 80 THEN 'access_denied'
             WHEN h.r < 88 THEN 'exit_request' WHEN h.r < 96 THEN 'door_state'
             WHEN h.r = 96 THEN 'tamper' WHEN h.r = 97 THEN 'device_status'
             ELSE 'sync' END AS category,
        CASE WHEN h.r < 70 THEN 'Admitted (Card/fob)' WHEN h.r < 80 THEN 'Rejected'
             WHEN h.r < 88 THEN 'Request exit button pressed' ELSE 'State' END AS label
) AS c
"""

# (name, SQL): the typical questions, one source and a date range, one door, one person.
QUERIES = [
    (
        "door_activity_daily: one source, one month",
        "SELECT * FROM door_activity_daily WHERE source = 'hq' "
        "AND day >= '2026-06-01' AND day < '2026-07-01'",
    ),
    (
        "door_activity_daily: one door, one month",
        "SELECT * FROM door_activity_daily WHERE source = 'hq' AND door_id = 'door-7' "
        "AND day >= '2026-06-01' AND day < '2026-07-01'",
    ),
    (
        "attendance_daily: one source, one week",
        "SELECT * FROM attendance_daily WHERE source = 'hq' "
        "AND day >= '2026-06-01' AND day < '2026-06-08'",
    ),
    (
        "attendance_daily: one person, one month",
        "SELECT * FROM attendance_daily WHERE source = 'hq' AND person_id = 'p-42' "
        "AND day >= '2026-06-01' AND day < '2026-07-01'",
    ),
    (
        "attendance_daily: one person, all time",
        "SELECT * FROM attendance_daily WHERE source = 'hq' AND person_id = 'p-42'",
    ),
    (
        "denied_access: one source, one day, newest 100",
        "SELECT * FROM denied_access WHERE source = 'hq' AND day = '2026-06-15' "
        "ORDER BY occurred_at DESC LIMIT 100",
    ),
    (
        "denied_access: one person, one month",
        "SELECT * FROM denied_access WHERE source = 'hq' AND person_id = 'p-42' "
        "AND day >= '2026-06-01' AND day < '2026-07-01'",
    ),
    (
        "denied_access: one door, by instant, one week",
        "SELECT * FROM denied_access WHERE door_id = 'door-7' "
        "AND occurred_at >= '2026-06-01' AND occurred_at < '2026-06-08'",
    ),
    (
        "repeated_denials: one source, one month",
        "SELECT * FROM repeated_denials WHERE source = 'hq' "
        "AND day >= '2026-06-01' AND day < '2026-07-01'",
    ),
    (
        "after_hours_access: one source, one week",
        "SELECT * FROM after_hours_access WHERE source = 'hq' "
        "AND day >= '2026-06-01' AND day < '2026-06-08'",
    ),
    (
        "door_state_latest: one source",
        "SELECT * FROM door_state_latest WHERE source = 'hq'",
    ),
    (
        "door_state_latest: one door",
        "SELECT * FROM door_state_latest WHERE source = 'hq' AND door_id = 'door-7'",
    ),
    ("door_state_latest: all", "SELECT * FROM door_state_latest"),
    ("sync_health: all", "SELECT * FROM sync_health"),
]


def ensure_database(admin: str, rows: int) -> str:
    admin_dsn = make_url(admin).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{NAME}"')
    url = make_url(admin).set(drivername="postgresql+psycopg", database=NAME)
    rendered = url.render_as_string(hide_password=False)
    engine = create_engine(rendered, poolclass=sa.pool.NullPool)
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
        fill(engine, rows, now)
    engine.dispose()
    return rendered


def fill(engine: sa.Engine, rows: int, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, sync_state, rejected_events RESTART IDENTITY"))
    started = time.perf_counter()
    for lo in range(1, rows + 1, CHUNK):
        hi = min(lo + CHUNK - 1, rows)
        with engine.begin() as conn:
            conn.execute(sa.text(GENERATE), {"lo": lo, "hi": hi, "total": rows})
        print(f"  generated {hi:,} rows ({time.perf_counter() - started:.0f}s)", flush=True)
    with engine.begin() as conn:
        for source in SOURCES:
            conn.execute(
                sa.text(
                    "INSERT INTO sync_state (source, cursor, last_success_at, updated_at) "
                    "VALUES (:s, '{}', :now, :now)"
                ),
                {"s": source, "now": now},
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    print(f"  filled and analyzed in {time.perf_counter() - started:.0f}s", flush=True)


def measure(url: str, runs: int, plans: bool) -> None:
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET TIME ZONE 'UTC'")
        conn.exec_driver_sql("SET jit = off")  # as for the BI role (syncd bi-role)
        total = int(conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
        print(f"\n{total:,} events; best of {runs} runs (warm cache, jit off as for the BI role)\n")
        print(f"{'query':<52} {'rows':>7} {'ms':>9}")
        for name, sql in QUERIES:
            timings = []
            count = 0
            for _ in range(runs):
                started = time.perf_counter()
                count = len(conn.execute(sa.text(sql)).all())
                timings.append((time.perf_counter() - started) * 1000)
            print(f"{name:<52} {count:>7,} {min(timings):>9.1f}", flush=True)
            if plans:
                plan = conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")).scalars()
                print("    " + "\n    ".join(plan))
                print(f"    (median {statistics.median(timings):.1f} ms)")
    engine.dispose()


def drop(admin: str) -> None:
    admin_dsn = make_url(admin).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    print(f"dropped {NAME}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "SYNCD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--plans", action="store_true", help="print EXPLAIN ANALYZE plans")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    args = parser.parse_args()
    url = ensure_database(args.admin_url, args.rows)
    measure(url, args.runs, args.plans)
    if args.drop:
        drop(args.admin_url)


if __name__ == "__main__":
    sys.exit(main())
