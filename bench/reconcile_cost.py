"""What `syncd reconcile` costs on a DoorFlow history: vendor requests and seconds.

    python bench/reconcile_cost.py [--days 1,10,100] [--per-day 2000] [--late 30]
                                   [--malformed 0.027] [--database-url URL]

For each history length: a DoorFlow simulator on loopback holds ``per-day``
events a day (2.7 % served malformed by default, some without a readable
time: the issue's 10 days / 20,000 events / ~540 malformed); one `sync`
loads it into a fresh database (SQLite in a temporary directory unless
``--database-url`` names a PostgreSQL server); then

- **clean**: `reconcile` over the whole history, nothing missing;
- **late**: ``--late`` offline-controller uploads spread over the history
  (each with one on-time event beside it, which the next pass would read),
  then `reconcile` again; every late upload must be found.

A plain re-read of the history costs its pages plus the count that says how
much there is: the ``re-read`` column. Reconciliation must stay at or below it,
and a clean one at two requests whatever the length.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.config import Secret, SourceConfig
from syncd.db import migrate
from syncd.db.engine import create_engine
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.logging import configure_logging
from syncd.reconcile import ReconcileReport, pages_for, reconcile
from syncd.simulators import DoorFlowSimulator


def measure(days: int, per_day: int, late: int, malformed: float, url: str | None) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(url or f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(engine)
        store = Store(engine)
        sim = DoorFlowSimulator(
            seed=21,
            history=days * per_day,
            history_days=days,
            malformed_share=malformed,
            name_update_share=0.0,
        )
        with sim:
            now = datetime.now(UTC)
            since = now - timedelta(days=days)
            config = SourceConfig(
                name="bench",
                kind="doorflow",
                base_url=sim.base_url,
                token=Secret(sim.token),
                start=since - timedelta(hours=1),
                page_size=1000,
                lookback=900,
            )
            assert run_pass(store, config).ok
            until = datetime.now(UTC)
            malformed_n = len(sim.malformed(listable=True))
            clean, clean_s = _timed(store, config, since, until)
            assert clean.found == 0, clean
            sim.late_share, sim.malformed_share = 1.0, 0.0  # every upload storable
            before = set(sim.truth(listable=True))
            for n in range(late):
                sim.late_delay = (n + 0.5) * days * 86_400 / (late + 1) / 1.25  # inside
                sim.generate(1)  # one on time, one late (late_delay ago)
            # A late upload of a remote-control code (50-63) is listed by no list: not counted.
            added = [e for i, e in sim.truth(listable=True).items() if i not in before]
            old = datetime.now(UTC) - timedelta(minutes=16)  # past the lookback (15 min)
            listable_late = sum(1 for e in added if datetime.fromisoformat(e["created_at"]) < old)
            with_late, late_s = _timed(store, config, since, datetime.now(UTC))
            assert with_late.late == listable_late, (with_late, listable_late)
            reread = 2 + pages_for(sim.event_count, config.page_size)
            engine.dispose()
    return [
        str(days),
        f"{days * per_day:,}",
        str(malformed_n),
        str(reread),
        str(clean.requests),
        f"{clean_s:.2f}",
        f"{with_late.late}/{listable_late}",
        str(with_late.new),
        str(with_late.requests),
        "yes" if with_late.capped else "no",
        f"{late_s:.2f}",
    ]


def _timed(
    store: Store, config: SourceConfig, since: datetime, until: datetime
) -> tuple[ReconcileReport, float]:
    started = time.perf_counter()
    report = reconcile(store, replace(config), since=since, until=until)
    return report, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", default="1,10,100")
    parser.add_argument("--per-day", type=int, default=2000)
    parser.add_argument("--late", type=int, default=30)
    parser.add_argument("--malformed", type=float, default=0.027)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    configure_logging(os.environ.get("BENCH_LOG", "warning"))
    header = [
        "days", "events", "malformed", "re-read", "clean req", "clean s",
        "late found/listed", "new", "late req", "capped", "late s",
    ]  # fmt: skip
    rows = [header]
    for days in (int(d) for d in args.days.split(",")):
        rows.append(measure(days, args.per_day, args.late, args.malformed, args.database_url))
        print(f"  measured {days} days", file=sys.stderr, flush=True)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
