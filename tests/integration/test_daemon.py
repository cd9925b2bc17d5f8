"""``syncd run`` end to end: both simulators, real PostgreSQL, faults, webhooks, SIGTERM.

Every test runs the daemon as a real process (the console script's code path,
signals included) against simulators over loopback HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from syncd.config import load_settings
from syncd.db.schema import events, rejected_events, sync_state
from syncd.db.store import Store
from syncd.simulators import DoorFlowSimulator, Faults, IntServSimulator
from tests.integration import test_intserv_sync as intserv_checks
from tests.integration.daemonhelpers import (
    DaemonProcess,
    free_port,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)
from tests.integration.test_doorflow_sync import assert_matches_truth as doorflow_matches_truth
from tests.integration.test_doorflow_sync import parse, stored

WEBHOOK_SECRET = "whsec_7f3a9c1d2e4b6a8f"
BAD_TOKEN = "dft_wrong_0123456789abcdef"
FAULTS = Faults(rate_limit=0.15, retry_after=0.1, server_errors=0.1, drop=0.05, seed=11)
CONTRACT_EVENTS = (
    "daemon_started",
    "pass_started",
    "page_committed",
    "pass_finished",
    "pass_failed",
    "request_retry",
    "webhook_received",
    "daemon_stopping",
    "daemon_stopped",
)


def _rows(engine: sa.Engine, source: str) -> tuple[int, Any]:
    query = sa.select(sa.func.count(), sa.func.max(events.c.occurred_at)).where(
        events.c.source == source
    )
    with engine.connect() as conn:
        count, newest = conn.execute(query).one()
    return int(count), newest


def _state(engine: sa.Engine, source: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(sync_state).where(sync_state.c.source == source)).one()


def assert_doorflow_with_webhooks(store: Store, sim: DoorFlowSimulator) -> None:
    """What polling holds (every listable event, current, malformed kept), plus what
    webhooks brought that a list never serves (remote-control events): each of those
    a real, current vendor event that was announced and fetched."""
    table = stored(store, "hq")
    everything = sim.truth()
    extra = set(table) - set(sim.truth(listable=True))
    assert extra <= set(everything), "rows the vendor does not have"
    fetched = {event_id for event_id, _, _ in sim.acks}
    assert extra <= fetched, "an unlisted event stored without a webhook fetch"
    for event_id in extra:
        event, row = everything[event_id], table[event_id]
        assert row.occurred_at == parse(event["created_at"])
        assert row.source_updated_at == parse(event["updated_at"])
        assert row.event_code == event["event_code"]
    with store.engine.begin() as conn:  # then the polling half, exactly
        conn.execute(
            sa.delete(events).where(
                events.c.source == "hq", events.c.event_key.in_([str(i) for i in extra])
            )
        )
    doorflow_matches_truth(store, "hq", sim)


def _finished_after(daemon: DaemonProcess, source: str, moment: float) -> bool:
    return any(
        e.get("source") == source and _epoch(e["timestamp"]) > moment
        for e in daemon.events("pass_finished")
    )


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_daemon_through_faults_and_webhooks_then_sigterm_matches_truth(
    pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/webhooks/doorflow/hq"
    doorflow = DoorFlowSimulator(
        seed=21,
        history=800,
        history_days=1,
        rate=6.0,
        malformed_share=0.01,
        webhook_url=hook_url,
        webhook_secret=WEBHOOK_SECRET,
        webhook_interval=0.5,
    )
    intserv = IntServSimulator(seed=22, history=800, history_days=1, rate=6.0, malformed_share=0.02)
    config = write_config(
        tmp_path / "syncd.toml",
        port,
        [
            source_toml(
                "hq",
                "doorflow",
                "BASE_DF",
                token_env="DF_TOKEN",
                webhook_secret_env="DF_WEBHOOK_SECRET",
                interval=1,
                page_size=200,
            ),
            source_toml(
                intserv_checks.SOURCE,
                "intserv",
                "BASE_IS",
                api_key_env="IS_KEY",
                interval=1,
                page_size=200,
            ),
            source_toml("broken", "doorflow", "BASE_DF", token_env="BAD_TOKEN", interval=1),
        ],
    )
    with doorflow, intserv:
        text = config.read_text().replace("BASE_DF", doorflow.base_url)
        config.write_text(text.replace("BASE_IS", intserv.base_url))
        env = {
            "DF_TOKEN": doorflow.token,
            "IS_KEY": intserv.api_key,
            "BAD_TOKEN": BAD_TOKEN,
            "DF_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        with running_daemon(config, pg_url, port, env) as daemon:
            doorflow.faults = FAULTS
            intserv.faults = FAULTS
            time.sleep(6.0)  # passes and webhooks through 429, 5xx and dropped connections
            doorflow.faults = Faults()
            intserv.faults = Faults()
            time.sleep(2.0)
            doorflow.rate = intserv.rate = 0.0  # the vendors go quiet: a final state exists
            quiet = time.time()
            for source in ("hq", intserv_checks.SOURCE):
                wait_for(
                    lambda s=source: _finished_after(daemon, s, quiet + 1.0),  # type: ignore[misc]
                    20,
                    f"a pass of {source} after the vendors went quiet",
                )
            wait_for(lambda: not doorflow.pending_webhooks(), 10, "every webhook acknowledged")
            time.sleep(0.5)
            metrics = daemon.metrics()
            code = daemon.stop()
        assert code == 0
        assert daemon.stopped_in is not None
        assert daemon.stopped_in < 10.0

        intserv_checks.assert_matches_truth(pg_engine, intserv)
        acks = doorflow.acks
        secrets = [doorflow.token, intserv.api_key, BAD_TOKEN, WEBHOOK_SECRET]
        secrets += [token for _, token, _ in acks]

    # /metrics against the table (the database was empty at the start).
    def value(name: str, **labels: str) -> float:
        return metrics[(name, tuple(sorted(labels.items())))]

    for source in ("hq", intserv_checks.SOURCE):
        rows, newest = _rows(pg_engine, source)
        assert value("syncd_events_written_total", source=source, result="inserted") == rows
        assert value("syncd_newest_event_timestamp_seconds", source=source) == newest.timestamp()
        state = _state(pg_engine, source)
        last = value("syncd_last_success_timestamp_seconds", source=source)
        assert abs(last - state.last_success_at.timestamp()) < 2.0
        assert value("syncd_consecutive_failures", source=source) == 0
        with pg_engine.connect() as conn:
            kept = conn.execute(
                sa.select(sa.func.count()).where(rejected_events.c.source == source)
            ).scalar_one()
        assert value("syncd_events_rejected_total", source=source) >= kept > 0
        assert value("syncd_passes_total", source=source, result="ok") >= 2
        assert value("syncd_vendor_requests_total", source=source, status="200") > 0
    broken = _state(pg_engine, "broken")
    failed = value("syncd_passes_total", source="broken", result="failed")
    assert (
        failed
        == broken.consecutive_failures
        == value("syncd_consecutive_failures", source="broken")
    )
    assert failed >= 2
    assert value("syncd_vendor_requests_total", source="broken", status="401") >= failed
    retried = sum(
        value("syncd_retries_total", source=s, reason=r)
        for s in ("hq", intserv_checks.SOURCE)
        for r in ("rate_limited", "server_error", "connection")
    )
    assert retried > 0
    assert value("syncd_webhook_requests_total", source="hq", status="200") > 0
    assert value("syncd_webhook_notifications_total", source="hq", outcome="fetched") > 0
    assert acks, "webhook deliveries were never acknowledged"

    # The logs: the contract's events, and not one secret anywhere.
    names = {entry.get("event") for entry in daemon.logs()}
    assert set(CONTRACT_EVENTS) <= names, set(CONTRACT_EVENTS) - names
    assert "(not json)" not in names
    printed = b"".join(daemon.lines).decode()
    for secret in secrets:
        assert secret not in printed
    assert "authorization" not in printed.lower()
    assert "Bearer" not in printed
    assert "ack_token=" not in printed

    # Last, as it trims the table to what polling alone could hold.
    assert_doorflow_with_webhooks(Store(pg_engine), doorflow)


def test_max_pass_duration_cancels_and_sigterm_ends_a_60s_retry_after(
    tmp_path: Path, sqlite_url: str
) -> None:
    """SQLite this time: a pass past its maximum is cancelled, its lock released; then a
    SIGTERM during a 60 s Retry-After wait still exits 0 within 10 s."""
    port = free_port()
    limited = Faults(rate_limit=1.0, retry_after=60.0, seed=3)
    with DoorFlowSimulator(seed=5, history=50, faults=limited) as sim:
        config = write_config(
            tmp_path / "syncd.toml",
            port,
            [
                source_toml(
                    "capped",
                    "doorflow",
                    sim.base_url,
                    token_env="T",
                    interval=1,
                    max_pass_duration=1.0,
                ),
                source_toml("waiting", "doorflow", sim.base_url, token_env="T", interval=1),
            ],
        )
        settings = load_settings(str(config), sqlite_url, environ={"T": sim.token})
        assert settings.source("capped").max_pass_duration == 1.0
        with running_daemon(config, sqlite_url, port, {"T": sim.token}) as daemon:

            def cancelled_twice() -> bool:
                return len(daemon.events("pass_cancelled")) >= 2

            # Two cancellations: the second pass got the lock the first one released.
            wait_for(cancelled_twice, 20, "two cancelled passes of 'capped'")
            assert daemon.metric("syncd_passes_cancelled_total", source="capped") >= 2
            assert daemon.metric("syncd_passes_total", source="capped", result="failed") >= 2
            wait_for(
                lambda: any(
                    e.get("source") == "waiting" and e.get("wait_s", 0) >= 59
                    for e in daemon.events("request_retry")
                ),
                10,
                "a 60 s Retry-After wait",
            )
            assert daemon.stop() == 0
            assert daemon.stopped_in is not None
            assert daemon.stopped_in < 10.0
        assert {e["event"] for e in daemon.logs()} >= {"daemon_stopping", "daemon_stopped"}
