"""An IntServ pass longer than ``max_pass_duration`` whose key expires between attempts.

Each pass is cut after a few pages (as the scheduler's ``max_pass_duration``
does: its stop event), and the simulated clock then moves past the
continuation key's life (a failure backoff longer than the TTL). Before,
every attempt started again from ``from_date`` and ``least_sync_time`` never
moved; now what a cut pass proved is committed when its key is refused, so
the cursor moves every time and the backlog completes.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from syncd.config import Secret, SourceConfig
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.simulators import IntServSimulator, SimClock
from tests.integration.test_intserv_sync import SOURCE, stored_events, truth_by_key

pytestmark = pytest.mark.postgres

START = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
TTL = 30.0
PAGES_PER_PASS = 5


class CutAfter(httpx.BaseTransport):
    """Real HTTP; sets the pass's stop once it has had ``pages`` list answers."""

    def __init__(self, pages: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.pages = pages
        self.stop = threading.Event()
        self.answered = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if response.status_code == 200:
            self.answered += 1
            if self.answered >= self.pages:
                self.stop.set()
        return response

    def close(self) -> None:
        self.inner.close()
        self.inner = httpx.HTTPTransport()

    def next_pass(self) -> threading.Event:
        self.stop = threading.Event()
        self.answered = 0
        return self.stop


def test_a_pass_cut_again_and_again_with_expired_keys_still_moves_the_cursor(
    pg_store: Store, pg_engine: sa.Engine
) -> None:
    clock = SimClock(start=START)
    with IntServSimulator(
        seed=11, history=1500, history_days=2, clock=clock, continuation_ttl=TTL
    ) as sim:
        config = SourceConfig(
            name=SOURCE,
            kind="intserv",
            base_url=sim.base_url,
            api_key=Secret(sim.api_key),
            start=START - timedelta(days=3),
            page_size=50,  # 30 pages: ten cut passes' worth
            timeout=5.0,
        )
        transport = CutAfter(PAGES_PER_PASS)
        horizons: list[str] = []
        for _attempt in range(60):
            stop = transport.next_pass()
            result = run_pass(pg_store, config, clock=clock.now, transport=transport, stop=stop)
            assert result.ok, result.error
            cursor = pg_store.load_state(SOURCE).cursor
            horizons.append(cursor["least_sync_time"])
            if "pass" not in cursor:
                break
            clock.advance(TTL + 1)  # the backoff outlasts the key
        else:
            pytest.fail(f"the pass never completed; least_sync_time went {horizons}")
    # The cursor never moved back, and moved at least every other cut pass (a
    # pass that committed no page of its own after its restart leaves nothing
    # new to prove to the next one); everything arrived exactly once.
    assert horizons == sorted(horizons)
    assert all(a < c for a, c in zip(horizons, horizons[2:], strict=False)), horizons
    assert stored_events(pg_engine).keys() == truth_by_key(sim).keys()
