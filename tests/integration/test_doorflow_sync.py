"""DoorFlow end to end: the simulator over real HTTP, the store on real PostgreSQL.

The table must equal the simulator's ground truth after many passes through
late events, name corrections, ties larger than a page, 429s, 5xx, dropped
connections, a flavor switch, malformed records, expiring OAuth tokens with
rotation, and ``syncd sync`` processes SIGKILLed mid-pass.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from structlog.testing import capture_logs

from syncd.config import OAuthCredentials, Secret, SourceConfig
from syncd.db.schema import events, rejected_events
from syncd.db.store import Store
from syncd.engine import SourceRuntime, run_pass
from syncd.records import storable
from syncd.simulators import DoorFlowSimulator, Faults, SimClock
from syncd.simulators.data import DOORFLOW_LISTABLE_CODES

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LOOKBACK = 900.0


def stored(store: Store, source: str) -> dict[int, Any]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(events).where(events.c.source == source)).all()
    keys = [row.event_key for row in rows]
    assert len(keys) == len(set(keys))
    return {int(row.event_key): row for row in rows}


def rejected_raws(store: Store, source: str) -> list[Any]:
    with store.engine.connect() as conn:
        query = sa.select(rejected_events.c.raw).where(rejected_events.c.source == source)
        return [row.raw for row in conn.execute(query)]


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def assert_matches_truth(store: Store, source: str, sim: DoorFlowSimulator) -> None:
    """Nothing missing, nothing duplicated, nothing stale; every malformed record kept.

    "Every" is what the list can serve: remote-control events (50-63) are not
    listable, so a sync cannot hold them (FACTS.md).
    """
    truth = sim.truth(listable=True)
    table = stored(store, source)
    missing = sorted(set(truth) - set(table))
    extra = sorted(set(table) - set(truth))
    assert not missing, f"{len(missing)} events missing, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} rows the vendor does not have, e.g. {extra[:5]}"
    stale = [
        event_id
        for event_id, event in truth.items()
        if table[event_id].person_name != event.get("person_name")
        or table[event_id].source_updated_at != parse(event["updated_at"])
        or table[event_id].occurred_at != parse(event["created_at"])
        or table[event_id].event_code != event["event_code"]
    ]
    assert not stale, f"{len(stale)} rows stale, e.g. {stale[:5]}"
    kept = rejected_raws(store, source)
    flavor = sim.flavor
    served = []
    for each in ("reference", "guide"):
        sim.flavor = each
        # NUL etc. kept as text
        served.append([storable(raw) for raw in sim.malformed(listable=True)])
    sim.flavor = flavor
    for as_reference, as_guide in zip(*served, strict=True):
        assert as_reference in kept or as_guide in kept, f"malformed record lost: {as_reference}"


@contextmanager
def ticking(clock: SimClock, step: float = 1.0, every: float = 0.02) -> Iterator[None]:
    """Let simulated time run during a pass, so tokens expire mid-pass."""
    done = threading.Event()

    def run() -> None:
        while not done.wait(every):
            clock.advance(step)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def doorflow_config(sim: DoorFlowSimulator, **overrides: Any) -> SourceConfig:
    fields: dict[str, Any] = {
        "name": "hq",
        "kind": "doorflow",
        "base_url": sim.base_url,
        "token": Secret(sim.token),
        "start": START - timedelta(days=3),
        "lookback": LOOKBACK,
        "page_size": 200,
        "max_retries": 10,
        "max_retry_wait": 0.05,
    }
    fields.update(overrides)
    return SourceConfig(**fields)


def test_many_passes_through_every_kind_of_trouble_equal_the_ground_truth(
    pg_store: Store,
) -> None:
    clock = SimClock(start=START)
    sim = DoorFlowSimulator(
        seed=11,
        history=4000,
        history_days=2,
        clock=clock,
        late_share=0.05,
        late_delay=600,  # within the lookback: re-read by the next pass
        name_update_share=0.1,
        name_update_delay=120,
        tie_groups=2,
        tie_size=450,  # more than two pages of one timestamp
        malformed_share=0.01,
        token_expiry=10,  # 200 ms real time while ticking: still expires mid-pass
        faults=Faults(rate_limit=0.1, server_errors=0.1, drop=0.03, retry_after=0.01, seed=3),
    )
    with sim:
        oauth = OAuthCredentials(
            Secret(sim.oauth.client_id),
            Secret(sim.oauth.client_secret),
            Secret(sim.oauth.refresh_token),
        )
        config = doorflow_config(sim, token=None, oauth=oauth)
        failures = 0
        for n in range(24):
            clock.advance(60)
            sim.generate(random.Random(n).randint(20, 120))
            if n == 12:
                sim.flavor = "guide"
            if n == 8:
                sim.faults = Faults(
                    rate_limit=0.1, retry_after_in="body", retry_after=0.01,
                    server_errors=0.1, drop=0.03, seed=4,
                )  # fmt: skip
            with ticking(clock):
                result = run_pass(pg_store, config, clock=clock.now)
            failures += not result.ok
        # Quiet down and let the last changes settle; then compare.
        sim.faults = Faults()
        for _ in range(2):
            assert run_pass(pg_store, config, clock=clock.now).ok
        assert_matches_truth(pg_store, "hq", sim)
        stats = sim.stats
    assert failures <= 2, "retries should absorb nearly every fault"
    assert stats["rate_limited"] > 10
    assert stats["server_errors"] > 10
    assert stats["dropped"] > 0
    assert stats["unauthorized"] > 0, "tokens should have expired mid-pass"
    assert pg_store.load_state("hq").refresh_token not in (None, sim.oauth.refresh_token)


def test_late_events_older_than_the_lookback_are_found_by_reconciliation(
    pg_store: Store,
) -> None:
    clock = SimClock(start=START)
    sim = DoorFlowSimulator(
        seed=5,
        history=1500,
        history_days=1,
        clock=clock,
        late_share=0.1,
        late_delay=4 * LOOKBACK,
        name_update_share=0.0,
        malformed_share=0.02,
    )
    with sim, capture_logs() as logs:
        config = doorflow_config(sim, reconcile_every=600)
        assert run_pass(pg_store, config, clock=clock.now).ok
        for _ in range(8):
            clock.advance(120)
            sim.generate(60)
            assert run_pass(pg_store, config, clock=clock.now).ok
        # Late uploads keep coming: the reconciliation due after the last of
        # them finds what the lookback could not.
        clock.advance(600)
        result = run_pass(pg_store, config, clock=clock.now)
        assert result.ok
        assert result.reconciled is not None
        assert_matches_truth(pg_store, "hq", sim)
    found = [e["found"] for e in logs if e["event"] == "reconcile_finished"]
    assert len(found) >= 2  # every 10 minutes of the 26 simulated
    assert sum(found) > 0  # the lookback alone could not have found them


def test_a_vendor_that_lists_fewer_codes_is_followed_and_logged_once(pg_store: Store) -> None:
    clock = SimClock(start=START)
    sim = DoorFlowSimulator(
        seed=13, history=1200, history_days=1, clock=clock, name_update_share=0.0
    )
    with sim:
        config = doorflow_config(sim)
        with capture_logs() as logs:
            assert run_pass(pg_store, config, clock=clock.now).ok
        # The documented list is exactly what the simulator accepts: no 400 at all.
        assert sim.stats.get("bad_requests", 0) == 0
        assert not [e for e in logs if e["event"] == "event_codes_dropped"]
        assert_matches_truth(pg_store, "hq", sim)

        sim.listable_codes = DOORFLOW_LISTABLE_CODES - {90, 91}
        clock.advance(60)
        sim.generate(400)
        pages_before = sim.stats["pages"]
        # The daemon's way: one runtime (one connector) across passes.
        with capture_logs() as logs, SourceRuntime.open(pg_store, config, clock=clock.now) as rt:
            result = run_pass(pg_store, config, clock=clock.now, runtime=rt)
            assert result.ok, result.error
            assert result.pages >= 2, "several requests after the drop"
            clock.advance(60)
            sim.generate(50)
            assert run_pass(pg_store, config, clock=clock.now, runtime=rt).ok
        assert sim.stats["pages"] - pages_before >= 3
        assert sim.stats["unlistable_code_requests"] == 1  # one 400, then never again
        dropped = [e for e in logs if e["event"] == "event_codes_dropped"]
        assert len(dropped) == 1
        assert dropped[0]["codes"] == [90, 91]
        # A one-shot pass builds its own connector: it meets the 400 once more.
        assert run_pass(pg_store, config, clock=clock.now).ok
        assert sim.stats["unlistable_code_requests"] == 2
        # Everything still listable is stored; tamper rows from before stay.
        truth = sim.truth(listable=True)
        table = stored(pg_store, "hq")
        assert not set(truth) - set(table)
        assert {table[k].event_code for k in set(table) - set(truth)} <= {90, 91}


def _write_config(tmp_path: Path, sim: DoorFlowSimulator, **extra: str) -> Path:
    lines = [
        "[[sources]]",
        'name = "hq"',
        'kind = "doorflow"',
        f'base_url = "{sim.base_url}"',
        'token_env = "DOORFLOW_TOKEN"',
        f'start = "{(START - timedelta(days=3)).isoformat()}"',
        "page_size = 100",
        "max_retries = 10",
        "max_retry_wait = 0.05",
    ]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    path = tmp_path / "syncd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _syncd(config: Path, database_url: str, token: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DOORFLOW_TOKEN": token}
    return subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", "--config", str(config),
         "--database-url", database_url, "sync"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_sigkill_mid_pass_loses_and_duplicates_nothing(
    pg_store: Store, pg_url: str, tmp_path: Path
) -> None:
    clock = SimClock(start=START)
    sim = DoorFlowSimulator(
        seed=21, history=6000, history_days=2, clock=clock, malformed_share=0.01,
        name_update_share=0.0, faults=Faults(latency=0.03, server_errors=0.05, seed=9),
    )  # fmt: skip
    with sim:
        config = _write_config(tmp_path, sim)
        rng = random.Random(2)
        killed = 0
        for _ in range(4):
            before = len(stored(pg_store, "hq"))
            process = _syncd(config, pg_url, sim.token)
            # Kill it once it has committed something (however slow the
            # machine is to start it), at a random point after that.
            deadline = time.monotonic() + 60
            while len(stored(pg_store, "hq")) == before and process.poll() is None:
                assert time.monotonic() < deadline, "syncd committed nothing in 60 s"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.4))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
            process.communicate()
            clock.advance(30)
            sim.generate(100)
        assert killed >= 3, "the passes ended before they could be killed"
        partial = len(stored(pg_store, "hq"))
        assert 0 < partial < len(sim.truth())
        process = _syncd(config, pg_url, sim.token)
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert_matches_truth(pg_store, "hq", sim)


def test_a_wrong_token_is_one_clear_line_and_never_printed(pg_url: str, tmp_path: Path) -> None:
    with DoorFlowSimulator(seed=1, history=10) as sim:
        config = _write_config(tmp_path, sim)
        wrong = "dft_wrong_" + "x" * 24
        process = _syncd(config, pg_url, wrong)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    (problem,) = err.strip().splitlines()
    assert problem.startswith("syncd: hq failed")
    assert "401" in problem
    assert "Traceback" not in err
    assert wrong not in out
    assert wrong not in err
