"""What passes and reconciliations cost, counted by the simulators over real HTTP.

The contract (DESIGN.md "Pass semantics"): a quiet pass costs at most two
vendor requests per source, of any kind, whatever the history length and
whatever sits in ``rejected_events``; reconciliation on a complete history
grows with the logarithm of the span, and finds late uploads with a bounded
number of requests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.config import Secret, SourceConfig
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.reconcile import reconcile
from syncd.simulators import DoorFlowSimulator, IntServSimulator, SimClock
from tests.integration.test_doorflow_sync import assert_matches_truth

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def doorflow(sim: DoorFlowSimulator, **overrides: Any) -> SourceConfig:
    fields: dict[str, Any] = {
        "name": "hq",
        "kind": "doorflow",
        "base_url": sim.base_url,
        "token": Secret(sim.token),
        "start": START - timedelta(days=11),
        "page_size": 1000,
        "reconcile_days": 10,
    }
    return SourceConfig(**{**fields, **overrides})


def requests(sim: DoorFlowSimulator | IntServSimulator) -> int:
    return sim.stats["requests"]


@pytest.mark.parametrize("flavor", ["reference", "guide"])
def test_a_quiet_doorflow_pass_costs_one_request(pg_store: Store, flavor: str) -> None:
    clock = SimClock(start=START)
    sim = DoorFlowSimulator(
        seed=3, history=6000, history_days=3, clock=clock, malformed_share=0.01, flavor=flavor
    )
    with sim:
        config = doorflow(sim, start=START - timedelta(days=4))
        assert run_pass(pg_store, config, clock=clock.now).ok
        assert pg_store.source_stats()["hq"].rejected > 0
        for _ in range(5):
            clock.advance(60)
            before = requests(sim)
            result = run_pass(pg_store, config, clock=clock.now)
            assert result.ok
            assert result.written.inserted == 0
            assert requests(sim) - before == 1
        assert_matches_truth(pg_store, "hq", sim)


def test_a_quiet_intserv_pass_costs_one_request(pg_store: Store) -> None:
    clock = SimClock(start=START)
    with IntServSimulator(
        seed=4, history=6000, history_days=3, clock=clock, malformed_share=0.01
    ) as sim:
        config = SourceConfig(
            name="se",
            kind="intserv",
            base_url=sim.base_url,
            api_key=Secret(sim.api_key),
            start=START - timedelta(days=4),
        )
        assert run_pass(pg_store, config, clock=clock.now).ok
        for _ in range(5):
            clock.advance(60)
            before = requests(sim)
            result = run_pass(pg_store, config, clock=clock.now)
            assert result.ok
            assert result.written.inserted == 0
            assert requests(sim) - before == 1


def test_reconcile_on_a_clean_ten_day_history_costs_a_few_requests(pg_store: Store) -> None:
    clock = SimClock(start=START)
    with DoorFlowSimulator(seed=5, history=20_000, history_days=10, clock=clock) as sim:
        config = doorflow(sim)
        assert run_pass(pg_store, config, clock=clock.now).ok
        before = requests(sim)
        report = reconcile(pg_store, config, since=START - timedelta(days=10), until=clock.now())
        assert requests(sim) - before == report.requests
        print(f"clean 10-day reconcile: {report.summary()}")
        assert report.found == 0
        assert report.requests <= 4, report.summary()


def test_reconcile_finds_thirty_late_uploads_in_five_clusters(pg_store: Store) -> None:
    clock = SimClock(start=START)
    with DoorFlowSimulator(
        seed=6, history=20_000, history_days=10, clock=clock, malformed_share=0.002
    ) as sim:
        config = doorflow(sim)
        assert run_pass(pg_store, config, clock=clock.now).ok
        clock.advance(60)
        assert run_pass(pg_store, config, clock=clock.now).ok  # settle the head
        held = len(sim.truth(listable=True))
        sim.late_share = 1.0
        for days_back in (1, 2.5, 4, 6, 8):  # five clusters of six late uploads
            sim.late_delay = days_back * 86_400
            sim.generate(6)  # six on time, and (late_share 1.0) six that many days late
        sim.late_share = 0.0
        added = len(sim.truth(listable=True)) - held
        assert added >= 50  # of 60: remote-control codes are not listable
        before = requests(sim)
        report = reconcile(pg_store, config, since=START - timedelta(days=10), until=clock.now())
        print(f"late-upload reconcile ({added} injected): {report.summary()}")
        assert report.found == added
        assert report.requests <= 120, report.summary()
        assert requests(sim) - before == report.requests
        assert_matches_truth(pg_store, "hq", sim)
