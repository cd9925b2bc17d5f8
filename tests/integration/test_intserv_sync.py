"""IntServ end to end: the real simulator over HTTP, the real engine, real PostgreSQL.

The stored ``events`` table is compared with the simulator's ground truth
exactly: every valid event once, with the payload it has now, nothing else;
every malformed record in ``rejected_events``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from syncd.config import Secret, SourceConfig
from syncd.db.schema import events, rejected_events
from syncd.db.store import Store
from syncd.engine import PassResult, run_pass
from syncd.records import parse_time, storable
from syncd.simulators import Faults, IntServSimulator, SimClock
from syncd.sources.intserv import canonical_time

pytestmark = pytest.mark.postgres

SOURCE = "sto"
START = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
TTL = 30.0
SYSTEMS = ("abc123-001", "abc123-002", "def456-001")


# -- ground truth and what was stored ----------------------------------------------


def truth_by_key(sim: IntServSimulator) -> dict[str, dict[str, Any]]:
    """The simulator's truth, keyed the way the connector keys events."""
    truth = sim.truth()
    keyed = {
        f"{system}|{canonical_time(parse_time(when, 'event_time'))}|{seq}": event
        for (system, when, seq), event in truth.items()
    }
    assert len(keyed) == len(truth)
    return keyed


def stored_events(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    query = sa.select(
        events.c.event_key,
        events.c.payload,
        events.c.occurred_at,
        events.c.system_id,
        events.c.sequence_id,
        events.c.vendor,
    ).where(events.c.source == SOURCE)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    result: dict[str, dict[str, Any]] = {}
    for key, payload, occurred_at, system_id, sequence_id, vendor in rows:
        assert key not in result, f"duplicate row for {key}"
        assert vendor == "intserv"
        assert system_id == payload["system_id"]
        assert sequence_id == payload["sequence_id"]
        assert occurred_at == parse_time(payload["event_time"], "event_time")
        result[key] = payload
    return result


def stored_rejected(engine: sa.Engine) -> set[bytes]:
    query = sa.select(rejected_events.c.raw).where(rejected_events.c.source == SOURCE)
    with engine.connect() as conn:
        return {orjson.dumps(raw, option=orjson.OPT_SORT_KEYS) for (raw,) in conn.execute(query)}


def assert_matches_truth(engine: sa.Engine, sim: IntServSimulator) -> None:
    truth = truth_by_key(sim)
    stored = stored_events(engine)
    missing = truth.keys() - stored.keys()
    extra = stored.keys() - truth.keys()
    assert not missing, f"{len(missing)} events never stored, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} stored events the vendor does not have: {sorted(extra)[:3]}"
    stale = [k for k, event in truth.items() if stored[k] != event]
    assert not stale, f"{len(stale)} stored payloads differ from the vendor's, e.g. {stale[:3]}"
    served = [storable(raw) for raw in sim.malformed()]  # NUL etc. kept as text
    malformed = {orjson.dumps(raw, option=orjson.OPT_SORT_KEYS) for raw in served}
    assert malformed, "the simulator served no malformed records: the test lost its teeth"
    assert stored_rejected(engine) == malformed


def least_sync_time(store: Store) -> datetime | None:
    value = store.load_state(SOURCE).cursor.get("least_sync_time")
    return datetime.fromisoformat(value) if value else None


# -- many passes through faults, with the world moving ---------------------------


class MovingWorld(httpx.BaseTransport):
    """Real HTTP to the simulator; before each request the simulated world moves.

    The clock advances a little per request (a pass takes time), events
    arrive mid-pass now and then, and one-shot ``actions`` run before the
    request with their index in the pass (a system coming back online, the
    continuation keys expiring, the server failing for a while).
    """

    def __init__(self, sim: IntServSimulator, clock: SimClock, rng: random.Random) -> None:
        self.sim = sim
        self.clock = clock
        self.rng = rng
        self.inner = httpx.HTTPTransport()
        self.arrival_probability = 0.0
        self.actions: dict[int, Callable[[], None]] = {}
        self.requests = 0  # in this pass

    def expire_keys(self) -> None:
        self.clock.advance(TTL + 1)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.clock.advance(self.rng.uniform(0.05, 0.5))
        action = self.actions.pop(self.requests, None)
        self.requests += 1
        if action is not None:
            action()
        if self.rng.random() < self.arrival_probability:
            self.sim.generate(self.rng.randint(1, 8))
        return self.inner.handle_request(request)

    def close(self) -> None:
        # The engine closes its client (and so this transport) after each pass.
        self.inner.close()
        self.inner = httpx.HTTPTransport()
        self.requests = 0
        self.actions = {}


FAULTS = Faults(rate_limit=0.1, retry_after=0.01, server_errors=0.1, drop=0.05)


@pytest.fixture
def world() -> Iterator[tuple[IntServSimulator, SimClock]]:
    clock = SimClock(start=START)
    sim = IntServSimulator(
        seed=20240304,
        history=2500,
        history_days=3,
        clock=clock,
        continuation_ttl=TTL,
        malformed_share=0.02,
        tie_groups=6,
        tie_size=12,
        faults=FAULTS,
        # Each page says what the horizon is *now*: a connector that trusted
        # the last page's value would skip what a system uploads mid-pass.
        report_current_least_sync_time=True,
    )
    with sim:
        yield sim, clock


def test_passes_through_faults_offline_systems_and_expiring_keys(
    pg_store: Store, pg_engine: sa.Engine, world: tuple[IntServSimulator, SimClock]
) -> None:
    sim, clock = world
    rng = random.Random(7)
    transport = MovingWorld(sim, clock, rng)
    transport.arrival_probability = 0.1
    config = SourceConfig(
        name=SOURCE,
        kind="intserv",
        base_url=sim.base_url,
        api_key=Secret(sim.api_key),
        start=START - timedelta(days=4),
        page_size=50,
        max_retries=10,
        max_retry_wait=0.02,
        timeout=5.0,
    )
    late, later = SYSTEMS[1], SYSTEMS[2]

    def outage() -> None:
        sim.faults = Faults(server_errors=1.0)

    def sync() -> PassResult:
        return run_pass(pg_store, config, clock=clock.now, transport=transport)

    results: list[PassResult] = []
    horizons: list[datetime] = []
    for number in range(24):
        clock.advance(rng.uniform(1, 90))
        sim.generate(rng.randint(0, 150))
        if number == 0:
            transport.actions = {20: transport.expire_keys, 40: transport.expire_keys}
        if number == 2:
            sim.generate(400)  # a backlog: a pass of several pages
            transport.actions = {3: outage}  # the pass fails mid-way...
        if number == 3:
            sim.faults = FAULTS
            transport.expire_keys()  # ...and its key has expired when it resumes
        if number == 4:
            sim.set_offline(late, True)  # held back for several passes
        if number == 7:
            sim.generate(300)
            transport.actions = {2: transport.expire_keys}
        if number == 11:
            # Back online between two pages of this pass: its buffered events,
            # with old event_time values, land behind the continuation key.
            assert sim.buffered() > 0
            transport.actions = {2: lambda: sim.set_offline(late, False)}
        if number == 13:
            sim.faults = dataclasses.replace(FAULTS, retry_after_in="body")
        if number == 15:
            sim.set_offline(later, True)
            sim.generate(200)
        if number == 19:
            sim.set_offline(later, False)  # back between passes
        results.append(sync())
        horizon = least_sync_time(pg_store)
        if horizon is not None:
            assert not horizons or horizon >= horizons[-1], "least_sync_time went backwards"
            horizons.append(horizon)
        if number in range(5, 11):
            # The offline system holds the horizon back.
            assert horizon is not None
            assert horizon <= sim.horizons()[late]
        if number == 2:
            assert not results[-1].ok
            assert "pass" in pg_store.load_state(SOURCE).cursor

    # The world settles: no faults, nothing more arrives, every system online.
    sim.faults = Faults()
    transport.arrival_probability = 0.0
    assert not sim.offline
    clock.advance(5)
    for _ in range(3):  # finish a pass left in progress by a failure
        if "pass" not in pg_store.load_state(SOURCE).cursor:
            break
        results.append(sync())
    final = sync()  # and one fresh pass over everything since the horizon
    assert final.ok, final.error
    assert "pass" not in pg_store.load_state(SOURCE).cursor

    assert_matches_truth(pg_engine, sim)
    stats = sim.stats
    assert stats.get("rate_limited", 0) > 0
    assert stats.get("server_errors", 0) > 0
    assert stats.get("dropped", 0) > 0
    # Three expiries: the first pass's second one (request 40) no longer happens,
    # since its restart resumes from what the pass proved, not from from_date.
    assert stats.get("bad_requests", 0) >= 3, "continuation keys did not expire mid-pass"
    assert sum(r.ok for r in results) >= 22
    assert stats.get("internal_errors", 0) == 0


# -- the command line: SIGKILL mid-pass, a wrong key --------------------------------


def write_config(tmp_path: Path, base_url: str, page_size: int = 40) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [[sources]]
            name = "{SOURCE}"
            kind = "intserv"
            base_url = "{base_url}"
            api_key_env = "INTSERV_API_KEY"
            start = "{canonical_time(datetime.now(UTC) - timedelta(days=3))}"
            page_size = {page_size}
            max_retries = 8
            max_retry_wait = 0.05
            """
        ),
        encoding="utf-8",
    )
    return path


def syncd(config: Path, database_url: str, api_key: str) -> tuple[list[str], dict[str, str]]:
    """``syncd sync`` as a subprocess: its arguments and environment."""
    env = {**os.environ, "INTSERV_API_KEY": api_key, "SYNCD_LOG_FORMAT": "json"}
    env.pop("SYNCD_CONFIG", None)
    env.pop("SYNCD_DATABASE_URL", None)
    args = [sys.executable, "-m", "syncd.cli", "--config", str(config)]
    return [*args, "--database-url", database_url, "sync"], env


def test_sigkill_mid_pass_then_a_clean_finish(
    pg_store: Store, pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    rng = random.Random(11)
    sim = IntServSimulator(
        seed=99,
        history=3000,
        history_days=2,
        malformed_share=0.01,
        tie_groups=4,
        tie_size=10,
        faults=Faults(latency=0.02, rate_limit=0.05, retry_after=0.01, server_errors=0.05),
    )
    with sim:
        config = write_config(tmp_path, sim.base_url)
        args, env = syncd(config, pg_url, sim.api_key)
        killed_mid_pass = 0
        for round_no in range(4):
            before = pg_store.load_state(SOURCE).cursor.get("pass")
            proc = subprocess.Popen(
                args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline:
                    current = pg_store.load_state(SOURCE).cursor.get("pass")
                    if current is not None and current != before:
                        break  # this process has committed a page of its pass
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.3))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
            finally:
                proc.wait(timeout=30)
            if proc.returncode == -signal.SIGKILL and "pass" in pg_store.load_state(SOURCE).cursor:
                killed_mid_pass += 1
            sim.generate(rng.randint(20, 80))
            if round_no == 1:
                sim.set_offline(SYSTEMS[0], True)
                sim.generate(30)
        assert killed_mid_pass >= 3

        sim.set_offline(SYSTEMS[0], False)
        sim.faults = Faults(latency=0.0)
        time.sleep(1.1)  # past the second of the last generated event
        finished = 0
        for _ in range(5):  # resume the killed pass to its end, then a fresh pass
            done = subprocess.run(
                args, check=False, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr[-2000:]
            if "skipped" in done.stdout:  # the dead process's lock, not yet released
                time.sleep(0.2)
                continue
            if "pass" not in pg_store.load_state(SOURCE).cursor:
                finished += 1
                if finished == 2:
                    break
        assert finished == 2
        assert_matches_truth(pg_engine, sim)


def test_wrong_api_key_is_one_clear_line(pg_engine: sa.Engine, pg_url: str, tmp_path: Path) -> None:
    wrong = "isk_" + "0badc0ffee" * 4
    with IntServSimulator(seed=5, history=50) as sim:
        config = write_config(tmp_path, sim.base_url)
        args, env = syncd(config, pg_url, wrong)
        done = subprocess.run(
            args, check=False, env=env, capture_output=True, text=True, timeout=60
        )
        unauthorized = sim.stats.get("unauthorized", 0)
        real_key = sim.api_key
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert wrong not in output
    assert real_key not in output
    assert "Traceback" not in output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    human = [line for line in lines if not line.startswith("{")]
    assert len(human) == 1, done.stderr
    assert human[0].startswith(f"syncd: {SOURCE} failed:")
    assert "401" in human[0]
    for line in lines:  # the rest is structured logging, one JSON object a line
        if line.startswith("{"):
            orjson.loads(line)
    assert unauthorized == 1  # not retried
