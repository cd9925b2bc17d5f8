"""Fault injection: 429 (header or body wait), 500/503, dropped connections,
latency; seeded per-request probabilities, settable at run time."""

from __future__ import annotations

import socket
import struct
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from syncd.simulators import DoorFlowSimulator, Faults, IntServSimulator, SimClock
from tests.simulators.simhelpers import client


def test_rate_limit_wait_in_header_or_body(clock: SimClock) -> None:
    with (
        DoorFlowSimulator(seed=1, history=100, clock=clock) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        event_id = next(iter(sim.truth()))
        sim.faults = Faults(rate_limit=1.0, retry_after_in="header", retry_after=0.05)
        for path in ("/api/3/events", f"/api/3/events/{event_id}"):
            r = http.get(path)
            assert r.status_code == 429
            assert r.headers["Retry-After"] == "0.05"
            assert r.json()["error"] == "rate_limited"
            assert "retry_in" not in r.json()
        sim.faults = Faults(rate_limit=1.0, retry_after_in="body", retry_after=2)
        r = http.get("/api/3/events")
        assert r.status_code == 429
        assert "Retry-After" not in r.headers
        assert r.json()["retry_in"] == 2
        sim.faults = Faults(rate_limit=1.0, retry_after_in="both", retry_after=1.5)
        r = http.get("/api/3/events")
        assert r.headers["Retry-After"] == "1.5"
        assert r.json()["retry_in"] == 1.5
        sim.faults = Faults()
        assert http.get("/api/3/events").status_code == 200
        assert sim.stats["rate_limited"] == 4


def test_intserv_rate_limit_in_body(clock: SimClock) -> None:
    faults = Faults(rate_limit=1.0, retry_after_in="body")
    with (
        IntServSimulator(seed=1, history=100, clock=clock, faults=faults) as sim,
        client(sim.base_url, sim.api_key) as http,
    ):
        r = http.post("/v1/events/list", json={})
        assert r.status_code == 429
        assert r.json() == {
            "error": "rate_limited",
            "message": "Too many requests",
            "retry_in": 0.05,
        }


def test_server_errors_are_500_or_503(clock: SimClock) -> None:
    faults = Faults(server_errors=1.0, seed=4)
    with (
        DoorFlowSimulator(seed=1, history=100, clock=clock, faults=faults) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        responses = [http.get("/api/3/events") for _ in range(30)]
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) == {500, 503}
        five_hundred = next(r for r in responses if r.status_code == 500)
        assert five_hundred.json()["error"] == "internal_server_error"
        unavailable = next(r for r in responses if r.status_code == 503)
        assert unavailable.headers["Content-Type"] == "text/html"  # a proxy's page, not JSON
        assert sim.stats["server_errors"] == 30


def test_dropped_connections_get_no_answer(clock: SimClock) -> None:
    with (
        IntServSimulator(seed=1, history=100, clock=clock, faults=Faults(drop=1.0)) as sim,
        client(sim.base_url, sim.api_key) as http,
    ):
        for _ in range(3):
            with pytest.raises(httpx.RemoteProtocolError):
                http.post("/v1/events/list", json={})
        sim.faults = Faults()
        assert http.post("/v1/events/list", json={}).status_code == 200
        assert sim.stats["dropped"] == 3


def test_latency(clock: SimClock) -> None:
    with (
        DoorFlowSimulator(seed=1, history=10, clock=clock, faults=Faults(latency=0.2)) as sim,
        client(sim.base_url, sim.token) as http,
    ):
        start = time.monotonic()
        assert http.get("/api/3/events").status_code == 200
        assert time.monotonic() - start >= 0.2


def test_fault_rates_are_roughly_as_set_and_seeded(clock: SimClock) -> None:
    faults = Faults(rate_limit=0.2, server_errors=0.1, drop=0.1, seed=42)

    def run() -> tuple[list[str], dict[str, int]]:
        outcomes = []
        with (
            DoorFlowSimulator(
                seed=1, history=200, clock=SimClock(clock.now()), faults=faults
            ) as sim,
            client(sim.base_url, sim.token) as http,
        ):
            for _ in range(400):
                try:
                    outcomes.append(str(http.get("/api/3/events", params={"n": 5}).status_code))
                except httpx.RemoteProtocolError:
                    outcomes.append("drop")
            return outcomes, sim.stats

    outcomes, stats = run()
    counts = Counter(outcomes)
    assert 50 <= counts["429"] <= 110
    assert 20 <= counts["500"] + counts["503"] <= 60
    assert 20 <= counts["drop"] <= 60
    assert counts["200"] == 400 - counts["429"] - counts["500"] - counts["503"] - counts["drop"]
    assert stats["rate_limited"] == counts["429"]
    assert stats["server_errors"] == counts["500"] + counts["503"]
    assert stats["dropped"] == counts["drop"]
    assert stats["requests"] == 400
    assert stats["events_served"] == 5 * counts["200"]
    again, _ = run()
    assert again == outcomes  # same seed, same faults in the same order


def test_faults_validate() -> None:
    with pytest.raises(ValueError, match="probability"):
        Faults(rate_limit=1.5)
    with pytest.raises(ValueError, match="exceed"):
        Faults(rate_limit=0.5, drop=0.3, server_errors=0.3)
    with pytest.raises(ValueError, match="retry_after_in"):
        Faults(retry_after_in="nowhere")  # type: ignore[arg-type]


def test_stop_closes_idle_keep_alive_connections(clock: SimClock) -> None:
    sim = DoorFlowSimulator(seed=1, history=10, clock=clock).start()
    with client(sim.base_url, sim.token) as http:
        assert http.get("/api/3/events").status_code == 200
        start = time.monotonic()
        sim.stop()
        assert time.monotonic() - start < 2
        assert not sim.running
        with pytest.raises(httpx.TransportError):
            http.get("/api/3/events")


def test_concurrent_clients_get_consistent_pages(clock: SimClock) -> None:
    with DoorFlowSimulator(seed=1, history=5000, clock=clock) as sim:

        def pull(_: int) -> list[bytes]:
            with client(sim.base_url, sim.token) as http:
                return [
                    http.get(
                        "/api/3/events",
                        params={"sort": "ASC", "n": 1000, "page": page, "event_codes": "10,30"},
                    ).content
                    for page in (1, 2, 3)
                ]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(pull, range(8)))
        assert all(r == results[0] for r in results)
        assert sim.stats["requests"] == 24


def test_a_client_that_resets_its_connection_prints_no_traceback(
    clock: SimClock, capfd: pytest.CaptureFixture[str]
) -> None:
    """A syncd killed mid-request resets its connections: the simulator's business is
    to go on serving, not to print a traceback per connection."""
    with DoorFlowSimulator(seed=1, history=10, clock=clock) as sim:
        host, port = sim.base_url.removeprefix("http://").split(":")
        for _ in range(3):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"GET /api/3/events HTTP/1.1\r\nHost: x\r\n")  # headers unfinished
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # an RST, as from a killed process
        time.sleep(0.3)
        with client(sim.base_url, sim.token) as http:
            assert http.get("/api/3/events").status_code == 200
    assert "Traceback" not in capfd.readouterr().err
