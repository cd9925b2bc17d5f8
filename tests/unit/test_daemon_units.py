"""Scheduling arithmetic and the metrics registry (pure, no network)."""

from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import Secret, SourceConfig
from syncd.db.store import SourceState, Store, WriteResult
from syncd.engine import PassResult, run_pass
from syncd.metrics import UNKNOWN_SOURCE, CountingTransport, Metrics
from syncd.scheduler import (
    FIRST_PASS_SPREAD,
    PassScheduler,
    backoff_delay,
    first_pass_offsets,
    next_pass_delay,
    pass_due,
)
from syncd.sources.http import RETRY_REASONS
from syncd.web import App, Routes, make_server

FIXED_SERIES = 40  # histogram buckets per kind and the like, independent of sources
SERIES_PER_SOURCE = 18  # 16, syncd_webhook_dropped_total (webhook sources), syncd_source_paused


def test_backoff_grows_then_caps_at_five_intervals_and_300_s() -> None:
    assert [backoff_delay(n, 10) for n in range(6)] == [10, 10, 20, 40, 50, 50]
    assert [backoff_delay(n, 60) for n in (1, 2, 3, 4, 5, 50)] == [60, 120, 240, 300, 300, 300]
    assert backoff_delay(1, 600) == 300  # never later than 300 s
    assert backoff_delay(10_000, 1) == 5


def test_a_pass_that_ended_on_a_429_is_not_followed_before_its_retry_after() -> None:
    assert next_pass_delay(1, 1.0, None, 60.0) == 1.0
    assert next_pass_delay(1, 1.0, 2.0, 60.0) == 2.0  # was 1 s: before the vendor's wait
    assert next_pass_delay(3, 1.0, 2.0, 60.0) == 4.0  # the backoff is longer: kept
    assert next_pass_delay(1, 10.0, 3600.0, 60.0) == 60.0  # capped like a wait in a pass


def test_a_pass_another_process_began_this_round_is_not_due() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)

    def state(ago: float | None, failures: int = 0) -> SourceState:
        began = None if ago is None else now - timedelta(seconds=ago)
        return SourceState("hq", {}, consecutive_failures=failures, pass_started_at=began)

    assert pass_due(state(None), now, None, 60)  # never passed
    assert not pass_due(state(10), now, None, 60)  # another process, this round
    assert not pass_due(state(47), now, None, 60)  # under 80 % of the interval
    assert pass_due(state(48), now, None, 60)  # the next round (fire times drift <= 10 %)
    # Our own pass: our schedule decides, even when the pool ran the last one late.
    assert pass_due(state(10), now, now - timedelta(seconds=10), 60)
    assert not pass_due(state(10), now, now - timedelta(seconds=70), 60)  # another since
    # A failing source: replicas wait out its backoff (3 failures: 4 intervals).
    assert not pass_due(state(180, failures=3), now, None, 60)
    assert pass_due(state(200, failures=3), now, None, 60)


def test_a_due_check_that_says_no_skips_the_pass_and_sync_never_asks(sqlite_engine: Any) -> None:
    """The daemon's re-check under the lock; ``syncd sync`` (no check) always passes."""
    store = Store(sqlite_engine)
    calls: list[int] = []

    def listing(_request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, json=[], headers={"Total": "0"})

    config = SourceConfig(
        name="hq", kind="doorflow", base_url="http://doorflow.test", token=Secret("t0ken"),
    )  # fmt: skip
    transport = httpx.MockTransport(listing)
    first = run_pass(store, config, transport=transport)
    assert first.ok
    assert not first.skipped
    began = store.load_state("hq").pass_started_at
    assert began is not None
    seen: list[SourceState] = []

    def not_due(state: SourceState, _now: datetime) -> bool:
        seen.append(state)
        return False

    skipped = run_pass(store, config, transport=transport, due=not_due)
    assert skipped.skipped
    assert skipped.ok
    assert seen[0].pass_started_at == began
    assert store.load_state("hq").pass_started_at == began  # a skip records no pass
    asked = len(calls)
    again = run_pass(store, config, transport=transport)  # a sync right after: runs
    assert again.ok
    assert not again.skipped
    assert len(calls) > asked


def test_a_replica_that_skips_mirrors_the_other_ones_outcome(sqlite_engine: Any) -> None:
    """Gauges on the replica that skips follow what the passing one recorded."""
    store = Store(sqlite_engine)
    now = datetime.now(UTC)
    store.record_success("hq", now - timedelta(seconds=30))
    for _ in range(2):
        store.record_failure("hq", "HTTP 503", now - timedelta(seconds=20))
    store.record_pass_started("hq", now - timedelta(seconds=5))  # another process, just now
    config = SourceConfig(
        name="hq", kind="doorflow", base_url="http://doorflow.test", token=Secret("t0ken"),
        interval=60,
    )  # fmt: skip
    metrics = Metrics()
    scheduler = PassScheduler(
        store,
        [config],
        workers=1,
        metrics=metrics,
        transport=lambda _c: httpx.MockTransport(lambda _r: httpx.Response(500)),
    )
    slot = scheduler._slots["hq"]
    result = scheduler._pass(slot)
    scheduler._finish(slot, result)
    assert result.skipped
    got = {(n, tuple(sorted(labels.items()))): v for n, labels, v in _series(_exposition(metrics))}
    assert got[("syncd_consecutive_failures", (("source", "hq"),))] == 2
    success = got[("syncd_last_success_timestamp_seconds", (("source", "hq"),))]
    assert abs(success - (now - timedelta(seconds=30)).timestamp()) < 1
    assert got[("syncd_passes_total", (("result", "skipped"), ("source", "hq")))] == 1


def test_a_pass_failed_on_a_429_reports_the_wait_asked_for(sqlite_engine: Any) -> None:
    def limited(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "rate_limited"})

    config = SourceConfig(
        name="hq", kind="doorflow", base_url="http://doorflow.test", token=Secret("t0ken"),
        max_retries=1,
    )  # fmt: skip
    result = run_pass(Store(sqlite_engine), config, transport=httpx.MockTransport(limited))
    assert not result.ok
    assert result.retry_after == 7.0


def test_first_passes_are_spread_over_the_first_interval_and_soon() -> None:
    rng = random.Random(4)
    offsets = first_pass_offsets([30.0] * 1000, rng)
    assert all(0 <= o <= 30 for o in offsets)
    assert max(offsets) - min(offsets) > 25  # spread, not all at once
    assert all(o <= FIRST_PASS_SPREAD for o in first_pass_offsets([3600.0] * 100, rng))


def _exposition(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def _series(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _count(text: str) -> int:
    """Series in an exposition: every sample line (comments are # HELP / # TYPE)."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def test_every_series_of_a_source_exists_at_zero_from_start() -> None:
    metrics = Metrics()
    metrics.add_source("hq", "doorflow", webhooks=True)
    series = {
        (name, tuple(sorted(labels.items()))): v
        for name, labels, v in _series(_exposition(metrics))
    }
    for result in ("inserted", "updated"):
        assert series[("syncd_events_written_total", (("result", result), ("source", "hq")))] == 0
    for result in ("ok", "failed", "skipped"):
        assert series[("syncd_passes_total", (("result", result), ("source", "hq")))] == 0
    for _, reason in RETRY_REASONS:
        assert series[("syncd_retries_total", (("reason", reason), ("source", "hq")))] == 0
    for gauge in (
        "syncd_last_success_timestamp_seconds",
        "syncd_newest_event_timestamp_seconds",
        "syncd_consecutive_failures",
    ):
        assert series[(gauge, (("source", "hq"),))] == 0
    assert series[("syncd_events_rejected_total", (("source", "hq"),))] == 0
    assert series[("syncd_vendor_requests_total", (("source", "hq"), ("status", "200")))] == 0
    assert series[("syncd_webhook_requests_total", (("source", "hq"), ("status", "200")))] == 0
    assert series[("syncd_webhook_dropped_total", (("source", "hq"),))] == 0
    assert series[("syncd_pass_duration_seconds_count", (("kind", "doorflow"),))] == 0
    assert not any(name.endswith("_created") for name, _ in series)


def _busy(metrics: Metrics, names: list[str]) -> None:
    now = datetime.now(UTC)
    for name in names:
        written = WriteResult(inserted=3, updated=1, unchanged=2, rejected=1)
        metrics.pass_finished(PassResult(name, ok=True, written=written, kind="doorflow"), 0, now)
        metrics.pass_finished(PassResult(name, ok=False, kind="doorflow"), 1, now)
        metrics.pass_finished(PassResult(name, ok=True, skipped=True, kind="doorflow"), 1, now)
        for status in ("200", "429", "503", "error"):
            metrics.vendor_answered(name, status)
        metrics.retried(name, "rate_limited")
        metrics.webhook_answered(name, 200)
        metrics.webhook_answered(name, 401)
        metrics.observe_newest(name, now)
    metrics.webhook_answered(UNKNOWN_SOURCE, 404)


def test_the_series_count_stays_bounded_for_a_thousand_busy_sources() -> None:
    metrics = Metrics()
    names = [f"site-{i:04d}" for i in range(1000)]
    for i, name in enumerate(names):
        metrics.add_source(name, "doorflow" if i % 2 else "intserv", webhooks=i % 2 == 1)
    baseline = _count(_exposition(metrics))
    assert baseline <= SERIES_PER_SOURCE * len(names) + FIXED_SERIES
    _busy(metrics, names)  # a few more status codes each: still bounded
    assert _count(_exposition(metrics)) <= (SERIES_PER_SOURCE + 4) * len(names) + FIXED_SERIES


def test_counters_follow_pass_results() -> None:
    metrics = Metrics()
    metrics.add_source("hq", "doorflow")
    _busy(metrics, ["hq"])
    got = {(n, tuple(sorted(labels.items()))): v for n, labels, v in _series(_exposition(metrics))}
    assert got[("syncd_events_written_total", (("result", "inserted"), ("source", "hq")))] == 3
    assert got[("syncd_events_rejected_total", (("source", "hq"),))] == 1
    assert got[("syncd_passes_total", (("result", "failed"), ("source", "hq")))] == 1
    assert got[("syncd_consecutive_failures", (("source", "hq"),))] == 1
    assert got[("syncd_pass_duration_seconds_count", (("kind", "doorflow"),))] == 2


def test_the_transport_counts_answers_and_failures() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(429)

    counting = CountingTransport(httpx.MockTransport(handler), seen.append)
    with httpx.Client(transport=counting, base_url="http://vendor.test") as client:
        assert client.get("/x").status_code == 429
        with pytest.raises(httpx.ConnectError):
            client.get("/down")
    assert seen == ["429", "error"]


def test_promtool_accepts_the_exposition(tmp_path: object) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: scripts/test installs the prometheus package")
        pytest.skip("promtool not installed (Debian package prometheus; scripts/test installs it)")
    metrics = Metrics()
    for i in range(20):
        metrics.add_source(f"s{i}", "intserv" if i % 2 else "doorflow", webhooks=True)
    _busy(metrics, [f"s{i}" for i in range(20)])
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=_exposition(metrics).encode(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@contextmanager
def _serving() -> Iterator[int]:
    """The daemon's WSGI app on a real cheroot server; yields its port."""
    routes = Routes(
        healthy=lambda: True,
        not_ready=lambda: None,
        webhook_secret=lambda source: b"secret" if source == "hq" else None,
        is_source=lambda source: source == "hq",
        on_webhook=lambda source, answer: None,
        metrics=Metrics(),
    )
    server = make_server(App(routes), "127.0.0.1", 0, threads=1)
    server.prepare()
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    try:
        yield server.bind_addr[1]
    finally:
        server.stop()
        serving.join(timeout=5)


def test_head_answers_carry_no_body_so_a_kept_alive_connection_stays_in_step() -> None:
    with _serving() as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        answers = []
        for method, path in [
            ("HEAD", "/healthz"),
            ("HEAD", "/metrics"),
            ("HEAD", "/webhooks/doorflow/hq"),
            ("GET", "/healthz"),  # on the same connection: in step only if no body came before
        ]:
            conn.request(method, path)
            response = conn.getresponse()
            answers.append((method, path, response.status, response.read()))
        conn.close()
    assert answers == [
        ("HEAD", "/healthz", 200, b""),
        ("HEAD", "/metrics", 200, b""),
        ("HEAD", "/webhooks/doorflow/hq", 405, b""),
        ("GET", "/healthz", 200, b'{"status":"ok"}'),
    ]


@pytest.mark.parametrize(
    "first",
    [
        b"GET /webhooks/doorflow/hq HTTP/1.1",  # 405, body never read by the route
        b"POST /webhooks/doorflow/unknown HTTP/1.1",  # 404, likewise
        b"HEAD /healthz HTTP/1.1",
        b"POST /webhooks/doorflow/hq HTTP/1.1",  # 401, body read
    ],
)
def test_an_unread_chunked_body_is_not_read_as_the_next_request(first: bytes) -> None:
    chunked = first + b"\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    then = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with _serving() as port, socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(chunked + then)  # pipelined: the second request follows the body at once
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert len(statuses) == 2, received
    assert statuses[1] == b"200", received


@pytest.mark.parametrize(
    "request_line",
    [
        b"POST /webhooks/doorflow/hq HTTP/9.9\r\nHost: x\r\n\r\n",  # cheroot: 505
        b"POST /webhooks/doorflow/hq HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",  # 501
    ],
)
def test_requests_cheroot_cannot_parse_get_a_4xx_never_a_5xx(request_line: bytes) -> None:
    with _serving() as port, socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request_line)
        sock.shutdown(socket.SHUT_WR)
        received = sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 400 Bad Request"), received


def test_a_pass_cut_by_max_pass_duration_is_followed_on_schedule(sqlite_engine: Any) -> None:
    """Counted as failed, but no backoff: the next pass comes at the interval."""
    config = SourceConfig(
        name="hq", kind="doorflow", base_url="http://doorflow.test", token=Secret("t0ken"),
        interval=60,
    )  # fmt: skip
    scheduler = PassScheduler(Store(sqlite_engine), [config], workers=1, metrics=Metrics())
    backed_off: list[str] = []
    scheduler._back_off = lambda slot, _after: backed_off.append(slot.config.name)  # type: ignore[method-assign]
    slot = scheduler._slots["hq"]
    slot.cancelled = True
    scheduler._finish(slot, PassResult("hq", ok=True, kind="doorflow", stopped=True))
    assert slot.failures == 1
    assert backed_off == []
    slot.cancelled = False
    scheduler._finish(slot, PassResult("hq", ok=False, error="HTTP 503", kind="doorflow"))
    assert backed_off == ["hq"]  # a real failure still backs off
