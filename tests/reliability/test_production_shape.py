"""The merged syncd as one system at production shape, against one PostgreSQL database.

Two ``syncd run`` replicas share three sources in three time zones:

- ``oauth``: DoorFlow with an OAuth grant (the simulator rotates the refresh
  token on every use and revokes the old one; access tokens live 3 s), its
  webhooks signed and delivered to replica 0, then (a load balancer
  moving) to replica 1 (remote-control events, codes
  50-63, come only that way);
- ``key``: DoorFlow with an API key, paused with ``syncd pause`` midway and
  resumed later; a few malformed records;
- ``site``: IntServ with a system that goes offline and comes back; a few
  malformed records.

Beside them a ``syncd backfill`` loop of ``oauth`` over its history and a
``syncd sync`` loop. The OAuth vendor turns slow for a while (2 s a request,
longer than an access token's life) and IntServ answers with server errors,
then both return.

At the end (vendors quiet, one clean ``syncd sync``): every listable event
stored once and current (0 missing, 0 duplicated, 0 stale), every malformed
record a reject, every event announced by a webhook stored and acknowledged,
zero ``invalid_grant`` at the token endpoint, no failed pass or command
except ``site``'s while its faults were on, no traceback and no secret in any
output; replica 1 is restarted (SIGTERM) just after a burst of webhooks, and
every stop, then and at the end, exits 0 within 10 s. One line of figures is
printed (``-s``).

CI runs it for ~45 s of traffic; ``SYNCD_RELIABILITY=full`` for 240 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.db.schema import events, rejected_events
from syncd.records import parse_time
from syncd.simulators import DoorFlowSimulator, Faults, IntServSimulator
from syncd.sources.intserv import canonical_time
from tests.integration.daemonhelpers import (
    DaemonProcess,
    free_port,
    running_daemon,
    source_toml,
    wait_for,
)
from tests.reliability.scale import FULL, scaled
from tests.reliability.secretscan import assert_no_secrets
from tests.reliability.test_sigkill import DOORFLOW_MALFORMED, FreezableClock, iso

pytestmark = pytest.mark.postgres

DURATION_S = scaled(240, 45)
TOKEN_LIFETIME_S = 3
SLOW_LATENCY_S = 2.0
WEBHOOK_SECRET = "production-shape-webhook-secret"
OFFLINE_SYSTEM = "abc123-002"
OAUTH, KEY, SITE = "oauth", "key", "site"
REMOTE_CONTROL = frozenset(range(50, 64))
BURST = scaled(600, 200)  # events created at once, each announced by a webhook


@dataclass
class Loop:
    """One ``syncd`` command again and again in a thread; every outcome kept."""

    name: str
    args: list[str]
    env: dict[str, str]
    pause: float
    runs: list[tuple[float, float, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.runs.append(run_cli(self.args, self.env))
            self.stop.wait(self.pause)

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=300)


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(started, ended, exit code, output) of one ``syncd`` command (wall clock)."""
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "syncd.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return started, time.time(), done.returncode, done.stdout + done.stderr


@dataclass
class Window:
    """When a fault was on (wall clock), and which source it may fail."""

    source: str
    began: float = float("inf")
    ended: float = float("inf")

    def covers(self, began: float, ended: float, slack: float = 5.0) -> bool:
        return began <= self.ended + slack and ended >= self.began


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- ground truth and the table -----------------------------------------------------


def truth(
    oauth: DoorFlowSimulator, key: DoorFlowSimulator, site: IntServSimulator
) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        OAUTH: {str(k): v for k, v in oauth.truth(listable=True).items()},
        KEY: {str(k): v for k, v in key.truth(listable=True).items()},
        SITE: {
            f"{system}|{canonical_time(parse_time(when, 'event_time'))}|{seq}": event
            for (system, when, seq), event in site.truth().items()
        },
    }


def identity(source: str, payload: dict[str, Any]) -> str:
    if source != SITE:
        return str(payload["id"])
    moment = canonical_time(parse_time(payload["event_time"], "event_time"))
    return f"{payload['system_id']}|{moment}|{payload['sequence_id']}"


def stored(engine: sa.Engine) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    table: dict[str, list[tuple[str, dict[str, Any]]]] = {OAUTH: [], KEY: [], SITE: []}
    query = sa.select(events.c.source, events.c.event_key, events.c.payload)
    with engine.connect() as conn:
        for source, event_key, payload in conn.execute(query):
            table[source].append((event_key, payload))
    return table


def rejects(engine: sa.Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(sa.select(rejected_events.c.source)).scalars())


# -- the test -----------------------------------------------------------------------


def test_two_replicas_three_sources_loops_pause_and_a_slow_vendor(
    pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    clock = FreezableClock()
    started = time.monotonic()
    ports = [free_port(), free_port()]
    hooks = [f"http://127.0.0.1:{port}/webhooks/doorflow/{OAUTH}" for port in ports]
    oauth_sim = DoorFlowSimulator(
        seed=31, history=scaled(4000, 1500), history_days=1.5, clock=clock, rate=3.0,
        token_expiry=TOKEN_LIFETIME_S, name_update_share=0.05, name_update_delay=4.0,
        late_share=0.02, late_delay=30.0, webhook_url=hooks[0], webhook_secret=WEBHOOK_SECRET,
        webhook_interval=2.0,
    )  # fmt: skip
    key_sim = DoorFlowSimulator(
        seed=32, history=scaled(4000, 1500), history_days=1.5, clock=clock, rate=3.0,
        name_update_share=0.05, name_update_delay=4.0, malformed_share=0.01,
        malformed_kinds=DOORFLOW_MALFORMED,
    )  # fmt: skip
    site_sim = IntServSimulator(
        seed=33, history=scaled(4000, 1500), history_days=1.5, clock=clock, rate=3.0,
        malformed_share=0.01,
    )  # fmt: skip
    start = clock.now() - timedelta(days=2)
    with oauth_sim, key_sim, site_sim:
        announced_before = set(oauth_sim.truth())  # history: never announced
        common = {"start": iso(start), "interval": 1, "lookback": 120, "page_size": 100}
        sources = [
            source_toml(
                OAUTH, "doorflow", oauth_sim.base_url, client_id_env="DF_CLIENT_ID",
                client_secret_env="DF_CLIENT_SECRET", refresh_token_env="DF_REFRESH_TOKEN",
                webhook_secret_env="DF_WEBHOOK_SECRET", timezone="Europe/Stockholm", **common,
            ),
            source_toml(
                KEY, "doorflow", key_sim.base_url, token_env="DF_TOKEN",
                timezone="America/New_York", **common,
            ),
            source_toml(
                SITE, "intserv", site_sim.base_url, api_key_env="IS_KEY",
                timezone="Asia/Tokyo", **common,
            ),
        ]  # fmt: skip
        config = tmp_path / "syncd.toml"
        config.write_text(
            f'[daemon]\nlisten = "127.0.0.1:{ports[0]}"\nworkers = 4\n\n' + "\n".join(sources)
        )
        secrets = {
            "DF_CLIENT_ID": oauth_sim.oauth.client_id,
            "DF_CLIENT_SECRET": oauth_sim.oauth.client_secret,
            "DF_REFRESH_TOKEN": oauth_sim.oauth.refresh_token,
            "DF_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "DF_TOKEN": key_sim.token,
            "IS_KEY": site_sim.api_key,
        }
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")},
            **secrets,
            "PYTHONUNBUFFERED": "1",
        }
        cli = ["--config", str(config), "--database-url", pg_url]
        backfill = [
            *cli, "backfill", "--source", OAUTH, "--since", iso(start),
            "--until", iso(clock.now() - timedelta(hours=1)), "--window", "6h",
        ]  # fmt: skip
        faulty = Window(SITE)
        slow = Window(OAUTH)
        commands: list[tuple[float, float, int, str]] = []
        with ExitStack() as stack:

            def replica(port: int) -> DaemonProcess:
                return stack.enter_context(
                    running_daemon(
                        config, pg_url, port, secrets,
                        extra_args=("--migrate", "--listen", f"127.0.0.1:{port}"),
                        ready_timeout=90,
                    )
                )  # fmt: skip

            daemons: list[DaemonProcess] = [replica(port) for port in ports]
            retired: list[DaemonProcess] = []
            syncs = stack.enter_context(Loop("sync", [*cli, "sync"], env, pause=1.0))
            backfills = stack.enter_context(Loop("backfill", backfill, env, pause=2.0))
            traffic_began = time.monotonic()

            def at(share: float) -> None:
                time.sleep(max(0.0, traffic_began + share * DURATION_S - time.monotonic()))

            at(0.15)
            site_sim.set_offline(OFFLINE_SYSTEM, True)
            at(0.25)
            commands.append(run_cli([*cli, "pause", KEY, "--reason", "maintenance"], env))
            at(0.35)
            slow.began = faulty.began = time.time()
            oauth_sim.faults = Faults(latency=SLOW_LATENCY_S)
            site_sim.faults = Faults(server_errors=0.3, latency=0.5)
            at(0.4)
            bursts = oauth_sim.generate(BURST)  # a burst of webhooks while the vendor is slow
            at(0.5)
            oauth_sim.webhook_url = hooks[1]  # the load balancer moves to the other replica
            at(0.55)
            oauth_sim.faults = Faults()
            site_sim.faults = Faults()
            slow.ended = faulty.ended = time.time()
            commands.append(run_cli([*cli, "resume", KEY], env))
            at(0.7)
            site_sim.set_offline(OFFLINE_SYSTEM, False)
            at(0.8)
            bursts += oauth_sim.generate(BURST)
            # A rolling restart of the replica taking the webhooks, fetches in flight.
            at(0.82)
            retired.append(daemons[1])
            restart_codes = [daemons[1].stop(timeout=30)]
            daemons[1] = replica(ports[1])
            at(1.0)
            traffic_s = time.monotonic() - traffic_began
            for loop in (syncs, backfills):
                loop.stop.set()
            for loop in (syncs, backfills):
                loop.thread.join(timeout=300)

            # The vendors go quiet; the replicas stay up for the webhooks.
            for sim in (oauth_sim, key_sim, site_sim):
                sim.rate = 0.0
            time.sleep(0.3)
            clock.freeze()
            oauth_sim.deliver_webhooks()
            wait_for(lambda: not oauth_sim.pending_webhooks(), 60, "every webhook acknowledged")
            final = run_cli([*cli, "sync"], env)
            again = run_cli([*cli, "sync"], env)
            codes = restart_codes + [daemon.stop(timeout=30) for daemon in daemons]
            daemons = retired + daemons
        figures_truth = truth(oauth_sim, key_sim, site_sim)
        announced = set(oauth_sim.truth()) - announced_before
        remote = {
            str(i)
            for i, e in oauth_sim.truth().items()
            if i in announced and e["event_code"] in REMOTE_CONTROL
        }
        served_bad = {KEY: len(key_sim.malformed(listable=True)), SITE: len(site_sim.malformed())}
        stats = oauth_sim.stats
        acks = len(oauth_sim.acks)
        hidden = [
            *secrets.values(),
            oauth_sim.token,
            oauth_sim.api_key,
            *oauth_sim._refresh_tokens,  # every refresh token ever issued
            *oauth_sim._access_tokens,
        ]

    # -- what the table holds -----------------------------------------------------------
    table = stored(pg_engine)
    problems: dict[str, list[str]] = {"missing": [], "duplicated": [], "extra": [], "stale": []}
    for source, rows in table.items():
        wanted = figures_truth[source]
        keys = {k for k, _ in rows}
        counts = Counter(identity(source, p) for _, p in rows)
        problems["duplicated"] += [f"{source}:{k}x{n}" for k, n in counts.items() if n > 1]
        problems["missing"] += [f"{source}:{k}" for k in wanted.keys() - keys]
        allowed = wanted if source != OAUTH else {**wanted, **{k: {} for k in remote}}
        problems["extra"] += [f"{source}:{k}" for k in keys - allowed.keys()]
        problems["stale"] += [f"{source}:{k}" for k, p in rows if k in wanted and p != wanted[k]]
    oauth_keys = {k for k, _ in table[OAUTH]}
    remote_missing = sorted(remote - oauth_keys)
    rejected = rejects(pg_engine)

    # -- what the processes said ----------------------------------------------------------
    outputs: list[str | bytes] = [b"".join(d.lines) for d in daemons]
    runs = [*syncs.runs, *backfills.runs, *commands, final, again]
    outputs += [text for *_, text in runs]
    logs = tmp_path / "logs"  # kept for a post-mortem (pytest keeps the last few tmp dirs)
    logs.mkdir()
    for n, output in enumerate(outputs):
        blob = output if isinstance(output, bytes) else output.encode()
        (logs / f"{n:04d}.log").write_bytes(blob)
    failed_passes = [
        e
        for d in daemons
        for e in d.events("pass_failed")
        if not (e.get("source") == SITE and faulty.covers(*[_epoch(e["timestamp"])] * 2))
    ]
    failed_runs = [
        (code, text[-600:])
        for began, ended, code, text in runs
        if code != 0 and not (faulty.covers(began, ended) and SITE in text)
    ]
    passes = sum(len(d.events("pass_finished")) for d in daemons)
    faulted = sum(len(d.events("pass_failed")) for d in daemons) - len(failed_passes)
    faulted_runs = sum(1 for *_, code, _ in runs if code != 0) - len(failed_runs)
    tracebacks = [o for o in outputs if b"Traceback" in (o if isinstance(o, bytes) else o.encode())]
    webhooks = sum(len(d.events("webhook_received")) for d in daemons)
    print(
        f"\nproduction shape ({'full' if FULL else 'reduced'}, busy machine): "
        f"events {sum(len(t) for t in figures_truth.values())} "
        f"({', '.join(f'{s} {len(t)}' for s, t in figures_truth.items())}), "
        f"remote-control by webhook {len(remote)}, bursts {bursts}, rejects {dict(rejected)}, "
        f"passes {passes} ({faulted} failed by injected faults, "
        f"{len(failed_passes)} otherwise), "
        f"sync runs {len(syncs.runs)}, backfill runs {len(backfills.runs)} "
        f"({faulted_runs} failed by injected faults, {len(failed_runs)} otherwise), "
        f"token requests {stats.get('token_requests', 0)}, "
        f"invalid_grant {stats.get('invalid_grant', 0)}, webhook posts "
        f"{stats.get('webhook_posts', 0)} (received {webhooks}), acks {acks}, "
        f"traffic {traffic_s:.0f} s, total {time.monotonic() - started:.0f} s, "
        f"stop {', '.join(f'{d.stopped_in:.1f}' for d in daemons)} s"
    )
    found = {name: (len(v), v[:5]) for name, v in problems.items() if v}
    assert not found, found
    assert not remote_missing, f"{len(remote_missing)} remote-control events missing"
    assert remote, "no remote-control event was announced: the check has no teeth"
    assert all(served_bad.values()), served_bad
    assert {s: rejected.get(s, 0) for s in served_bad} == served_bad, (rejected, served_bad)
    assert rejected.get(OAUTH, 0) == 0
    assert stats.get("invalid_grant", 0) == 0
    assert not failed_passes, "\n".join(str(e) for e in failed_passes[:3])
    assert not failed_runs, failed_runs[:3]
    assert not tracebacks, str(tracebacks[0])[-2000:]
    assert_no_secrets(outputs, hidden)
    assert codes == [0, 0, 0], codes
    assert all(d.stopped_in is not None and d.stopped_in < 10 for d in daemons)
