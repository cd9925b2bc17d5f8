"""Cold `syncd sync` of 200,000 IntServ simulator events, next to DoorFlow, in one run.

    python bench/sync_intserv.py [--events 200000] [--database-url URL]

Same method as `bench/sync_doorflow.py` (whose helpers this reuses): each
simulator in its own process on loopback, `syncd sync` as a child process into
a fresh, empty PostgreSQL database, peak RSS of that child from the kernel.
"""

from __future__ import annotations

import argparse

from sync_doorflow import DEFAULT_URL, measure_sync, print_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    runs = [measure_sync(kind, args.events, args.database_url) for kind in ("intserv", "doorflow")]
    print_runs(runs)


if __name__ == "__main__":
    main()
