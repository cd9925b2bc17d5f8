"""Helpers the history and service benchmarks share: a simulator in its own process,
an empty database, a child process measured by the kernel (wall time, peak RSS).

``bench/compare.py`` has its own, richer versions for the side-by-side sync
benchmark; these are the small ones ``bench/backfill.py`` and
``bench/daemon_scale.py`` need.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
    # What a list request can serve: DoorFlow never lists remote-control codes.
    served = len(sim.truth(listable=True)) if kind == "doorflow" else sim.event_count
    ready.put((sim.base_url, secret, served))
    while True:
        time.sleep(3600)


@contextmanager
def simulator(kind: str, events: int) -> Iterator[tuple[str, str, int]]:
    """The simulator's base URL, its credential, and how many events it lists."""
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


def count_rows(database_url: str) -> int:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def print_runs(runs: list[Run]) -> None:
    print(f"\n{'what':34} {'events':>9} {'seconds':>8} {'events/s':>9} {'peak RSS MB':>12}")
    for run in runs:
        print(f"{run.label:34} {run.events:>9} {run.seconds:>8.1f} {run.rate:>9.0f} "
              f"{run.peak_rss_mb:>12.0f}")  # fmt: skip
    print(
        f"\n({os.cpu_count()} cores; simulator in its own process on the same machine; "
        "peak RSS is the loader process's own, from wait4)"
    )
