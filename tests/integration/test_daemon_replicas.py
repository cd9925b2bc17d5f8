"""Several ``syncd run`` on one PostgreSQL: a source is worked by one process at a time,
and the sources of a process that dies are picked up by the other."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.config import Secret, SourceConfig
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.simulators import DoorFlowSimulator, Faults
from tests.integration.daemonhelpers import (
    DaemonProcess,
    free_port,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)

SOURCES = [f"site{i}" for i in range(10)]

Span = tuple[float, float]


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def held(daemon: DaemonProcess, died: float = float("inf")) -> dict[str, list[Span]]:
    """When this process held each source: pass_started .. pass_finished/failed
    (or until it ``died``: the server releases a dead session's locks)."""
    spans: dict[str, list[Span]] = {name: [] for name in SOURCES}
    open_at: dict[str, float] = {}
    for entry in daemon.logs():
        source, event = entry.get("source"), entry.get("event")
        if source not in spans:
            continue
        if event == "pass_started":
            open_at[source] = _epoch(entry["timestamp"])
        elif event in ("pass_finished", "pass_failed") and source in open_at:
            spans[source].append((open_at.pop(source), _epoch(entry["timestamp"])))
    for source, start in open_at.items():  # still running, or killed mid-pass
        spans[source].append((start, died))
    return spans


def overlaps(a: list[Span], b: list[Span]) -> list[tuple[Span, Span]]:
    return [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]


def test_two_daemons_share_ten_sources_without_overlap_and_one_takes_over(
    pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    # Slow answers make every pass long enough to collide if the lock did not work.
    with DoorFlowSimulator(seed=61, history=300, rate=4.0, faults=Faults(latency=0.1)) as sim:
        ports = [free_port(), free_port()]
        sources = [
            source_toml(name, "doorflow", sim.base_url, token_env="T", interval=0.5, page_size=100)
            for name in SOURCES
        ]
        config = write_config(tmp_path / "syncd.toml", ports[0], sources, workers=10)
        with ExitStack() as stack:
            daemons = [
                stack.enter_context(
                    running_daemon(
                        config,
                        pg_url,
                        port,
                        {"T": sim.token},
                        extra_args=("--migrate", "--listen", f"127.0.0.1:{port}"),
                    )
                )
                for port in ports
            ]
            a, b = daemons

            def both_worked_and_met() -> bool:
                spans = [held(d) for d in daemons]
                each = all(sum(len(s[name]) for s in spans) >= 3 for name in SOURCES)
                both = all(sum(len(v) for v in s.values()) >= 3 for s in spans)
                met = a.events("pass_skipped") and b.events("pass_skipped")
                return each and both and bool(met)

            wait_for(
                both_worked_and_met,
                60,
                "both at work, each skipping what the other held",
                every=0.5,
            )
            killed = time.time()
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=10)

            def b_took_over() -> bool:
                spans = held(b)
                return all(any(start > killed for start, _ in spans[name]) for name in SOURCES)

            wait_for(b_took_over, 30, "the survivor passing every source", every=0.5)
            assert b.stop() == 0

        spans_a, spans_b = held(a, died=killed), held(b)
        for name in SOURCES:
            assert not overlaps(spans_a[name], spans_b[name]), name
        # Both did real work on the same sources, kept apart by the lock alone.
        assert sum(len(s) for s in spans_a.values()) >= 3
        assert sum(len(s) for s in spans_b.values()) >= 3


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_make_one_pass_per_source_per_interval_in_all(
    pg_engine: sa.Engine, pg_url: str, tmp_path: Path, replicas: int
) -> None:
    """Issue 20: a replica that takes the lock just after another passed the source
    skips it, so N replicas cost the vendor what one does (list requests counted at
    the simulator)."""
    interval = 2.0
    window = 16.0
    with DoorFlowSimulator(seed=67, history=50) as sim:
        ports = [free_port() for _ in range(replicas)]
        sources = [
            source_toml(name, "doorflow", sim.base_url, token_env="T", interval=interval)
            for name in SOURCES
        ]
        config = write_config(tmp_path / "syncd.toml", ports[0], sources, workers=4)
        with ExitStack() as stack:
            daemons = [
                stack.enter_context(
                    running_daemon(
                        config,
                        pg_url,
                        port,
                        {"T": sim.token},
                        extra_args=("--migrate", "--listen", f"127.0.0.1:{port}"),
                    )
                )
                for port in ports
            ]

            def every_source_passed() -> bool:
                done = {e["source"] for d in daemons for e in d.events("pass_finished")}
                return done >= set(SOURCES)

            wait_for(every_source_passed, 60, "a first pass of every source", every=0.5)
            time.sleep(interval)  # the first passes (history) are behind us
            before, started = sim.stats.get("pages", 0), time.monotonic()
            time.sleep(window)
            lists, elapsed = sim.stats.get("pages", 0) - before, time.monotonic() - started
            skipped = sum(len(d.events("pass_skipped")) for d in daemons)
            for daemon in daemons:
                assert daemon.stop() == 0
    # One quiet pass is one list request; the fire times drift by up to 10 %.
    rounds = elapsed / interval
    expected = len(SOURCES) * rounds
    assert lists <= 1.25 * expected, (lists, expected, replicas)
    assert lists >= 0.75 * expected / 1.1, (lists, expected, replicas)
    assert skipped > 0


def test_a_pass_whose_lock_connection_dies_commits_no_further_page(pg_engine: sa.Engine) -> None:
    """The session lock dies with its connection: another replica may take the source
    at once, so the pass must stop before its next page."""
    store = Store(pg_engine)
    page = 20
    with DoorFlowSimulator(seed=71, history=400, faults=Faults(latency=0.1)) as sim:
        config = SourceConfig(
            name="lockloss",
            kind="doorflow",
            base_url=sim.base_url,
            token=Secret(sim.token),
            page_size=page,
            start=datetime.now(UTC) - timedelta(days=31),
        )
        at_kill: list[int] = []

        def kill_the_lock_connection() -> None:
            wait_for(lambda: _count(pg_engine) >= page, 30, "a first page", every=0.02)
            with pg_engine.connect() as conn:
                killed = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l "
                        "JOIN pg_database d ON d.oid = l.database "
                        "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
                    )
                ).scalar_one()
            assert killed == 1
            at_kill.append(_count(pg_engine))

        killer = threading.Thread(target=kill_the_lock_connection)
        killer.start()
        result = run_pass(store, config)
        killer.join()
    assert not result.ok
    assert result.error is not None
    assert "lost the lock" in result.error
    assert _count(pg_engine) - at_kill[0] <= page  # at most the page already being written
    assert _count(pg_engine) < len(sim.truth())
    # The lock is free again: the next pass (this process or another) gets it.
    with store.source_lock("lockloss") as acquired:
        assert acquired


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
