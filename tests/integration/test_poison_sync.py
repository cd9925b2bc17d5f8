"""Poison records and failing continuation keys, end to end: the simulators over
real HTTP, the real engine, real PostgreSQL. A pass goes on past every one."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
import sqlalchemy as sa

from syncd.config import Secret, SourceConfig
from syncd.db.schema import events, rejected_events
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.simulators import DoorFlowSimulator, IntServSimulator, SimClock
from syncd.simulators.faults import ALL_KINDS, POISON_KINDS
from tests.integration.test_doorflow_sync import START, doorflow_config
from tests.integration.test_doorflow_sync import assert_matches_truth as doorflow_truth
from tests.integration.test_intserv_sync import SOURCE, MovingWorld
from tests.integration.test_intserv_sync import assert_matches_truth as intserv_truth

pytestmark = pytest.mark.postgres


def reasons(store: Store, source: str) -> list[str]:
    query = sa.select(rejected_events.c.reason).where(rejected_events.c.source == source)
    with store.engine.connect() as conn:
        return list(conn.execute(query).scalars())


def test_doorflow_poison_is_rejected_one_row_each(pg_store: Store) -> None:
    clock = SimClock(start=START)
    sim = DoorFlowSimulator(
        seed=4, history=600, history_days=1, clock=clock, malformed_share=0.1,
        malformed_kinds=ALL_KINDS, name_update_share=0.0,
    )  # fmt: skip
    with sim:
        config = doorflow_config(sim, page_size=100)
        for _ in range(2):
            result = run_pass(pg_store, config, clock=clock.now)
            assert result.ok, result.error
            clock.advance(60)
        doorflow_truth(pg_store, "hq", sim)
        served = sim.malformed()
    found = reasons(pg_store, "hq")
    assert len(found) == len(served)
    assert any("NUL" in r for r in found)
    assert any("lone surrogate" in r for r in found)
    assert any("event_code is out of range" in r for r in found)
    with pg_store.engine.connect() as conn:
        codes = conn.execute(sa.select(events.c.event_code)).scalars().all()
    assert max(codes) < 2**31  # nothing wrapped into the int4 column


def test_intserv_poison_is_rejected_one_row_each(pg_store: Store) -> None:
    clock = SimClock(start=START)
    sim = IntServSimulator(
        seed=6, history=600, history_days=1, clock=clock, malformed_share=0.1,
        malformed_kinds=POISON_KINDS,
    )  # fmt: skip
    with sim:
        config = SourceConfig(
            name=SOURCE, kind="intserv", base_url=sim.base_url, api_key=Secret(sim.api_key),
            start=START - timedelta(days=2), page_size=100,
        )  # fmt: skip
        result = run_pass(pg_store, config, clock=clock.now)
        assert result.ok, result.error
        intserv_truth(pg_store.engine, sim)
    found = reasons(pg_store, SOURCE)
    assert any("sequence_id is out of range" in r for r in found)
    assert any("lone surrogate" in r for r in found)


@pytest.mark.parametrize("status", [500, 403])
def test_intserv_keys_failing_with_500_or_403_restart_the_pass(
    pg_store: Store, status: int
) -> None:
    clock = SimClock(start=START)
    sim = IntServSimulator(
        seed=8, history=500, history_days=1, clock=clock, continuation_ttl=30,
        expired_key_status=status, malformed_share=0.02,
    )  # fmt: skip
    with sim:
        transport = MovingWorld(sim, clock, random.Random(1))
        config = SourceConfig(
            name=SOURCE, kind="intserv", base_url=sim.base_url, api_key=Secret(sim.api_key),
            start=START - timedelta(days=2), page_size=100, max_retries=2, max_retry_wait=0.01,
        )  # fmt: skip
        transport.actions = {3: transport.expire_keys}  # the 4th request's key has expired
        result = run_pass(pg_store, config, clock=clock.now, transport=transport)
        assert result.ok, result.error
        assert "pass" not in pg_store.load_state(SOURCE).cursor
        intserv_truth(pg_store.engine, sim)
