"""One `syncd run` with 1,000 sources at a 60 s interval: CPU, RSS, passes, lag, webhooks.

    python bench/daemon_scale.py [--sources 1000] [--warmup 90] [--measure 180]
                                 [--database-url URL]

The sources are simulated accounts: a few DoorFlow and IntServ simulators on
loopback (in this process), each serving many sources, each simulator adding
``--per-minute`` events a minute (every source of it sees them all). One more
DoorFlow simulator sends signed webhooks to one source; while the daemon is
under its steady load, an event is added and announced every second and the
time until its row is in PostgreSQL is measured.

After ``--warmup`` seconds (the first passes, spread over the first
interval), the daemon's CPU time (from /proc), its RSS and the passes it
counted are measured over ``--measure`` seconds. A source is *behind* when
its newest stored event is older than the newest its simulator had one
interval plus 20 s before the end. The machine's load average is printed
too: the figures are only as quiet as the machine was.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from benchkit import DEFAULT_URL, fresh_database
from prometheus_client.parser import text_string_to_metric_families

from syncd.db.engine import create_engine
from syncd.simulators import DoorFlowSimulator, IntServSimulator

INTERVAL = 60
SECRET = "whsec_bench"  # noqa: S105  (the simulator's, not a real one)
CLK_TCK = os.sysconf("SC_CLK_TCK")
Sim = tuple[str, Any]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def memory_mb(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def passes(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "syncd_passes":
            for sample in family.samples:
                result = sample.labels["result"]
                out[result] = out.get(result, 0.0) + sample.value
    return out


def config_text(port: int, sims: list[Sim], polled: int, hook: Any) -> str:
    """``polled`` sources spread round-robin over ``sims``, plus the webhook source."""
    lines = [f'[daemon]\nlisten = "127.0.0.1:{port}"\n']
    for n in range(polled):
        kind, sim = sims[n % len(sims)]
        secret = "token_env" if kind == "doorflow" else "api_key_env"
        lines.append(
            f'[[sources]]\nname = "s{n:04d}"\nkind = "{kind}"\n'
            f'base_url = "{sim.base_url}"\n{secret} = "KEY_{id(sim)}"\n'
            f"interval = {INTERVAL}\n"
        )
    lines.append(
        f'[[sources]]\nname = "hook"\nkind = "doorflow"\nbase_url = "{hook.base_url}"\n'
        f'token_env = "KEY_{id(hook)}"\nwebhook_secret_env = "HOOK_SECRET"\n'
        f"interval = {INTERVAL}\n"
    )
    return "\n".join(lines)


def newest_stored(engine: sa.Engine) -> dict[str, datetime]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT source, max(occurred_at) FROM events GROUP BY source"))
        return dict(tuple(row) for row in rows)


def sim_newest(kind: str, sim: Any, before: datetime) -> datetime | None:
    field = "created_at" if kind == "doorflow" else "event_time"
    times = [datetime.fromisoformat(e[field].replace("Z", "+00:00")) for e in sim.truth().values()]
    eligible = [t for t in times if t <= before]
    return max(eligible) if eligible else None


def webhook_latency(hook: DoorFlowSimulator, engine: sa.Engine) -> float | None:
    before = set(hook.truth())
    hook.generate(1)
    new = set(hook.truth()) - before
    started = time.monotonic()
    hook.deliver_webhooks()
    keys = [str(k) for k in new]
    query = sa.text("SELECT count(*) FROM events WHERE source = 'hook' AND event_key = ANY(:keys)")
    while time.monotonic() - started < 10:
        with engine.connect() as conn:
            if conn.execute(query, {"keys": keys}).scalar_one() == len(keys):
                return time.monotonic() - started
        time.sleep(0.005)
    return None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def start_simulators(args: argparse.Namespace, port: int) -> tuple[list[Sim], DoorFlowSimulator]:
    rate = args.per_minute / 60.0
    sims: list[Sim] = []
    for i in range(args.simulators):
        kind = "doorflow" if i % 2 == 0 else "intserv"
        cls = DoorFlowSimulator if kind == "doorflow" else IntServSimulator
        sims.append((kind, cls(seed=100 + i, history=50, history_days=0.5, rate=rate).start()))
    hook = DoorFlowSimulator(
        seed=99,
        history=20,
        history_days=0.5,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/doorflow/hook",
        webhook_secret=SECRET,
    ).start()
    return sims, hook


def wait_healthy(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the daemon never became healthy")


def measure(
    proc: subprocess.Popen[bytes],
    url: str,
    hook: DoorFlowSimulator,
    engine: sa.Engine,
    seconds: float,
) -> dict[str, Any]:
    """CPU, passes and webhook latency over ``seconds`` of steady load."""
    cpu0, wall0, passes0 = cpu_seconds(proc.pid), time.monotonic(), passes(url)
    latencies: list[float] = []
    lost = 0
    while time.monotonic() - wall0 < seconds:
        tick = time.monotonic()
        got = webhook_latency(hook, engine)
        if got is None:
            lost += 1
        else:
            latencies.append(got)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    cpu1, wall1, passes1 = cpu_seconds(proc.pid), time.monotonic(), passes(url)
    rss, peak = memory_mb(proc.pid)
    return {
        "wall": wall1 - wall0,
        "cpu": cpu1 - cpu0,
        "passes": {k: passes1.get(k, 0) - passes0.get(k, 0) for k in ("ok", "failed", "skipped")},
        "rss": rss,
        "peak": peak,
        "latencies": latencies,
        "lost": lost,
    }


def behind_sources(
    sims: list[Sim], polled: int, engine: sa.Engine
) -> tuple[list[str], list[float]]:
    """Sources whose newest stored event is older than their simulator's newest of
    one interval plus 20 s ago; and every source's newest-event age."""
    end = datetime.now(UTC)
    cutoff = datetime.fromtimestamp(end.timestamp() - INTERVAL - 20, UTC)
    stored = newest_stored(engine)
    behind, ages = [], []
    expected = [sim_newest(kind, sim, cutoff) for kind, sim in sims]
    for n in range(polled):
        due, have = expected[n % len(sims)], stored.get(f"s{n:04d}")
        if due is not None and (have is None or have < due):
            behind.append(f"s{n:04d}")
        if have is not None:
            ages.append((end - have).total_seconds())
    return behind, ages


def report(args: argparse.Namespace, sources: int, got: dict[str, Any]) -> None:
    minutes = got["wall"] / 60
    delta = got["passes"]
    print(f"sources {sources}, interval {INTERVAL}s, {args.per_minute:g} events/min each")
    print(f"measured {got['wall']:.0f}s after a {args.warmup:.0f}s warm-up")
    print(f"CPU: {100 * got['cpu'] / got['wall']:.1f}% of one core")
    print(f"RSS: {got['rss']:.0f} MB at the end, {got['peak']:.0f} MB peak")
    print(
        f"passes/min: {sum(delta.values()) / minutes:.0f} "
        f"(ok {delta['ok'] / minutes:.0f}, failed {delta['failed'] / minutes:.0f}, "
        f"skipped {delta['skipped'] / minutes:.0f}; one per source per interval: "
        f"{sources * 60 / INTERVAL:.0f})"
    )
    print(f"sources behind: {len(got['behind'])} {got['behind'][:5]}")
    if got["ages"]:
        ages = got["ages"]
        print(f"newest-event age: p50 {statistics.median(ages):.0f}s, max {max(ages):.0f}s")
    latencies = got["latencies"]
    if latencies:
        print(
            f"webhook-to-row: n={len(latencies)} p50 {1000 * percentile(latencies, 0.5):.0f} ms, "
            f"p99 {1000 * percentile(latencies, 0.99):.0f} ms, "
            f"max {1000 * max(latencies):.0f} ms, lost {got['lost']}"
        )
    print(f"SIGTERM: exit {got['exit']} in {got['stop_s']:.1f}s")
    before, after = got["load"]
    print(f"load average before {before:.1f}, after {after:.1f} ({os.cpu_count()} cores)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--simulators", type=int, default=10, help="half DoorFlow, half IntServ")
    parser.add_argument("--per-minute", type=float, default=3.0, help="events per source")
    parser.add_argument("--warmup", type=float, default=90.0)
    parser.add_argument("--measure", type=float, default=180.0)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()

    port = free_port()
    sims, hook = start_simulators(args, port)
    polled = args.sources - 1  # and one webhook source
    sources = args.sources
    env = {**os.environ, "HOOK_SECRET": SECRET}
    for kind, sim in [*sims, ("doorflow", hook)]:
        env[f"KEY_{id(sim)}"] = sim.token if kind == "doorflow" else sim.api_key
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.database_url) as db_url:
        config = Path(tmp) / "syncd.toml"
        config.write_text(config_text(port, sims, polled, hook))
        argv = [sys.executable, "-m", "syncd.cli", "--config", str(config)]
        argv += ["--database-url", db_url, "--log-level", "warning", "run", "--migrate"]
        with open(Path(tmp) / "daemon.log", "wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        engine = create_engine(db_url)
        try:
            wait_healthy(url)
            print(f"{sources} sources up; warming up {args.warmup:.0f}s", flush=True)
            time.sleep(args.warmup)
            got = measure(proc, url, hook, engine, args.measure)
            got["behind"], got["ages"] = behind_sources(sims, polled, engine)
        finally:
            proc.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
            code = proc.wait(timeout=30)
            engine.dispose()
            for _kind, sim in sims:
                sim.stop()
            hook.stop()
        got["exit"], got["stop_s"] = code, time.monotonic() - stopping
    got["load"] = (load_before[0], os.getloadavg()[0])
    report(args, sources, got)
    return 0


if __name__ == "__main__":
    sys.exit(main())
