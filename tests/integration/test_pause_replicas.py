"""``syncd pause`` across two ``syncd run`` replicas and a ``syncd sync`` loop.

Each source has a DoorFlow simulator of its own, which counts the requests
it gets: after a pause the paused one gets none (within one interval), its
webhooks are answered 200 and not fetched; after ``syncd resume`` everything
the simulator holds is loaded, nothing missing, nothing more; the other
source never stops.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa

from syncd.simulators import DoorFlowSimulator
from tests.integration.daemonhelpers import (
    DaemonProcess,
    free_port,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)
from tests.integration.test_cli import syncd

INTERVAL = 1.0
SECRET = "pause-test-webhook-secret"


def _stored(engine: sa.Engine, source: str) -> set[int]:
    with engine.connect() as conn:
        keys = conn.execute(
            sa.text("SELECT event_key FROM events WHERE source = :s"), {"s": source}
        ).scalars()
        return {int(k) for k in keys}


class SyncLoop:
    """``syncd sync`` again and again in a thread, like cron with a short period."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args, self.env = args, env
        self.runs: list[tuple[float, float, int, str]] = []  # started, ended, code, stdout
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            done = syncd(*self.args, "sync", env=self.env)
            self.runs.append(
                (started, time.monotonic(), done.returncode, done.stdout + done.stderr)
            )
            self.stop.wait(0.2)

    def __enter__(self) -> SyncLoop:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def _metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    return daemon.metric(name, **labels)


def test_pause_and_resume_across_replicas_and_a_sync_loop(
    pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    hook = f"http://127.0.0.1:{ports[0]}/webhooks/doorflow/quiet"
    quiet = DoorFlowSimulator(
        seed=81, history=150, history_days=2, webhook_url=hook, webhook_secret=SECRET
    )
    busy = DoorFlowSimulator(seed=82, history=150, history_days=2)
    with quiet, busy:
        config = write_config(
            tmp_path / "syncd.toml",
            ports[0],
            [
                source_toml(
                    "quiet",
                    "doorflow",
                    quiet.base_url,
                    token_env="TQ",
                    webhook_secret_env="WS",
                    interval=INTERVAL,
                ),
                source_toml("busy", "doorflow", busy.base_url, token_env="TB", interval=INTERVAL),
            ],
        )
        env = {"TQ": quiet.token, "TB": busy.token, "WS": SECRET}
        cli = ["--config", str(config), "--database-url", pg_url]
        with ExitStack() as stack:
            daemons = [
                stack.enter_context(
                    running_daemon(
                        config,
                        pg_url,
                        port,
                        env,
                        extra_args=("--migrate", "--listen", f"127.0.0.1:{port}"),
                    )
                )
                for port in ports
            ]
            loop = stack.enter_context(SyncLoop(cli, env))
            listed = set(quiet.truth(listable=True))
            wait_for(lambda: _stored(pg_engine, "quiet") == listed, 60, "quiet loaded", every=0.2)
            for daemon in daemons:
                assert _metric(daemon, "syncd_source_paused", source="quiet") == 0

            # -- pause -----------------------------------------------------------
            paused = syncd(*cli, "pause", "quiet", "--reason", "vendor maintenance")
            assert paused.returncode == 0, paused.stderr
            paused_at = time.monotonic()
            changes = [(paused_at, quiet.stats.get("requests", 0))]
            before_ids = set(quiet.truth())
            quiet.generate(25)  # new events, each announced by a webhook
            new_ids = set(quiet.truth()) - before_ids
            assert new_ids
            busy_before = busy.stats.get("requests", 0)
            deadline = paused_at + 6 * INTERVAL
            while time.monotonic() < deadline:
                count = quiet.stats.get("requests", 0)
                if count != changes[-1][1]:
                    changes.append((time.monotonic(), count))
                time.sleep(0.05)
            # Webhooks for the paused source: 200, and nothing fetched for them.
            assert quiet.deliver_webhooks() == len(new_ids)
            time.sleep(2 * INTERVAL)
            last_request = changes[-1][0] - paused_at
            # A pass or a `syncd sync` already past its pause check may finish:
            # one interval (plus its jitter and a process start) at most.
            assert last_request <= 1.1 * INTERVAL + 2.0, changes
            assert quiet.stats.get("requests", 0) == changes[-1][1], "a request after the pause"
            assert quiet.acks == [] or not {i for i, _, _ in quiet.acks} & new_ids
            assert not _stored(pg_engine, "quiet") & new_ids
            assert busy.stats.get("requests", 0) > busy_before  # the other source goes on
            for daemon in daemons:
                assert _metric(daemon, "syncd_source_paused", source="quiet") == 1
                assert _metric(daemon, "syncd_source_paused", source="busy") == 0
                assert _metric(daemon, "syncd_passes_total", source="quiet", result="skipped") >= 2
            a = daemons[0]
            assert _metric(a, "syncd_webhook_requests_total", source="quiet", status="200") >= 1
            assert _metric(
                a, "syncd_webhook_notifications_total", source="quiet", outcome="paused"
            ) == len(new_ids)
            during = [r for r in loop.runs if r[0] > paused_at + 0.1]
            assert during, "no syncd sync ran while paused"
            for _, _, code, out in during:
                assert code == 0, out
                assert "quiet: paused" in out
                assert "busy: ok" in out

            # -- resume ----------------------------------------------------------
            resumed = syncd(*cli, "resume", "quiet")
            assert resumed.returncode == 0, resumed.stderr
            resumed_at = time.monotonic()

            # The polls catch up from the stored cursor; the vendor re-sends what
            # was not acknowledged (webhook-only codes come only that way), and
            # now it is fetched and acknowledged.
            def caught_up() -> bool:
                quiet.deliver_webhooks(resend_after=1.0)
                return new_ids <= _stored(pg_engine, "quiet") and not quiet.pending_webhooks()

            wait_for(caught_up, 30, "caught up, every notification acknowledged", every=0.3)
            assert _stored(pg_engine, "quiet") == listed | new_ids  # nothing missing or extra
            assert new_ids <= {i for i, _, _ in quiet.acks}
            for daemon in daemons:
                wait_for(
                    lambda d=daemon: _metric(d, "syncd_source_paused", source="quiet") == 0,  # type: ignore[misc]
                    10,
                    "the gauge back at 0",
                )
            wait_for(
                lambda: any(r[0] > resumed_at and "quiet: ok" in r[3] for r in loop.runs),
                30,
                "a syncd sync of quiet after resume",
            )
            for daemon in daemons:
                assert daemon.stop() == 0
