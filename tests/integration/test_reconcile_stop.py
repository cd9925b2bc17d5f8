"""The scheduled reconciliation inside a pass ends on the pass's stop (max_pass_duration)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from syncd.config import Secret, SourceConfig
from syncd.db.schema import events
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.simulators import DoorFlowSimulator

pytestmark = pytest.mark.postgres

SOURCE = "reco_stop"


class StopOnCount(httpx.BaseTransport):
    """Real HTTP; sets ``stop`` at the first count probe (a one-event page) it forwards."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.stop = threading.Event()
        self.probes = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.params.get("per_page") == "1":
            self.probes += 1
            self.stop.set()
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_stop_during_the_scheduled_reconciliation_ends_it(pg_store: Store) -> None:
    with DoorFlowSimulator(seed=3, history=300, history_days=5) as sim:
        config = SourceConfig(
            name=SOURCE,
            kind="doorflow",
            base_url=sim.base_url,
            token=Secret(sim.token),
            start=datetime.now(UTC) - timedelta(days=6),
            page_size=20,
            reconcile_every=60,
            reconcile_days=5,
        )
        first = run_pass(pg_store, config)  # catches up; reconciliation not yet due
        assert first.ok
        assert first.reconciled is None
        long_ago = datetime.now(UTC) - timedelta(days=1)
        pg_store.record_reconciled(SOURCE, long_ago)
        # Events the table lost (as if uploaded late): the counts differ, so the
        # reconciliation has spans to split and re-read.
        with pg_store.engine.begin() as conn:
            conn.execute(
                sa.delete(events).where(
                    events.c.source == SOURCE,
                    events.c.occurred_at < datetime.now(UTC) - timedelta(days=2),
                )
            )
        transport = StopOnCount()
        result = run_pass(pg_store, config, transport=transport, stop=transport.stop)
    assert result.ok, result.error
    assert result.reconciled is not None
    assert result.reconciled.stopped
    # One count probe pair at most: the stop was seen before the next span.
    assert transport.probes <= 2, transport.probes
    # Not finished, so still due next pass.
    reconciled_at = pg_store.load_state(SOURCE).reconciled_at
    assert reconciled_at is not None
    assert abs((reconciled_at - long_ago).total_seconds()) < 1
