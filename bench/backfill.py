"""`syncd backfill` of a DoorFlow (and IntServ) simulator into PostgreSQL: events/s, peak RSS.

    python bench/backfill.py [--sizes 200000,1000000] [--kinds doorflow,intserv]
                             [--window 1d] [--database-url URL]

The simulator runs in its own process on loopback (``bench/sync_doorflow.py``
helpers); `syncd backfill` runs as a child process exactly as a user would run
it, over the simulator's whole history (30 days, one-day windows by default),
into a fresh database; its peak RSS comes from the kernel (``wait4``). The row
count is checked against the simulator before a figure is printed. Memory must
stay bounded by a page: the peak RSS for the largest size should be no more
than for the smallest (target: under 150 MB).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import (
    DEFAULT_URL,
    START,
    Run,
    count_rows,
    fresh_database,
    print_runs,
    run_child,
    simulator,
)


def syncd_backfill(
    kind: str, base_url: str, secret: str, database_url: str, window: str
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "syncd.toml"
        credential = "token_env" if kind == "doorflow" else "api_key_env"
        config.write_text(
            "[[sources]]\n"
            f'name = "bench"\nkind = "{kind}"\nbase_url = "{base_url}"\n'
            f'{credential} = "BENCH_SECRET"\npage_size = 1000\n'
        )
        env = {**os.environ, "BENCH_SECRET": secret, "SYNCD_LOG_LEVEL": "warning"}
        until = START + timedelta(days=31)  # past the simulator's clock: everything
        argv = [sys.executable, "-m", "syncd.cli", "--config", str(config),
                "--database-url", database_url, "backfill", "--source", "bench",
                "--since", START.isoformat(), "--until", until.isoformat(),
                "--window", window]  # fmt: skip
        seconds, rss, _ = run_child(argv, env)
    return seconds, rss


def measure(kind: str, size: int, database_url: str, window: str) -> Run:
    with simulator(kind, size) as (base_url, secret, served), fresh_database(database_url) as url:
        seconds, rss = syncd_backfill(kind, base_url, secret, url, window)
        rows = count_rows(url)
    if rows != served:
        raise SystemExit(f"{kind}: the vendor lists {served} events, the table has {rows}")
    return Run(f"syncd backfill ({kind}, {window})", rows, seconds, rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,1000000")
    parser.add_argument("--kinds", default="doorflow,intserv")
    parser.add_argument("--window", default="1d")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    runs = [
        measure(kind, int(size), args.database_url, args.window)
        for kind in args.kinds.split(",")
        for size in args.sizes.split(",")
    ]
    print_runs(runs)


if __name__ == "__main__":
    main()
