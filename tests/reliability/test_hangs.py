"""Nothing hangs: a vendor that trickles its body, a stop that must stop.

- A DoorFlow vendor whose list answer arrives one byte at a time: ``syncd
  sync`` ends as a timeout failure (retried as one) within about ``timeout``
  x attempts; under ``syncd run`` the cut pass really ends and the source
  stores the vendor's events once it answers normally again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from syncd.db.engine import create_engine
from syncd.db.schema import events
from tests.integration.daemonhelpers import free_port, running_daemon, source_toml, wait_for
from tests.integration.daemonhelpers import write_config as write_daemon_config
from tests.reliability.drip import DripServer

pytestmark = pytest.mark.postgres

TOKEN = "drip-token-not-a-secret"


def doorflow_page(count: int) -> bytes:
    now = datetime.now(UTC).replace(microsecond=0)
    return orjson.dumps(
        [
            {
                "id": 900_000 + i,
                "event_code": 10,
                "created_at": (now - timedelta(minutes=i + 1)).isoformat(),
                "updated_at": (now - timedelta(minutes=i + 1)).isoformat(),
                "door_controller_id": "d1",
            }
            for i in range(count)
        ]
    )


def syncd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd.cli", *args],
        env={**os.environ, "DRIP_TOKEN": TOKEN, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stored(url: str, source: str) -> int:
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            query = sa.select(sa.func.count()).where(events.c.source == source)
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_sync_against_a_trickled_body_fails_as_a_timeout(pg_url: str, tmp_path: Path) -> None:
    source = "drip_sync"
    with DripServer(doorflow_page(3), mode="drip", every=1.0) as vendor:
        config = tmp_path / "syncd.toml"
        config.write_text(
            source_toml(
                source, "doorflow", vendor.url, token_env="DRIP_TOKEN",
                timeout=2, max_retries=2, start="2026-01-01T00:00:00Z",
            )
        )  # fmt: skip
        began = time.monotonic()
        done = syncd(
            "--config", str(config), "--database-url", pg_url,
            "--log-level", "info", "--log-format", "json", "sync",
        )  # fmt: skip
        took = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    # The body needs ~3 minutes at this pace; per-read timeouts would wait it out.
    # Two attempts of 2 s each, one backoff of at most ~1 s, start-up: well under 15 s.
    assert took < 15, took
    assert vendor.requests == 2
    assert f"syncd: {source} failed: request timed out" in done.stderr
    retries = [
        orjson.loads(line)
        for line in done.stderr.splitlines()
        if line.startswith("{") and '"request_retry"' in line
    ]
    assert [r["reason"] for r in retries] == ["timeout"]
    assert stored(pg_url, source) == 0


def test_daemon_recovers_after_a_trickled_body(pg_url: str, tmp_path: Path) -> None:
    source = "drip_run"
    port = free_port()
    with DripServer(doorflow_page(13), mode="drip", every=2.0) as vendor:
        config = write_daemon_config(
            tmp_path / "syncd.toml",
            port,
            [
                source_toml(
                    source, "doorflow", vendor.url, token_env="DRIP_TOKEN", timeout=2,
                    max_retries=2, interval=2, max_pass_duration=60,
                    start="2026-01-01T00:00:00Z",
                )
            ],
        )  # fmt: skip
        env = {"DRIP_TOKEN": TOKEN}
        with running_daemon(config, pg_url, port, env, extra_args=()) as daemon:
            wait_for(lambda: daemon.events("pass_failed"), 30, "a pass failed by timeouts")
            failed = daemon.events("pass_failed")[0]
            assert failed["error_type"] == "RequestTimeout", failed
            assert daemon.metric("syncd_retries_total", source=source, reason="timeout") >= 1
            vendor.mode = "normal"
            wait_for(lambda: stored(pg_url, source) == 13, 40, "the 13 events after recovery")
            # The dripped connections were given up, not left open.
            wait_for(lambda: vendor.open_connections <= 1, 10, "dripped connections closed")
            assert daemon.stop() == 0
