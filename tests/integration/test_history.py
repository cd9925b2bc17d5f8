"""History and repair against the simulators over real HTTP (issue 21), both databases.

IntServ systems offline across a backfill; DoorFlow listing by id with late
uploads; the vendor deleting events. Counts are checked against the
simulators' truth.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from syncd.backfill import parse_window, run_backfill
from syncd.config import Secret, SourceConfig
from syncd.db.schema import events
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.reconcile import reconcile
from syncd.simulators import DoorFlowSimulator, IntServSimulator, SimClock
from tests.integration.test_backfill import (
    SINCE,
    START,
    assert_intserv_range_matches_truth,
    assert_range_matches_truth,
    doorflow,
    doorflow_config,
)


def _deleted(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        query = sa.select(events.c.event_key).where(events.c.deleted_at.is_not(None))
        return set(conn.execute(query).scalars())


def test_an_intserv_window_is_held_back_while_a_system_is_offline_and_a_rerun_finishes_it(
    store: Store,
) -> None:
    clock = SimClock(start=START)
    with IntServSimulator(seed=3, history=2000, history_days=3, clock=clock) as sim:
        offline = sim.systems[1]
        sim.set_offline(offline)  # its horizon stays at START
        clock.advance(2 * 3600)
        sim.generate(300)  # its share is buffered: old event_time when it comes back
        config = SourceConfig(
            name="hq", kind="intserv", base_url=sim.base_url, api_key=Secret(sim.api_key),
            systems=tuple(sim.systems), page_size=50, max_retries=10, max_retry_wait=0.02,
        )  # fmt: skip
        until = START + timedelta(hours=2)
        first = run_backfill(store, config, START - timedelta(hours=5), until, parse_window("1h"))
        assert not first.complete
        assert first.held  # windows after START: the offline system may still upload there
        assert first.held[0].systems == (offline,)
        assert "held back by system " + offline in first.summary()
        assert all(h.start >= START - timedelta(hours=1) for h in first.held)
        sim.set_offline(offline, False)
        clock.advance(10)
        again = run_backfill(store, config, START - timedelta(hours=5), until, parse_window("1h"))
        assert again.complete
        assert not again.held
        assert_intserv_range_matches_truth(store, sim, START - timedelta(hours=5), until)


def test_an_id_ordered_doorflow_with_late_uploads_backfills_and_reconciles_to_the_truth(
    store: Store,
) -> None:
    with doorflow(order="id", late_share=0.05, late_delay=36 * 3600) as sim:
        config = doorflow_config(sim)
        until = START - timedelta(hours=2)
        report = run_backfill(store, config, SINCE, until, parse_window("6h"))
        assert report.complete
        w = report.written
        wanted = assert_range_matches_truth(store, sim, SINCE, until)
        assert report.events == w.inserted + w.updated + w.unchanged + w.rejected == wanted


def test_doorflow_deletions_by_list_and_by_destroy_webhook_are_marked_not_removed(
    store: Store,
) -> None:
    sim: DoorFlowSimulator
    with doorflow(webhook_url="http://127.0.0.1:9/none") as sim:
        config = doorflow_config(sim, start=SINCE)
        assert run_pass(store, config).ok
        with store.engine.connect() as conn:
            ids = sorted(int(k) for k in conn.execute(sa.select(events.c.event_key)).scalars())
        gone = [ids[10], ids[500]]
        assert sim.delete(gone) == 2
        destroys = [n for n in sim.pending_webhooks() if n["action"] == "DESTROY"]
        assert sorted(n["resource_id"] for n in destroys) == gone
        report = reconcile(store, config, since=SINCE, until=START)
        assert report.deleted == 2
        assert _deleted(store) == {str(i) for i in gone}
        assert reconcile(store, config, since=SINCE, until=START).requests == 2


def test_syncd_backfill_names_the_system_holding_a_window_back_and_exits_1(
    tmp_path: Path,
) -> None:
    clock = SimClock(start=datetime.now(UTC) - timedelta(hours=1))
    with IntServSimulator(seed=4, history=300, history_days=1, clock=clock) as sim:
        sim.set_offline(sim.systems[0])  # an hour ago, as far as syncd's clock goes
        config = tmp_path / "syncd.toml"
        config.write_text(
            f'[[sources]]\nname = "se"\nkind = "intserv"\nbase_url = "{sim.base_url}"\n'
            f'api_key_env = "IS_KEY"\nsystems = ["{sim.systems[0]}", "{sim.systems[1]}"]\n'
        )
        since = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0).isoformat()
        done = subprocess.run(
            [sys.executable, "-m", "syncd.cli", "--config", str(config),
             "--database-url", f"sqlite:///{tmp_path}/syncd.db",
             "backfill", "--source", "se", "--since", since, "--window", "6h"],
            env={**os.environ, "IS_KEY": sim.api_key}, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]  # after the backfill's progress lines
    assert "backfill_window_held" in done.stderr
    assert f"is held back by system {sim.systems[0]}" in line
    assert "backfill --source se" in line
    assert "Traceback" not in done.stderr
