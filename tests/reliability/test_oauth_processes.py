"""One OAuth grant, many processes: two ``syncd run`` replicas, a ``syncd backfill``
loop and a ``syncd sync`` loop on one DoorFlow OAuth source, against a token
endpoint that rotates the refresh token on every use and revokes the old one
(``invalid_grant`` on reuse, as Doorkeeper does), access tokens living 3 s.

One replica holds the refresh lock a while on each refresh (the test hook
``SYNCD_TEST_REFRESH_HOLD_S``) and is SIGKILLed while it holds it; the others
carry on. At the end: zero ``invalid_grant`` at the vendor, zero failed passes
or commands, every listable event stored. The figures are printed (``-s``).

CI runs it for ~40 s; ``SYNCD_RELIABILITY=full`` (``scripts/reliability``)
for 180 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from syncd.db.schema import events
from syncd.simulators import DoorFlowSimulator
from syncd.sources.auth import HOLD_ENV
from tests.integration.daemonhelpers import (
    DaemonProcess,
    free_port,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)
from tests.reliability.scale import scaled

DURATION_S = scaled(180, 40)
TOKEN_LIFETIME_S = 3


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class CommandLoop:
    """Run one ``syncd`` command again and again until stopped; keep every outcome."""

    def __init__(self, args: list[str], env: dict[str, str], pause: float) -> None:
        self.args, self.env, self.pause = args, env, pause
        self.outcomes: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(
                [sys.executable, "-m", "syncd.cli", *self.args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            self.outcomes.append((done.returncode, done.stdout + done.stderr))
            self._stop.wait(self.pause)

    def __enter__(self) -> CommandLoop:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=300)

    @property
    def failures(self) -> list[str]:
        return [text for code, text in self.outcomes if code != 0]


def test_replicas_backfill_and_sync_share_one_rotating_grant(
    pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    start = now - timedelta(days=2)
    with DoorFlowSimulator(
        seed=19,
        history=scaled(3000, 1500),
        history_days=1.5,
        rate=5.0,
        token_expiry=TOKEN_LIFETIME_S,
        name_update_share=0.0,
    ) as sim:
        source = source_toml(
            "hq",
            "doorflow",
            sim.base_url,
            client_id_env="DF_CLIENT_ID",
            client_secret_env="DF_CLIENT_SECRET",
            refresh_token_env="DF_REFRESH_TOKEN",
            start=_iso(start),
            interval=0.5,
            page_size=100,
        )
        ports = [free_port(), free_port()]
        config = write_config(tmp_path / "syncd.toml", ports[0], [source])
        secrets = {
            "DF_CLIENT_ID": sim.oauth.client_id,
            "DF_CLIENT_SECRET": sim.oauth.client_secret,
            "DF_REFRESH_TOKEN": sim.oauth.refresh_token,
        }
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")},
            **secrets,
        }
        common = ["--config", str(config), "--database-url", pg_url]
        backfill = [
            *common, "backfill", "--source", "hq", "--since", _iso(start),
            "--until", _iso(now - timedelta(hours=1)), "--window", "2h",
        ]  # fmt: skip
        started = time.monotonic()
        with ExitStack() as stack:
            victim, survivor = (
                stack.enter_context(
                    running_daemon(
                        config,
                        pg_url,
                        port,
                        {**secrets, **({HOLD_ENV: "1.5"} if n == 0 else {})},
                        extra_args=("--listen", f"127.0.0.1:{port}"),
                    )
                )
                for n, port in enumerate(ports)
            )
            syncs = stack.enter_context(CommandLoop([*common, "sync"], env, pause=0.5))
            backfills = stack.enter_context(CommandLoop(backfill, env, pause=1.0))
            # Kill the victim while it holds the refresh lock, half-way through.
            time.sleep(DURATION_S / 2)
            held_before = len(victim.events("oauth_refresh_lock_held"))
            wait_for(
                lambda: len(victim.events("oauth_refresh_lock_held")) > held_before,
                30,
                "the victim to take the refresh lock",
                every=0.02,
            )
            time.sleep(0.3)  # inside its 1.5 s hold
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(timeout=10)
            killed_at = time.monotonic()
            time.sleep(max(0.0, DURATION_S - (killed_at - started)))
            survivor_passes = _passes_after(survivor, killed_at)
        elapsed = time.monotonic() - started
        # The vendor goes quiet; one last pass must find everything.
        sim.rate = 0.0
        time.sleep(0.2)
        final = subprocess.run(
            [sys.executable, "-m", "syncd.cli", *common, "sync"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        truth = set(sim.truth(listable=True))
        stats = sim.stats
    with pg_engine.connect() as conn:
        stored = {
            int(key)
            for key in conn.execute(sa.select(events.c.event_key).where(events.c.source == "hq"))
            .scalars()
            .all()
        }
    failed_passes = [
        entry for daemon in (victim, survivor) for entry in daemon.events("pass_failed")
    ]
    figures = (
        f"oauth processes ({elapsed:.0f} s, access tokens {TOKEN_LIFETIME_S} s, busy machine): "
        f"token requests {stats.get('token_requests', 0)}, refreshes "
        f"{stats.get('token_refreshes', 0)}, invalid_grant {stats.get('invalid_grant', 0)}, "
        f"failed passes {len(failed_passes)}, sync runs {len(syncs.outcomes)} "
        f"({len(syncs.failures)} failed), backfill runs {len(backfills.outcomes)} "
        f"({len(backfills.failures)} failed), survivor passes after the kill "
        f"{survivor_passes}, events {len(stored)} of {len(truth)}"
    )
    print(figures)
    assert stats.get("invalid_grant", 0) == 0, figures
    assert not failed_passes, failed_passes[:3]
    assert not syncs.failures, syncs.failures[:3]
    assert not backfills.failures, backfills.failures[:3]
    assert final.returncode == 0, final.stdout + final.stderr
    assert survivor_passes > 0, "the survivor should carry on after the kill"
    assert len(victim.events("oauth_refresh_lock_held")) > 0
    missing = truth - stored
    assert not missing, f"{len(missing)} events missing"


def _passes_after(daemon: DaemonProcess, moment_monotonic: float) -> int:
    """Passes the daemon finished, or skipped because another process had just made
    the round's pass (one pass per source per interval in all: the sync loop often
    has), after ``moment_monotonic`` (converted to wall clock)."""
    wall = time.time() - (time.monotonic() - moment_monotonic)
    return sum(
        1
        for entry in daemon.events("pass_finished") + daemon.events("pass_skipped")
        if datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp() > wall
    )
