"""Normalization alone: the CPU one 1000-event page costs each vendor's ``normalize_page``.

    python bench/normalize.py [--runs 40]

One page of each simulator (the same seed and knobs as ``bench/compare.py``)
is fetched once on loopback and decoded; then each vendor's
``normalize_page`` runs ``--runs`` times on it, screened as a real pass runs
it, and the median **thread CPU** per page is printed (CPU, not wall time,
so a busy machine moves it less). It also checks that every record of the
page takes msgspec's fast path with the same result as the field-by-field
checks (``from_api_checked``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from syncd.simulators import DoorFlowSimulator, IntServSimulator, SimClock
from syncd.sources import doorflow, intserv

START = datetime(2026, 1, 1, tzinfo=UTC)


def pages() -> dict[str, list[Any]]:
    clock = SimClock(start=START + timedelta(days=30))
    door = DoorFlowSimulator(
        seed=1, history=5000, history_days=29, clock=clock, name_update_share=0.0
    )
    door.start()
    try:
        codes = ",".join(map(str, doorflow.LISTABLE_EVENT_CODES))
        params = {"since": START.isoformat(), "sort": "ASC", "n": 1000, "page": 1,
                  "event_codes": codes}  # fmt: skip
        headers = {"Authorization": f"Bearer {door.token}"}
        body = httpx.get(f"{door.base_url}/api/3/events", params=params, headers=headers)
        doorflow_items = orjson.loads(body.content)
    finally:
        door.stop()
    serv = IntServSimulator(seed=1, history=5000, history_days=29, clock=clock)
    serv.start()
    try:
        headers = {"Authorization": f"Bearer {serv.api_key}"}
        body = httpx.post(
            f"{serv.base_url}/v1/events/list",
            json={"from_date": START.isoformat(), "limit": 1000},
            headers=headers,
        )
        intserv_items = orjson.loads(body.content)["events"]
    finally:
        serv.stop()
    return {"doorflow": doorflow_items, "intserv": intserv_items}


def cpu_ms(work: Callable[[], object], runs: int) -> float:
    timings = []
    for _ in range(runs):
        started = time.thread_time()
        work()
        timings.append(time.thread_time() - started)
    return statistics.median(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    modules = {"doorflow": doorflow, "intserv": intserv}
    print(f"{'vendor':9} {'events':>6} {'CPU ms per page':>16} {'us per event':>13}")
    for kind, items in pages().items():
        module = modules[kind]
        for raw in items:
            assert module.from_api(raw, {}) == module.from_api_checked(raw, {})
        ms = cpu_ms(lambda: module.normalize_page(items, {}, screened=True), args.runs)  # noqa: B023
        print(f"{kind:9} {len(items):>6} {ms:>16.2f} {ms * 1000 / len(items):>13.2f}")
    print(f"(median of {args.runs} runs, thread CPU time)")


if __name__ == "__main__":
    main()
