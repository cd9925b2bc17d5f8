"""``syncd backfill`` end to end: simulators over real HTTP, real PostgreSQL and SQLite.

A backfill must end equal to the vendor's ground truth for its range however
often it is killed, never move the live cursor, run beside live passes of the
same source, and cost (almost) nothing when rerun after it finished.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from syncd.backfill import BackfillLocked, parse_window, run_backfill
from syncd.config import Secret, SourceConfig
from syncd.db import backfills
from syncd.db.schema import backfill_windows, events, sync_state
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.errors import SyncdError
from syncd.records import parse_time
from syncd.simulators import DoorFlowSimulator, Faults, IntServSimulator, SimClock
from syncd.sources.intserv import canonical_time

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SINCE = datetime(2026, 5, 29, 5, 0, tzinfo=UTC)  # 05:00, not midnight
UNTIL = datetime(2026, 5, 31, 14, 30, tzinfo=UTC)  # --until in the middle of a day


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def doorflow(**overrides: Any) -> DoorFlowSimulator:
    fields: dict[str, Any] = {
        "seed": 5,
        "history": 3000,
        "history_days": 4,
        "clock": SimClock(start=START),
        "name_update_share": 0.0,
        "malformed_share": 0.0,
    }
    fields.update(overrides)
    return DoorFlowSimulator(**fields)


def doorflow_config(sim: DoorFlowSimulator, **overrides: Any) -> SourceConfig:
    fields: dict[str, Any] = {
        "name": "hq",
        "kind": "doorflow",
        "base_url": sim.base_url,
        "token": Secret(sim.token),
        "start": START - timedelta(hours=1),
        "page_size": 100,
        "max_retries": 10,
        "max_retry_wait": 0.05,
    }
    fields.update(overrides)
    return SourceConfig(**fields)


def stored(store: Store, source: str = "hq") -> dict[str, Any]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(events).where(events.c.source == source)).all()
    return {row.event_key: row for row in rows}


def assert_range_matches_truth(
    store: Store, sim: DoorFlowSimulator, since: datetime, until: datetime
) -> int:
    """Every vendor event of [since, until) stored as it is now; nothing the vendor lacks."""
    truth = {str(k): v for k, v in sim.truth(listable=True).items()}  # 50-63 are not listed
    table = stored(store)
    wanted = {k for k, v in truth.items() if since <= parse(v["created_at"]) < until}
    assert wanted, "the range holds no events: the test lost its teeth"
    missing = sorted(wanted - table.keys())
    extra = sorted(table.keys() - truth.keys())
    assert not missing, f"{len(missing)} events of the range missing, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} rows the vendor does not have, e.g. {extra[:5]}"
    stale = [
        k
        for k in wanted
        if table[k].occurred_at != parse(truth[k]["created_at"])
        or table[k].source_updated_at != parse(truth[k]["updated_at"])
    ]
    assert not stale, f"{len(stale)} rows stale, e.g. {stale[:5]}"
    return len(wanted)


def assert_intserv_range_matches_truth(
    store: Store, sim: IntServSimulator, since: datetime, until: datetime
) -> None:
    everything = {
        f"{system}|{canonical_time(parse_time(when, 'event_time'))}|{seq}": event
        for (system, when, seq), event in sim.truth().items()
    }
    wanted = {k for k, e in everything.items() if since <= parse(e["event_time"]) < until}
    assert wanted, "the range holds no events: the test lost its teeth"
    table = stored(store)
    missing = sorted(wanted - table.keys())
    extra = sorted(table.keys() - everything.keys())
    assert not missing, f"{len(missing)} events of the range missing, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} rows the vendor does not have, e.g. {extra[:3]}"
    stale = [k for k in wanted if table[k].payload != everything[k]]
    assert not stale, f"{len(stale)} rows differ from the vendor's, e.g. {stale[:3]}"


def live_state(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(sync_state))]


def window_rows(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(backfill_windows).order_by("window_start")).all()


# -- in process, both databases ------------------------------------------------------


def test_a_backfill_loads_its_range_in_aligned_windows_and_never_moves_the_live_cursor(
    store: Store,
) -> None:
    with doorflow() as sim:
        config = doorflow_config(sim)
        assert run_pass(store, config).ok  # the live cursor exists before the backfill
        before = live_state(store)
        report = run_backfill(store, config, SINCE, UNTIL, parse_window("6h"))
        assert report.complete
        assert not report.stopped
        assert live_state(store) == before
        assert_range_matches_truth(store, sim, SINCE, UNTIL)
        rows = window_rows(store)
        assert [r.window_start for r in rows][:2] == [SINCE, SINCE + timedelta(hours=6)]
        assert rows[-1].window_end == UNTIL
        assert all(r.done_at is not None and r.position == {"done": True} for r in rows)
        assert report.total == len(rows) == 10  # 57.5 h in 6 h windows, the last one 3.5 h
        assert sum(r.events for r in rows) == report.events > 0


def test_a_finished_backfill_rerun_makes_no_request(store: Store) -> None:
    with doorflow() as sim:
        config = doorflow_config(sim)
        first = run_backfill(store, config, SINCE, UNTIL, parse_window("1d"))
        assert first.loaded == first.total
        requests = sim.stats["requests"]
        again = run_backfill(store, config, SINCE, UNTIL, parse_window("1d"))
        assert sim.stats["requests"] == requests
        assert again.complete
        assert again.done_before == again.total
        assert again.loaded == 0


def test_an_overlapping_backfill_reuses_windows_that_finished_ones_cover(store: Store) -> None:
    with doorflow() as sim:
        config = doorflow_config(sim)
        run_backfill(store, config, SINCE, UNTIL, parse_window("1d"))
        requests = sim.stats["requests"]
        # 6 h windows inside the finished days are covered; the part past the
        # old --until is not, and is the only part read.
        later = UNTIL + timedelta(hours=6)
        report = run_backfill(store, config, SINCE, later, parse_window("6h"))
        assert report.complete
        # The 6 h windows from 11:00 and 17:00 on the last day reach past the
        # old --until (14:30): those two are read, the other nine reused.
        assert report.loaded == 2
        assert report.reused == report.total - 2 == 9
        assert 0 < sim.stats["requests"] - requests <= 6
        assert_range_matches_truth(store, sim, SINCE, later)


def test_a_window_finished_before_it_ended_is_not_reused(store: Store) -> None:
    clock = SimClock(start=START)  # 12:00
    with doorflow(clock=clock) as sim:
        config = doorflow_config(sim)
        until = START + timedelta(hours=3)  # the last 6 h window, [11:00, 15:00), is still open
        first = run_backfill(store, config, SINCE, until, parse_window("6h"), clock=clock.now)
        assert first.complete
        clock.advance(5400)
        sim.generate(50)  # at 13:30: events the first backfill could not see
        # 3 h windows from 08:00: all inside finished 6 h windows, but
        # [11:00, 14:00) and [14:00, 15:00) only inside one that finished open.
        since = SINCE + timedelta(hours=3)
        later = run_backfill(store, config, since, until, parse_window("3h"), clock=clock.now)
        assert later.complete
        assert later.loaded == 2
        assert later.reused == later.total - 2
        assert_range_matches_truth(store, sim, SINCE, until)


def test_an_unfinished_backfill_rerun_with_another_window_is_one_clear_error(
    store: Store,
) -> None:
    with doorflow() as sim:
        config = doorflow_config(sim)
        stop = threading.Event()
        stop.set()  # stops after the first page: unfinished
        run_backfill(store, config, SINCE, UNTIL, parse_window("1d"), stop=stop)
        planned = window_rows(store)
        with pytest.raises(SyncdError, match="has 1d windows, not 6h: rerun it with --window 1d"):
            run_backfill(store, config, SINCE, UNTIL, parse_window("6h"))
        assert window_rows(store) == planned  # the plan is not mixed with another
        assert run_backfill(store, config, SINCE, UNTIL, parse_window("1d")).complete
        # Finished, another window has nothing left to do.
        requests = sim.stats["requests"]
        assert run_backfill(store, config, SINCE, UNTIL, parse_window("6h")).complete
        assert sim.stats["requests"] == requests


def test_a_range_with_no_events_finishes_every_window(store: Store) -> None:
    with doorflow() as sim:
        config = doorflow_config(sim)
        since = START - timedelta(days=30)
        report = run_backfill(store, config, since, since + timedelta(days=2), parse_window("1d"))
        assert report.complete
        assert report.events == 0
        assert report.loaded == 2
        in_range = [r for r in stored(store).values() if r.occurred_at < since + timedelta(days=2)]
        assert in_range == []
        assert all(r.done_at is not None for r in window_rows(store))


def test_a_stop_ends_after_the_page_in_hand_and_a_rerun_resumes_there(store: Store) -> None:
    with doorflow() as sim:
        config = doorflow_config(sim)
        stop = threading.Event()
        pages: list[int] = []

        def on_page(_page: Any) -> None:
            pages.append(1)
            if len(pages) == 3:
                stop.set()

        step = parse_window("1d")
        report = run_backfill(store, config, SINCE, UNTIL, step, stop=stop, on_page=on_page)
        assert report.stopped
        assert not report.complete
        assert report.pages >= 3  # the commit unit in hand when the stop came
        (current,) = [r for r in window_rows(store) if r.done_at is None and r.position]
        assert current.position.get("pass")  # the position inside the window was committed
        requests = sim.stats["requests"]
        rest = run_backfill(store, config, SINCE, UNTIL, step)
        assert rest.complete
        total = assert_range_matches_truth(store, sim, SINCE, UNTIL)
        # Resumed, not restarted: about the pages the first run had not read.
        read = sim.stats["requests"] - requests
        assert read <= total // config.page_size + 2 * rest.total - 3 + 2


def test_two_backfills_of_one_source_never_run_at_once_but_a_live_pass_does(
    store: Store,
) -> None:
    with doorflow() as sim:
        config = doorflow_config(sim)
        with store.backfill_lock("hq") as held:
            assert held
            with pytest.raises(BackfillLocked, match="another syncd backfill of hq is running"):
                run_backfill(store, config, SINCE, UNTIL, parse_window("1d"))
            result = run_pass(store, config)  # a live pass is not skipped by a backfill
            assert result.ok
            assert not result.skipped
        with store.source_lock("hq") as held:
            assert held  # a live pass in progress: the backfill does not wait for it
            assert run_backfill(store, config, SINCE, UNTIL, parse_window("1d")).complete


def test_without_until_the_unfinished_backfill_from_the_same_since_is_resumed(
    store: Store,
) -> None:
    now = START
    spans = [(SINCE, SINCE + timedelta(days=1)), (SINCE + timedelta(days=1), UNTIL)]
    backfills.plan(store, "hq", SINCE, UNTIL, spans, now)
    from syncd.backfill import resolve_until

    assert resolve_until(store, "hq", SINCE, None, now) == UNTIL
    assert resolve_until(store, "hq", SINCE - timedelta(hours=1), None, now) == now
    with store.engine.begin() as conn:
        conn.execute(sa.update(backfill_windows).values(done_at=now))
    assert resolve_until(store, "hq", SINCE, None, now) == now  # finished: a new one


def test_intserv_backfill_equals_truth_for_its_range(store: Store) -> None:
    clock = SimClock(start=START)
    with IntServSimulator(seed=3, history=2000, history_days=3, clock=clock) as sim:
        config = SourceConfig(
            name="hq", kind="intserv", base_url=sim.base_url, api_key=Secret(sim.api_key),
            start=START - timedelta(hours=1), page_size=50, max_retries=10, max_retry_wait=0.02,
        )  # fmt: skip
        report = run_backfill(store, config, SINCE, UNTIL, parse_window("12h"))
        assert report.complete
        assert_intserv_range_matches_truth(store, sim, SINCE, UNTIL)
        assert live_state(store) == []  # never read nor written sync_state


# -- beside the live sync, PostgreSQL -----------------------------------------------


def test_a_backfill_beside_live_passes_loses_and_duplicates_nothing(pg_store: Store) -> None:
    with doorflow(history=4000, faults=Faults(server_errors=0.05, seed=4)) as sim:
        config = doorflow_config(sim, start=START - timedelta(days=1))
        done = threading.Event()
        results = []

        def live() -> None:
            while not done.is_set():
                results.append(run_pass(pg_store, config))
                sim.generate(20)

        thread = threading.Thread(target=live)
        thread.start()
        try:
            report = run_backfill(
                pg_store, config, SINCE, START + timedelta(hours=1), parse_window("12h")
            )
        finally:
            done.set()
            thread.join()
        assert report.complete
        assert results
        assert all(r.ok and not r.skipped for r in results)
        assert run_pass(pg_store, config).ok
        # Both read the last day; the backfill the rest: all of it, once.
        assert_range_matches_truth(pg_store, sim, SINCE, START)
        cursor = pg_store.load_state("hq").cursor
        assert cursor
        assert "done" not in cursor
        assert "position" not in cursor


# -- the command line: SIGKILL, interrupts, one-line errors ---------------------------


def write_config(tmp_path: Path, sim: DoorFlowSimulator | IntServSimulator) -> Path:
    doorflow = isinstance(sim, DoorFlowSimulator)
    path = tmp_path / "syncd.toml"
    path.write_text(
        "\n".join(
            [
                "[[sources]]",
                'name = "hq"',
                f'kind = "{"doorflow" if doorflow else "intserv"}"',
                f'base_url = "{sim.base_url}"',
                'token_env = "DOORFLOW_TOKEN"' if doorflow else 'api_key_env = "INTSERV_KEY"',
                "page_size = 50",
                "max_retries = 10",
                "max_retry_wait = 0.05",
            ]
        )
        + "\n"
    )
    return path


def backfill_cmd(config: Path, url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "syncd.cli", "--config", str(config), "--database-url", url,
            "backfill", "--source", "hq", *args]  # fmt: skip


def environment(sim: DoorFlowSimulator | IntServSimulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    if isinstance(sim, DoorFlowSimulator):
        return {**env, "DOORFLOW_TOKEN": sim.token}
    return {**env, "INTSERV_KEY": sim.api_key}


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def kill_and_rerun_until_done(
    pg_store: Store, sim: DoorFlowSimulator | IntServSimulator, args: list[str], seed: int
) -> subprocess.CompletedProcess[str]:
    """SIGKILL the backfill at random points after it committed something, then rerun to 0."""
    rng = random.Random(seed)
    killed = 0
    for _ in range(4):
        before = len(stored(pg_store))
        process = subprocess.Popen(args, env=environment(sim), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while len(stored(pg_store)) == before and process.poll() is None:
            assert time.monotonic() < deadline, "backfill committed nothing in 60 s"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.communicate()
    assert killed >= 2, "the backfill ended before it could be killed"
    for _ in range(5):
        finished = subprocess.run(args, env=environment(sim), capture_output=True, text=True,
                                  timeout=180, check=False)  # fmt: skip
        if finished.returncode == 0:
            return finished
    raise AssertionError(finished.stderr)


def test_intserv_sigkilled_and_rerun_until_exit_0_equals_the_truth(
    pg_store: Store, pg_url: str, tmp_path: Path
) -> None:
    clock = SimClock(start=START)
    faults = Faults(latency=0.01, server_errors=0.03, seed=5)
    with IntServSimulator(seed=4, history=5000, history_days=3, clock=clock, faults=faults) as sim:
        config = write_config(tmp_path, sim)
        args = backfill_cmd(config, pg_url, "--since", iso(SINCE), "--until", iso(UNTIL),
                            "--window", "6h")  # fmt: skip
        finished = kill_and_rerun_until_done(pg_store, sim, args, seed=3)
        assert "10 windows of 6h" in finished.stdout
        assert_intserv_range_matches_truth(pg_store, sim, SINCE, UNTIL)
        assert live_state(pg_store) == []


def test_sigkilled_at_random_points_and_rerun_until_exit_0_equals_the_truth(
    pg_store: Store, pg_url: str, tmp_path: Path
) -> None:
    with doorflow(history=6000, faults=Faults(latency=0.01, server_errors=0.03, seed=2)) as sim:
        config = write_config(tmp_path, sim)
        args = backfill_cmd(config, pg_url, "--since", iso(SINCE), "--until", iso(UNTIL),
                            "--window", "6h")  # fmt: skip
        finished = kill_and_rerun_until_done(pg_store, sim, args, seed=8)
        assert finished.returncode == 0, finished.stderr
        assert "10 windows of 6h" in finished.stdout
        assert_range_matches_truth(pg_store, sim, SINCE, UNTIL)
        assert live_state(pg_store) == []
        # Finished: a rerun makes no request at all.
        requests = sim.stats["requests"]
        again = subprocess.run(args, env=environment(sim), capture_output=True, text=True,
                               timeout=60, check=False)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert "10 already done" in again.stdout
        assert sim.stats["requests"] == requests


def test_off_a_terminal_progress_is_backfill_window_done_lines_and_status_shows_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    with doorflow() as sim:
        config = write_config(tmp_path, sim)
        args = backfill_cmd(config, sqlite_url, "--since", iso(SINCE), "--until", iso(UNTIL))
        result = subprocess.run(args, env=environment(sim), capture_output=True, text=True,
                                timeout=120, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = [orjson.loads(line) for line in result.stderr.splitlines()]
        done = [line for line in lines if line["event"] == "backfill_window_done"]
        assert len(done) == 3
        assert done[0]["window_start"] == iso(SINCE)
        assert done[-1]["window_end"] == iso(UNTIL)
        assert all(line["event"].startswith("backfill_") for line in lines)  # nothing else
        assert result.stdout.startswith("hq: backfill ")
        status = subprocess.run(
            [sys.executable, "-m", "syncd.cli", "--config", str(config),
             "--database-url", sqlite_url, "status", "--json"],
            env=environment(sim), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        (entry,) = orjson.loads(status.stdout)["backfills"]
        assert entry["source"] == "hq"
        assert entry["done"] is True
        assert entry["windows_total"] == entry["windows_done"] == 3


def test_status_shows_a_backfill_in_progress_and_its_windows(sqlite_url: str) -> None:
    from syncd.db.engine import create_engine

    store = Store(create_engine(sqlite_url))
    spans = [(SINCE, SINCE + timedelta(days=1)), (SINCE + timedelta(days=1), UNTIL)]
    backfills.plan(store, "hq", SINCE, UNTIL, spans, START)
    with store.engine.begin() as conn:
        backfills.save_position(conn, "hq", SINCE, UNTIL, SINCE, {"done": True}, 40, START)
        backfills.save_position(conn, "hq", SINCE, UNTIL, spans[1][0], {"pass": {"p": 3}}, 7, START)
    store.engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    base = [sys.executable, "-m", "syncd.cli", "--database-url", sqlite_url, "status"]
    as_json = subprocess.run(
        [*base, "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert as_json.returncode == 0, as_json.stderr
    (entry,) = orjson.loads(as_json.stdout)["backfills"]
    assert (entry["done"], entry["windows_done"], entry["windows_total"], entry["events"]) == (
        False, 1, 2, 47,
    )  # fmt: skip
    assert [w["done"] for w in entry["windows"]] == [True, False]
    assert entry["windows"][1]["position"] == {"pass": {"p": 3}}
    text = subprocess.run(base, env=env, capture_output=True, text=True, check=False)
    assert text.returncode == 0, text.stderr
    assert "backfill hq" in text.stdout
    assert "1/2 windows" in text.stdout
    assert iso(spans[1][0]) in text.stdout  # the unfinished window is listed


def test_ctrl_c_stops_after_the_page_in_hand_and_says_how_to_resume(
    sqlite_url: str, tmp_path: Path
) -> None:
    with doorflow(history=6000, faults=Faults(latency=0.05, seed=1)) as sim:
        config = write_config(tmp_path, sim)
        args = backfill_cmd(config, sqlite_url, "--since", iso(SINCE), "--until", iso(UNTIL))
        process = subprocess.Popen(args, env=environment(sim), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while "backfill_started" not in _peek(sqlite_url) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith("syncd: backfill of hq interrupted; to resume: syncd --config ")
    assert f"backfill --source hq --since {iso(SINCE)} --until {iso(UNTIL)} --window 1d" in last
    assert "hq: backfill" in out


def _peek(url: str) -> str:
    # The backfill has planned its windows once they are in the table.
    from syncd.db.engine import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(backfill_windows)).scalar()
    finally:
        engine.dispose()
    return "backfill_started" if count else ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is not an ISO 8601 time"),
        (["--since", "2026-01-02", "--until", "soon"], "--until 'soon' is not an ISO 8601 time"),
        (["--since", "2026-01-02", "--window", "1w"], "--window '1w' is not a positive duration"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], "--since must be before --until"),
        (["--since", "2026-01-01", "--until", "2026-06-01", "--window", "1s"], "choose a longer"),
    ],
)
def test_bad_arguments_are_one_clear_line(
    sqlite_url: str, tmp_path: Path, args: list[str], expected: str
) -> None:
    with doorflow(history=10) as sim:
        config = write_config(tmp_path, sim)
        command = backfill_cmd(config, sqlite_url, *args)
        result = subprocess.run(command, env=environment(sim), capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
        assert sim.stats.get("requests", 0) == 0
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("syncd: ")
    assert expected in line
    assert "Traceback" not in result.stderr


def test_a_second_backfill_of_a_source_is_one_line_exit_1(sqlite_url: str, tmp_path: Path) -> None:
    from syncd.db.engine import create_engine

    with doorflow(history=10) as sim:
        config = write_config(tmp_path, sim)
        store = Store(create_engine(sqlite_url))
        with store.backfill_lock("hq") as held:
            assert held
            args = backfill_cmd(config, sqlite_url, "--since", iso(SINCE), "--until", iso(UNTIL))
            result = subprocess.run(args, env=environment(sim), capture_output=True, text=True,
                                    timeout=60, check=False)  # fmt: skip
        store.engine.dispose()
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == "syncd: another syncd backfill of hq is running; wait for it or stop it first"


def test_a_vendor_outage_is_one_line_exit_1_and_a_rerun_resumes(
    sqlite_url: str, tmp_path: Path
) -> None:
    with doorflow() as sim:
        config = write_config(tmp_path, sim)
        args = backfill_cmd(config, sqlite_url, "--since", iso(SINCE), "--until", iso(UNTIL))
        sim.faults = Faults(server_errors=1.0)
        failed = subprocess.run(args, env=environment(sim), capture_output=True, text=True,
                                timeout=120, check=False)  # fmt: skip
        assert failed.returncode == 1
        lines = [line for line in failed.stderr.splitlines() if line.startswith("syncd: ")]
        assert len(lines) == 1
        assert "backfill of hq failed" in lines[0]
        assert "rerun to resume: syncd --config" in lines[0]
        assert "Traceback" not in failed.stderr
        sim.faults = Faults()
        again = subprocess.run(args, env=environment(sim), capture_output=True, text=True,
                               timeout=120, check=False)  # fmt: skip
        assert again.returncode == 0, again.stderr
