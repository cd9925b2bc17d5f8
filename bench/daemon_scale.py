"""syncd at production shape: 1,000 sources, webhooks, then a second replica joining.

    python bench/daemon_scale.py                      # the full run (~8 minutes)
    python bench/daemon_scale.py --sources 100 --interval 10 --warmup 15 --measure 30
                                                      # the reduced form CI runs

The sources are simulated accounts on loopback (in this process): DoorFlow
simulators serving bearer-token and API-key sources, IntServ simulators,
a few DoorFlow simulators with one OAuth source each (a grant rotates its
refresh token, so one grant serves one source), and one DoorFlow source with
webhooks (an event is added and announced every second; the time until its
row is in PostgreSQL is measured). Sources are spread over five time zones.
Each simulator adds ``--per-minute`` events a minute (every source of it
sees them all).

Phases: replica A starts (``syncd run --migrate`` on an empty database;
*start-up* is launch to the first ``/readyz`` 200); after ``--warmup``
seconds (the first passes, spread over the first interval) A is measured
alone for ``--measure`` seconds; then replica B starts on the same database
and, after one more interval, both are measured for ``--measure`` seconds.
Measured: CPU share of one core and peak RSS (from /proc), passes per
minute by result (the daemons' ``syncd_passes_total``), vendor requests per
source per interval (counted at the simulators), the database's size,
sources *behind* at the end (newest stored event older than the newest its
simulator had one interval plus 20 s before), webhook-to-row latency.

Targets (issue 20): start-up <= 60 s, CPU <= 25 % of one core, peak RSS <=
300 MB, 0 sources behind, 0 failed passes, and two replicas cost the vendors
what one does. ``--json PATH`` writes the figures for a test to check. The
machine's load average is printed too: the figures are only as quiet as the
machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from benchkit import DEFAULT_URL, fresh_database
from prometheus_client.parser import text_string_to_metric_families

from syncd.db.engine import create_engine
from syncd.simulators import DoorFlowSimulator, IntServSimulator

SECRET = "whsec_bench"  # noqa: S105  (the simulator's, not a real one)
CLK_TCK = os.sysconf("SC_CLK_TCK")
ZONES = ["UTC", "Europe/Stockholm", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]
TARGETS = {"startup_s": 60.0, "cpu_share": 0.25, "peak_rss_mb": 300.0}


@dataclass
class Sim:
    """One simulator and the sources it serves (name -> auth: token, api_key, oauth)."""

    kind: str
    server: Any
    sources: dict[str, str] = field(default_factory=dict)


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
    out: dict[str, float] = {"ok": 0.0, "failed": 0.0, "skipped": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "syncd_passes":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    result = sample.labels["result"]
                    out[result] = out.get(result, 0.0) + sample.value
    return out


def start_simulators(args: argparse.Namespace, port: int) -> tuple[list[Sim], DoorFlowSimulator]:
    """``--simulators`` shared ones (half DoorFlow, half IntServ), ``--oauth`` OAuth ones,
    the webhook one; the polled sources assigned round-robin."""
    rate = args.per_minute / 60.0
    shared: list[Sim] = []
    for i in range(args.simulators):
        kind = "doorflow" if i % 2 == 0 else "intserv"
        cls = DoorFlowSimulator if kind == "doorflow" else IntServSimulator
        server = cls(seed=100 + i, history=50, history_days=0.5, rate=rate).start()
        shared.append(Sim(kind, server))
    oauth = [
        Sim("doorflow", DoorFlowSimulator(seed=300 + i, history=50, history_days=0.5, rate=rate))
        for i in range(args.oauth)
    ]
    for i, sim in enumerate(oauth):
        sim.server.start()
        sim.sources[f"oauth{i:03d}"] = "oauth"
    polled = args.sources - 1 - args.oauth
    for n in range(polled):
        sim = shared[n % len(shared)]
        auth = "api_key" if sim.kind == "intserv" or (n // len(shared)) % 2 else "token"
        sim.sources[f"s{n:04d}"] = auth
    hook = DoorFlowSimulator(
        seed=99,
        history=20,
        history_days=0.5,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/doorflow/hook",
        webhook_secret=SECRET,
    ).start()
    return [*shared, *oauth], hook


def secret_env(sims: list[Sim], hook: DoorFlowSimulator) -> dict[str, str]:
    env = {"HOOK_SECRET": SECRET, f"TOKEN_{id(hook)}": hook.token}
    for sim in sims:
        key = sim.server.api_key if sim.kind == "intserv" else sim.server.token
        env[f"TOKEN_{id(sim.server)}"] = key
        if sim.kind == "doorflow":
            env[f"APIKEY_{id(sim.server)}"] = sim.server.api_key
            oauth = sim.server.oauth
            env[f"CID_{id(sim.server)}"] = oauth.client_id
            env[f"CSECRET_{id(sim.server)}"] = oauth.client_secret
            env[f"REFRESH_{id(sim.server)}"] = oauth.refresh_token
    return env


def credentials(sim: Sim, auth: str) -> str:
    ref = id(sim.server)
    if sim.kind == "intserv":
        return f'api_key_env = "TOKEN_{ref}"'
    if auth == "api_key":
        return f'api_key_env = "APIKEY_{ref}"'
    if auth == "oauth":
        return (
            f'client_id_env = "CID_{ref}"\nclient_secret_env = "CSECRET_{ref}"\n'
            f'refresh_token_env = "REFRESH_{ref}"'
        )
    return f'token_env = "TOKEN_{ref}"'


def config_text(port: int, sims: list[Sim], hook: DoorFlowSimulator, interval: int) -> str:
    lines = [f'[daemon]\nlisten = "127.0.0.1:{port}"\n']
    n = 0
    for sim in sims:
        for name, auth in sim.sources.items():
            lines.append(
                f'[[sources]]\nname = "{name}"\nkind = "{sim.kind}"\n'
                f'base_url = "{sim.server.base_url}"\n{credentials(sim, auth)}\n'
                f'interval = {interval}\ntimezone = "{ZONES[n % len(ZONES)]}"\n'
            )
            n += 1
    lines.append(
        f'[[sources]]\nname = "hook"\nkind = "doorflow"\nbase_url = "{hook.base_url}"\n'
        f'token_env = "TOKEN_{id(hook)}"\nwebhook_secret_env = "HOOK_SECRET"\n'
        f"interval = {interval}\n"
    )
    return "\n".join(lines)


class Replica:
    """One ``syncd run`` process, its HTTP port, its log file."""

    def __init__(self, config: Path, db_url: str, port: int, env: dict[str, str], log: Path):
        argv = [sys.executable, "-m", "syncd.cli", "--config", str(config)]
        argv += ["--database-url", db_url, "--log-level", "warning", "run", "--migrate"]
        argv += ["--listen", f"127.0.0.1:{port}"]
        self.url = f"http://127.0.0.1:{port}"
        self.launched = time.monotonic()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=out)
        self.log = log

    def wait_ready(self, limit: float = 600.0) -> float:
        """Seconds from launch to the first /readyz 200."""
        while time.monotonic() - self.launched < limit:
            if self.proc.poll() is not None:
                raise SystemExit(f"the daemon exited {self.proc.returncode}: {self.log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - self.launched
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the daemon never became ready within {limit:.0f}s")

    def stop(self) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, time.monotonic() - started


def vendor_requests(sims: list[Sim]) -> int:
    return sum(sim.server.stats.get("requests", 0) for sim in sims)


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


def measure(
    replicas: list[Replica], sims: list[Sim], hook: DoorFlowSimulator, engine: sa.Engine, s: float
) -> dict[str, Any]:
    """Over ``s`` seconds of steady load: each replica's CPU and passes, the vendors'
    requests, and webhook latency (one event announced a second)."""
    cpu0 = [cpu_seconds(r.proc.pid) for r in replicas]
    passes0 = [passes(r.url) for r in replicas]
    requests0, wall0 = vendor_requests(sims), time.monotonic()
    latencies: list[float] = []
    lost = 0
    while time.monotonic() - wall0 < s:
        tick = time.monotonic()
        got = webhook_latency(hook, engine)
        if got is None:
            lost += 1
        else:
            latencies.append(got)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    wall = time.monotonic() - wall0
    requests = vendor_requests(sims) - requests0
    cpu = [cpu_seconds(r.proc.pid) - c for r, c in zip(replicas, cpu0, strict=True)]
    done = [passes(r.url) for r in replicas]
    total = {k: sum(d[k] - p[k] for d, p in zip(done, passes0, strict=True)) for k in done[0]}
    return {
        "wall": wall,
        "cpu_share": [c / wall for c in cpu],
        "peak_rss_mb": [memory_mb(r.proc.pid)[1] for r in replicas],
        "passes": total,
        "requests": requests,
        "latencies": latencies,
        "lost": lost,
    }


def behind_sources(sims: list[Sim], engine: sa.Engine, interval: int) -> list[str]:
    """Sources whose newest stored event is older than their simulator's newest of one
    interval plus 20 s ago."""
    cutoff = datetime.fromtimestamp(time.time() - interval - 20, UTC)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT source, max(occurred_at) FROM events GROUP BY source"))
        stored = dict(tuple(row) for row in rows)
    behind = []
    for sim in sims:
        field_name = "created_at" if sim.kind == "doorflow" else "event_time"
        times = [
            datetime.fromisoformat(e[field_name].replace("Z", "+00:00"))
            for e in sim.server.truth().values()
        ]
        due = max((t for t in times if t <= cutoff), default=None)
        for name in sim.sources:
            have = stored.get(name)
            if due is not None and (have is None or have < due):
                behind.append(name)
    return behind


def database_mb(engine: sa.Engine) -> tuple[float, float]:
    """The database's size, and its BI calendar's share, in MB."""
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        calendar = conn.execute(
            sa.text("SELECT pg_total_relation_size('zone_local_days')")
        ).scalar_one()
    return total / 2**20, calendar / 2**20


def run(args: argparse.Namespace) -> dict[str, Any]:
    port_a, port_b = free_port(), free_port()
    sims, hook = start_simulators(args, port_a)
    sources = args.sources
    env = {**os.environ, **secret_env(sims, hook)}
    figures: dict[str, Any] = {"sources": sources, "interval": args.interval}
    load_before = os.getloadavg()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db_url = stack.enter_context(fresh_database(args.database_url))
        config = tmp / "syncd.toml"
        config.write_text(config_text(port_a, sims, hook, args.interval))
        engine = create_engine(db_url)
        replicas: list[Replica] = []
        try:
            a = Replica(config, db_url, port_a, env, tmp / "a.log")
            replicas.append(a)
            figures["startup_s"] = a.wait_ready()
            print(f"replica A ready in {figures['startup_s']:.1f}s; warming up", flush=True)
            time.sleep(args.warmup)
            figures["one"] = measure(replicas, sims, hook, engine, args.measure)
            b = Replica(config, db_url, port_b, env, tmp / "b.log")
            replicas.append(b)
            figures["startup_b_s"] = b.wait_ready()
            print(f"replica B ready in {figures['startup_b_s']:.1f}s; settling", flush=True)
            time.sleep(args.interval * 1.2)  # B's first passes (spread over an interval)
            figures["two"] = measure(replicas, sims, hook, engine, args.measure)
            figures["behind"] = behind_sources(sims, engine, args.interval)
            figures["database_mb"], figures["calendar_mb"] = database_mb(engine)
        finally:
            figures["stops"] = [r.stop() for r in replicas]
            engine.dispose()
            for sim in sims:
                sim.server.stop()
            hook.stop()
    figures["load"] = (load_before[0], os.getloadavg()[0])
    return figures


def per_interval(phase: dict[str, Any], sources: int, interval: int) -> float:
    """Vendor requests per polled source per interval."""
    return float(phase["requests"]) / (sources - 1) / (phase["wall"] / interval)


def report(args: argparse.Namespace, got: dict[str, Any]) -> None:
    sources, interval = got["sources"], got["interval"]
    one, two = got["one"], got["two"]

    def per_min(phase: dict[str, Any], key: str) -> float:
        return float(phase["passes"][key]) / (phase["wall"] / 60) / sources

    rows = [
        ("start-up to first /readyz 200 (s)", f"{got['startup_s']:.1f}",
         f"{got['startup_b_s']:.1f} (B)", "<= 60"),
        ("CPU, share of one core (%)", f"{100 * one['cpu_share'][0]:.1f}",
         " + ".join(f"{100 * c:.1f}" for c in two["cpu_share"]), "<= 25"),
        ("peak RSS (MB)", f"{one['peak_rss_mb'][0]:.0f}",
         " / ".join(f"{m:.0f}" for m in two["peak_rss_mb"]), "<= 300"),
        ("passes ok per source per minute", f"{per_min(one, 'ok'):.2f}",
         f"{per_min(two, 'ok'):.2f}", f"{60 / interval:.2f}"),
        ("passes skipped per source per minute", f"{per_min(one, 'skipped'):.2f}",
         f"{per_min(two, 'skipped'):.2f}", ""),
        ("failed passes", f"{one['passes']['failed']:.0f}", f"{two['passes']['failed']:.0f}",
         "0"),
        ("vendor requests per source per interval", f"{per_interval(one, sources, interval):.2f}",
         f"{per_interval(two, sources, interval):.2f}", "same"),
        ("sources behind (at the end)", "", f"{len(got['behind'])}", "0"),
        ("database size (MB), of it calendar", "",
         f"{got['database_mb']:.1f}, {got['calendar_mb']:.1f}", ""),
    ]  # fmt: skip
    print()
    print(f"{sources} sources ({args.simulators} shared simulators, {args.oauth} OAuth, 1 webhook),"
          f" {len(ZONES)} time zones, interval {interval}s, {args.per_minute:g} events/min each;"
          f" each phase {args.measure:.0f}s")  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'one replica':>12}  {'two replicas':>14}  {'target':>7}")
    for name, a, b, target in rows:
        print(f"{name:<{width}}  {a:>12}  {b:>14}  {target:>7}")
    latencies = one["latencies"] + two["latencies"]
    if latencies:
        print(
            f"webhook-to-row: n={len(latencies)} p50 {1000 * percentile(latencies, 0.5):.0f} ms, "
            f"p99 {1000 * percentile(latencies, 0.99):.0f} ms, lost {one['lost'] + two['lost']}"
        )
    if got["behind"]:
        print(f"behind: {got['behind'][:10]}")
    print("SIGTERM: " + ", ".join(f"exit {c} in {s:.1f}s" for c, s in got["stops"]))
    before, after = got["load"]
    print(f"load average before {before:.1f}, after {after:.1f} ({os.cpu_count()} cores)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--simulators", type=int, default=10, help="half DoorFlow, half IntServ")
    parser.add_argument("--oauth", type=int, default=4, help="OAuth sources, one simulator each")
    parser.add_argument("--per-minute", type=float, default=3.0, help="events per source")
    parser.add_argument("--warmup", type=float, default=90.0)
    parser.add_argument("--measure", type=float, default=180.0, help="seconds per phase")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    got = run(args)
    report(args, got)
    if args.json is not None:
        args.json.write_text(json.dumps(got, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
