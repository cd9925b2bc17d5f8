"""How fast can a client that only downloads pull events from each simulator?

    .venv/bin/python bench/simulators.py [--events 200000] [--page 1000]

Prints events/s for a cold pass (each event's JSON rendered on first use) and
a warm pass (served from the per-flavor byte caches), per simulator and
flavor, plus how long generating the history took. The client is httpx with
keep-alive and parses nothing but what paging needs (DoorFlow: the ``Total``
header; IntServ: ``continuation_key`` from the head of the body).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from syncd.simulators import DoorFlowSimulator, IntServSimulator, SimClock
from syncd.simulators.data import DOORFLOW_LISTABLE_CODES

LISTABLE = sorted(DOORFLOW_LISTABLE_CODES)  # any other code is a 400

_KEY = re.compile(rb'"continuation_key":(null|"([^"]*)")')
START = datetime(2024, 6, 3, 12, tzinfo=UTC)


def doorflow_pass(client: httpx.Client, flavor: str, page_size: int) -> int:
    params: dict[str, str | int | list[int]] = {
        "since": "2000-01-01T00:00:00Z",
        "since_utc": "2000-01-01T00:00:00Z",
        "event_codes": ",".join(map(str, LISTABLE)),
        "event_code": LISTABLE,
        "sort": "ASC",
        "n": page_size,
        "per_page": page_size,
    }
    events = 0
    page = 1
    while True:
        response = client.get("/api/3/events", params={**params, "page": page})
        response.raise_for_status()
        if flavor == "reference":
            total = int(response.headers["Total"])
        else:
            head = response.content[-200:]
            total = int(re.findall(rb'"total_count":(\d+)', head)[0])
        got = min(page_size, total - (page - 1) * page_size)
        events += max(0, got)
        if page * page_size >= total:
            return events
        page += 1


def intserv_pass(client: httpx.Client, page_size: int) -> int:
    body: dict[str, object] = {"from_date": "2000-01-01T00:00:00Z", "limit": page_size}
    events = 0
    while True:
        response = client.post("/v1/events/list", json=body)
        response.raise_for_status()
        content = response.content
        events += content.count(b'"event_time"')
        match = _KEY.search(content, 0, 400)
        if match is None or match.group(1) == b"null":
            return events
        body = {"continuation_key": match.group(2).decode(), "limit": page_size}


def timed(label: str, run: Callable[[], int]) -> None:
    start = time.perf_counter()
    events = run()
    elapsed = time.perf_counter() - start
    print(
        f"  {label:<28} {events:>9,} events  {elapsed:6.2f} s  {events / elapsed:>12,.0f} events/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--page", type=int, default=1000)
    args = parser.parse_args()
    n, page = args.events, args.page

    start = time.perf_counter()
    doorflow = DoorFlowSimulator(seed=1, history=n, clock=SimClock(START))
    print(f"DoorFlow: generated {n:,} events in {time.perf_counter() - start:.2f} s")
    with (
        doorflow,
        httpx.Client(
            base_url=doorflow.base_url, headers={"Authorization": f"Bearer {doorflow.token}"}
        ) as client,
    ):
        for flavor, size in (("reference", page), ("guide", min(page, 500))):
            doorflow.flavor = flavor  # type: ignore[assignment]
            timed(f"{flavor} n={size} cold", lambda f=flavor, s=size: doorflow_pass(client, f, s))
            timed(f"{flavor} n={size} warm", lambda f=flavor, s=size: doorflow_pass(client, f, s))

    start = time.perf_counter()
    intserv = IntServSimulator(seed=1, history=n, clock=SimClock(START))
    print(f"IntServ: generated {n:,} events in {time.perf_counter() - start:.2f} s")
    with (
        intserv,
        httpx.Client(
            base_url=intserv.base_url, headers={"Authorization": f"Bearer {intserv.api_key}"}
        ) as client,
    ):
        timed(f"limit={page} cold", lambda: intserv_pass(client, page))
        timed(f"limit={page} warm", lambda: intserv_pass(client, page))

    start = time.perf_counter()
    DoorFlowSimulator(seed=2, history=0, clock=SimClock(START)).generate(400_000)
    print(f"DoorFlow generate(400,000): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
