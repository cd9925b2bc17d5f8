"""Cold `syncd sync` of a DoorFlow simulator into an empty PostgreSQL: events/s, peak RSS.

    python bench/sync_doorflow.py [--sizes 200000,400000] [--database-url URL]

The simulator runs in its own process on loopback; `syncd sync` runs as a child
process exactly as a user would run it (start-up and migration included), and
its peak RSS comes from the kernel (`wait4`). Side by side in the same run, the
same events are pulled by a bare baseline — fetch pages, parse, COPY three
columns into an unindexed table, no normalization, no dedup, no cursor — which
bounds what any loader can do on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psycopg
from sqlalchemy.engine import make_url

DEFAULT_URL = os.environ.get(
    "SYNCD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
START = datetime(2026, 1, 1, tzinfo=UTC)


def _serve(kind: str, events: int, ready: mp.Queue) -> None:  # type: ignore[type-arg]
    from syncd.simulators import DoorFlowSimulator, IntServSimulator, SimClock

    clock = SimClock(start=START + timedelta(days=30))
    if kind == "doorflow":
        sim = DoorFlowSimulator(seed=1, history=events, history_days=29, clock=clock,
                                name_update_share=0.0)  # fmt: skip
        secret = sim.token
    else:
        sim = IntServSimulator(seed=1, history=events, history_days=29, clock=clock)  # type: ignore[assignment]
        secret = sim.api_key
    sim.start()
    ready.put((sim.base_url, secret))
    while True:
        time.sleep(3600)


@contextmanager
def simulator(kind: str, events: int) -> Iterator[tuple[str, str]]:
    context = mp.get_context("spawn")
    ready = context.Queue()
    process = context.Process(target=_serve, args=(kind, events, ready), daemon=True)
    process.start()
    try:
        yield ready.get(timeout=300)
    finally:
        process.kill()
        process.join()


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"syncd_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Run:
    label: str
    events: int
    seconds: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the child, its stderr tail."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    if process.returncode != 0:
        raise SystemExit(f"{argv[2:]} failed ({process.returncode}):\n{tail}")
    return elapsed, usage.ru_maxrss / 1024, tail


def syncd_sync(kind: str, base_url: str, secret: str, database_url: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "syncd.toml"
        credential = "token_env" if kind == "doorflow" else "api_key_env"
        config.write_text(
            "[[sources]]\n"
            f'name = "bench"\nkind = "{kind}"\nbase_url = "{base_url}"\n'
            f'{credential} = "BENCH_SECRET"\nstart = "{START.isoformat()}"\npage_size = 1000\n'
        )
        env = {**os.environ, "BENCH_SECRET": secret, "SYNCD_LOG_LEVEL": "warning"}
        argv = [sys.executable, "-m", "syncd.cli", "--config", str(config),
                "--database-url", database_url, "sync"]  # fmt: skip
        seconds, rss, _ = run_child(argv, env)
    return seconds, rss


def count_rows(database_url: str) -> int:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def baseline(base_url: str, token: str, database_url: str) -> None:
    """Fetch every page and COPY (id, created_at, payload) into an unindexed table."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn) as conn, httpx.Client(base_url=base_url) as client:
        conn.execute("CREATE TABLE bare (id bigint, created_at timestamptz, payload jsonb)")
        page = 1
        while True:
            response = client.get(
                "/api/3/events",
                params={"since": START.isoformat(), "sort": "ASC", "n": 1000, "page": page,
                        "event_codes": ",".join(map(str, range(1, 226)))},
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            response.raise_for_status()
            items = orjson.loads(response.content)
            with conn.cursor() as cur, cur.copy("COPY bare FROM STDIN") as copy:
                for item in items:
                    copy.write_row(
                        (item.get("id"), item.get("created_at"), orjson.dumps(item).decode())
                    )
            conn.commit()
            if len(items) < 1000:
                return
            page += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,400000")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--kind", default="doorflow", choices=["doorflow", "intserv"])
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    runs: list[Run] = []
    for size in (int(s) for s in args.sizes.split(",")):
        runs.append(measure_sync(args.kind, size, args.database_url))
        if args.kind == "doorflow" and not args.no_baseline:
            with (
                simulator(args.kind, size) as (base_url, secret),
                fresh_database(args.database_url) as url,
            ):
                argv = [sys.executable, __file__, "--_baseline", base_url, secret, url]
                seconds, rss, _ = run_child(argv, dict(os.environ))
                runs.append(Run("bare fetch + COPY 3 columns", size, seconds, rss))
    print_runs(runs)


def measure_sync(kind: str, size: int, database_url: str) -> Run:
    """One cold `syncd sync` of ``size`` simulator events of ``kind``."""
    with simulator(kind, size) as (base_url, secret), fresh_database(database_url) as url:
        seconds, rss = syncd_sync(kind, base_url, secret, url)
        rows = count_rows(url)
    if rows != size:
        raise SystemExit(f"{kind}: expected {size} rows, the table has {rows}")
    return Run(f"syncd sync ({kind})", rows, seconds, rss)


def print_runs(runs: list[Run]) -> None:
    print(f"\n{'what':34} {'events':>9} {'seconds':>8} {'events/s':>9} {'peak RSS MB':>12}")
    for run in runs:
        print(f"{run.label:34} {run.events:>9} {run.seconds:>8.1f} {run.rate:>9.0f} "
              f"{run.peak_rss_mb:>12.0f}")  # fmt: skip
    print(
        f"\n({os.cpu_count()} cores; simulator in its own process on the same machine; "
        "peak RSS is the loader process's own, from wait4)"
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_baseline":
        baseline(*sys.argv[2:])
    else:
        main()
