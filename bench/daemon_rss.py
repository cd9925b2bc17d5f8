"""The daemon's RSS over many passes, with glibc's default malloc arenas and with two.

    python bench/daemon_rss.py [--sources 10] [--interval 0.25] [--minutes 5]

Runs ``syncd run`` twice against one DoorFlow simulator on loopback (its
sources pass every ``--interval`` seconds, ``--rate`` new events a second):
once as it starts by default (``syncd run`` caps the arenas at 2, see
``syncd/memory.py``), once with ``MALLOC_ARENA_MAX=16`` (glibc's default on
two cores: 8 per core); ``--only env2`` runs with ``MALLOC_ARENA_MAX=2``
from the environment (for a syncd that does not cap them itself). Prints RSS
every minute and the passes made; issue 20 saw 86 -> 199 MB over 11,400
passes with a new prefetch thread per pass and the default arenas.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchkit import DEFAULT_URL, fresh_database
from daemon_scale import Replica, free_port, memory_mb, passes

from syncd.simulators import DoorFlowSimulator


def one_run(args: argparse.Namespace, arenas: str | None) -> list[tuple[float, float, float]]:
    """(minutes, RSS MB, passes) samples, one a minute."""
    port = free_port()
    samples = []
    with (
        DoorFlowSimulator(seed=5, history=200, history_days=0.5, rate=args.rate) as sim,
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(args.database_url) as db_url,
    ):
        config = Path(tmp) / "syncd.toml"
        sources = "\n".join(
            f'[[sources]]\nname = "s{n}"\nkind = "doorflow"\nbase_url = "{sim.base_url}"\n'
            f'token_env = "T"\ninterval = {args.interval}\n'
            for n in range(args.sources)
        )
        config.write_text(f'[daemon]\nlisten = "127.0.0.1:{port}"\nworkers = 4\n\n{sources}')
        env = {**os.environ, "T": sim.token}
        env.pop("MALLOC_ARENA_MAX", None)
        if arenas is not None:
            env["MALLOC_ARENA_MAX"] = arenas
        daemon = Replica(config, db_url, port, env, Path(tmp) / "daemon.log")
        try:
            daemon.wait_ready()
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < args.minutes * 60:
                time.sleep(min(60.0, args.minutes * 60 - elapsed))
                made = passes(daemon.url)
                rss = memory_mb(daemon.proc.pid)[0]
                samples.append(((time.monotonic() - started) / 60, rss, made["ok"]))
                label = arenas or "2 (syncd run)"
                print(f"  arenas {label}: {samples[-1][0]:.0f} min, RSS {rss:.0f} MB, "
                      f"{made['ok']:.0f} passes", flush=True)  # fmt: skip
        finally:
            daemon.stop()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--minutes", type=float, default=5.0)
    # Few new events: each pass re-reads the lookback (900 s), so a faster rate
    # grows every pass's pages (and the RSS) for the first 15 minutes.
    parser.add_argument("--rate", type=float, default=0.2, help="new events a second")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument(
        "--only",
        choices=["default", "bounded", "env2"],
        help="one run: glibc's default, syncd run's own cap, or MALLOC_ARENA_MAX=2",
    )
    args = parser.parse_args()
    runs = {"bounded": None, "default": "16", "env2": "2"}
    results = {}
    for name, arenas in runs.items():
        if args.only == name or (args.only is None and name != "env2"):
            results[name] = one_run(args, arenas)
    print(f"\n{args.sources} sources every {args.interval}s for {args.minutes:g} min")
    print(f"{'malloc arenas':<24} {'passes':>8} {'RSS first min':>14} {'RSS at the end':>15}")
    for name, samples in results.items():
        label = {"bounded": "2 (syncd run's own)", "default": "16 (glibc default)"}.get(
            name, "2 (MALLOC_ARENA_MAX)"
        )
        first, last = samples[0], samples[-1]
        print(f"{label:<24} {last[2]:>8.0f} {first[1]:>11.0f} MB {last[1]:>12.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
