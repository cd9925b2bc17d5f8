"""Nothing hangs: a vendor that trickles its body, a stop that must stop.

- A DoorFlow vendor whose list answer arrives one byte at a time: ``syncd
  sync`` ends as a timeout failure (retried as one) within about ``timeout``
  x attempts; under ``syncd run`` the cut pass really ends and the source
  stores the vendor's events once it answers normally again.
- Ctrl-C during a 429 wait (the vendor asks for a minute): ``syncd sync`` and
  ``syncd backfill`` end within a second or two, without a traceback; a
  second Ctrl-C ends them at once; a backfill always says how to resume.
- PostgreSQL behind a proxy that stops forwarding (a partition): ``/readyz``
  answers 503 within 2 s however many probes wait, ``/healthz`` answers 200 at
  once, and SIGTERM ends ``syncd run`` with 0 within 10 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.config import SourceConfig
from syncd.db.engine import create_engine
from syncd.db.schema import events
from syncd.engine import make_client
from syncd.errors import RequestTimeout
from syncd.simulators import DoorFlowSimulator
from syncd.simulators.faults import Faults
from syncd.sources.http import RetryPolicy, send
from tests.integration.daemonhelpers import free_port, running_daemon, source_toml, wait_for
from tests.integration.daemonhelpers import write_config as write_daemon_config
from tests.reliability.drip import DripServer

pytestmark = pytest.mark.postgres

TOKEN = "drip-token-not-a-secret"


def doorflow_page(count: int) -> bytes:
    now = datetime.now(UTC).replace(microsecond=0)
    return orjson.dumps(
        [
            {
                "id": 900_000 + i,
                "event_code": 10,
                "created_at": (now - timedelta(minutes=i + 1)).isoformat(),
                "updated_at": (now - timedelta(minutes=i + 1)).isoformat(),
                "door_controller_id": "d1",
            }
            for i in range(count)
        ]
    )


def syncd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd.cli", *args],
        env={**os.environ, "DRIP_TOKEN": TOKEN, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stored(url: str, source: str) -> int:
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            query = sa.select(sa.func.count()).where(events.c.source == source)
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_sync_against_a_trickled_body_fails_as_a_timeout(pg_url: str, tmp_path: Path) -> None:
    source = "drip_sync"
    with DripServer(doorflow_page(3), mode="drip", every=1.0) as vendor:
        config = tmp_path / "syncd.toml"
        config.write_text(
            source_toml(
                source, "doorflow", vendor.url, token_env="DRIP_TOKEN",
                timeout=2, max_retries=2, start="2026-01-01T00:00:00Z",
            )
        )  # fmt: skip
        # The source's first-run set-up (its BI calendar) first: what is timed
        # is the pass, not the set-up `sync` waits for at its end.
        migrated = syncd("--config", str(config), "--database-url", pg_url, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        began = time.monotonic()
        done = syncd(
            "--config", str(config), "--database-url", pg_url,
            "--log-level", "info", "--log-format", "json", "sync",
        )  # fmt: skip
        took = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    # The body needs ~3 minutes at this pace; per-read timeouts would wait it out.
    # Two attempts of 2 s each, one backoff of at most ~1 s, start-up: well under 15 s.
    assert took < 15, took
    assert vendor.requests == 2
    assert f"syncd: {source} failed: timeout: " in done.stderr
    assert "did not send its whole answer within the timeout" in done.stderr
    retries = [
        orjson.loads(line)
        for line in done.stderr.splitlines()
        if line.startswith("{") and '"request_retry"' in line
    ]
    assert [r["reason"] for r in retries] == ["timeout"]
    assert stored(pg_url, source) == 0


@pytest.mark.parametrize(
    ("mode", "head_delay"),
    [("drip", 0.0), ("stall", 0.0), ("stall", 1.5), ("drip", 1.5)],
)
def test_one_request_ends_at_its_deadline(mode: str, head_delay: float) -> None:
    """Headers late, then a stall or a drip: the whole request still ends at ``timeout``."""
    config = SourceConfig(
        name="deadline", kind="doorflow", base_url="http://127.0.0.1", timeout=2.0
    )
    with DripServer(doorflow_page(3), mode=mode, every=0.5, head_delay=head_delay) as vendor:
        client = make_client(dataclasses.replace(config, base_url=vendor.url))
        policy = RetryPolicy(attempts=1)
        began = time.monotonic()
        with client, pytest.raises(RequestTimeout):
            send(client, lambda c: c.get("/api/3/events"), policy=policy, source="deadline")
        took = time.monotonic() - began
    assert 1.9 < took < 2.5, took


def test_daemon_recovers_after_a_trickled_body(pg_url: str, tmp_path: Path) -> None:
    source = "drip_run"
    port = free_port()
    with DripServer(doorflow_page(13), mode="drip", every=2.0) as vendor:
        config = write_daemon_config(
            tmp_path / "syncd.toml",
            port,
            [
                source_toml(
                    source, "doorflow", vendor.url, token_env="DRIP_TOKEN", timeout=2,
                    max_retries=2, interval=2, max_pass_duration=60,
                    start="2026-01-01T00:00:00Z",
                )
            ],
        )  # fmt: skip
        env = {"DRIP_TOKEN": TOKEN}
        with running_daemon(config, pg_url, port, env, extra_args=()) as daemon:
            wait_for(lambda: daemon.events("pass_failed"), 30, "a pass failed by timeouts")
            failed = daemon.events("pass_failed")[0]
            assert failed["error_type"] == "RequestTimeout", failed
            assert daemon.metric("syncd_retries_total", source=source, reason="timeout") >= 1
            vendor.mode = "normal"
            wait_for(lambda: stored(pg_url, source) == 13, 40, "the 13 events after recovery")
            # The dripped connections were given up, not left open.
            wait_for(lambda: vendor.open_connections <= 1, 10, "dripped connections closed")
            assert daemon.stop() == 0


def test_a_pass_cut_by_max_pass_duration_ends_at_once(pg_url: str, tmp_path: Path) -> None:
    """A request still in progress (a 30 s timeout) does not keep a cancelled pass alive."""
    source = "drip_cut"
    port = free_port()
    with DripServer(doorflow_page(5), mode="drip", every=2.0) as vendor:
        config = write_daemon_config(
            tmp_path / "syncd.toml",
            port,
            [
                source_toml(
                    source, "doorflow", vendor.url, token_env="DRIP_TOKEN", timeout=30,
                    interval=2, max_pass_duration=3, start="2026-01-01T00:00:00Z",
                )
            ],
        )  # fmt: skip
        with running_daemon(config, pg_url, port, {"DRIP_TOKEN": TOKEN}, extra_args=()) as daemon:
            wait_for(lambda: daemon.events("pass_cancelled"), 30, "the pass cancelled")
            cancelled = _epoch(daemon.events("pass_cancelled")[0]["timestamp"])
            wait_for(lambda: daemon.events("pass_finished"), 10, "the cancelled pass ended")
            ended = _epoch(daemon.events("pass_finished")[0]["timestamp"])
            assert ended - cancelled < 1.5, ended - cancelled
            vendor.mode = "normal"
            wait_for(lambda: stored(pg_url, source) == 5, 40, "the next passes store the events")
            assert daemon.stop() == 0


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- Ctrl-C during a 429 wait ----------------------------------------------------------


@contextlib.contextmanager
def rate_limited_doorflow() -> Iterator[DoorFlowSimulator]:
    """A DoorFlow that answers every list request 429, asking for a minute's wait."""
    faults = Faults(rate_limit=1.0, retry_after=60.0)
    with DoorFlowSimulator(seed=5, history=50, history_days=1, faults=faults) as sim:
        yield sim


@contextlib.contextmanager
def started(
    args: list[str], env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", *args],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert proc.stderr is not None
    stream = proc.stderr
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def interrupt(proc: subprocess.Popen[str], lines: list[str], times: int) -> tuple[int, float]:
    """SIGINT ``times`` (50 ms apart) once a retry wait began; (exit code, seconds to exit)."""
    wait_for(lambda: any('"request_retry"' in line for line in lines), 30, "a 429 wait")
    began = time.monotonic()
    for _ in range(times):  # a second one while the first is being handled
        proc.send_signal(signal.SIGINT)
        time.sleep(0.001)
    code = proc.wait(timeout=30)
    return code, time.monotonic() - began


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert "KeyboardInterrupt" not in stderr, stderr


def command(pg_url: str, tmp_path: Path, sim: DoorFlowSimulator, *args: str) -> list[str]:
    config = tmp_path / "syncd.toml"
    config.write_text(
        source_toml(
            "ctrl_c", "doorflow", sim.base_url, token_env="CTRL_C_TOKEN", max_retry_wait=60,
            start="2026-01-01T00:00:00Z",
        )
    )  # fmt: skip
    head = ["--config", str(config), "--database-url", pg_url]
    # The source's first-run set-up (its BI calendar) is done before: what is
    # timed is the stop, not the set-up the command waits for at its end.
    migrated = syncd(*head, "migrate", env={"CTRL_C_TOKEN": sim.token})
    assert migrated.returncode == 0, migrated.stderr
    return [*head, "--log-level", "info", "--log-format", "json", *args]


@pytest.mark.parametrize("times", [1, 2])
def test_ctrl_c_ends_sync_during_a_429_wait(pg_url: str, tmp_path: Path, times: int) -> None:
    with rate_limited_doorflow() as sim:
        args = command(pg_url, tmp_path, sim, "sync")
        with started(args, {"CTRL_C_TOKEN": sim.token}) as (proc, lines):
            code, took = interrupt(proc, lines, times)
    stderr = "".join(lines)
    assert took < 2.5, (took, stderr)  # the wait asked for was 60 s
    assert_no_traceback(stderr)
    # Twice: 130 when the second came while the first was handled, else the
    # first's 1 (or SIGINT itself, arriving as the interpreter exits).
    assert code in ((1,) if times == 1 else (1, 130, -signal.SIGINT)), stderr
    assert "syncd: interrupted; the next sync resumes from the last committed page" in stderr


@pytest.mark.parametrize("times", [1, 2])
def test_ctrl_c_ends_backfill_during_a_429_wait(pg_url: str, tmp_path: Path, times: int) -> None:
    with rate_limited_doorflow() as sim:
        args = command(
            pg_url, tmp_path, sim, "backfill", "--source", "ctrl_c",
            "--since", "2026-11-01T00:00:00Z", "--until", "2026-11-03T00:00:00Z",
        )  # fmt: skip
        with started(args, {"CTRL_C_TOKEN": sim.token}) as (proc, lines):
            code, took = interrupt(proc, lines, times)
    stderr = "".join(lines)
    assert took < 2.5, (took, stderr)
    assert_no_traceback(stderr)
    assert code in ((1,) if times == 1 else (1, 130, -signal.SIGINT)), stderr
    resume = (
        "to resume: syncd --config {} backfill --source ctrl_c --since 2026-11-01T00:00:00Z "
        "--until 2026-11-03T00:00:00Z --window 1d"
    ).format(tmp_path / "syncd.toml")
    assert resume in stderr, stderr


# -- a database that stops answering -------------------------------------------------


class PartitionProxy:
    """A TCP proxy to PostgreSQL that can stop forwarding: a network partition.

    Partitioned, it still accepts connections and reads what either side
    sends, and forwards nothing: to syncd the database neither answers nor
    refuses (TCP keepalives are answered by the proxy's kernel, so only
    syncd's own bounds help).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.partitioned = threading.Event()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.partitioned.is_set():
                    dst.sendall(data)
        except OSError:
            pass


def test_readyz_healthz_and_sigterm_during_a_database_partition(
    pg_url: str, tmp_path: Path
) -> None:
    url = make_url(pg_url)
    proxy = PartitionProxy(url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    try:
        with DoorFlowSimulator(seed=43, history=100, history_days=1, rate=5.0) as sim:
            config = write_daemon_config(
                tmp_path / "syncd.toml",
                port,
                [source_toml("parted", "doorflow", sim.base_url, token_env="T", interval=0.5)],
            )
            with running_daemon(config, proxied, port, {"T": sim.token}, extra_args=()) as daemon:
                wait_for(lambda: daemon.get("/readyz")[0] == 200, 20, "ready")
                wait_for(
                    lambda: daemon.metric("syncd_passes_total", source="parted", result="ok") >= 1,
                    20,
                    "a first pass",
                )
                proxy.partitioned.set()
                parted = time.monotonic()
                # More probes at once than cheroot has workers (8): none may hold one.
                with ThreadPoolExecutor(max_workers=12) as pool:
                    answers = list(
                        pool.map(lambda _i: timed_get(daemon.url + "/readyz"), range(12))
                    )
                assert all(took <= 2.0 for _status, took in answers), answers
                wait_for(lambda: timed_get(daemon.url + "/readyz")[0] == 503, 4, "readyz 503")
                assert time.monotonic() - parted < 5
                status, took = timed_get(daemon.url + "/readyz")
                assert (status, took <= 2.0) == (503, True), (status, took)
                status, took = timed_get(daemon.url + "/healthz")
                assert (status, took < 0.5) == (200, True), (status, took)
                time.sleep(1.5)  # passes now block on the database
                assert daemon.stop() == 0
                assert daemon.stopped_in is not None
                assert daemon.stopped_in < 10, daemon.stopped_in
    finally:
        proxy.close()
        _PROBES.close()  # its kept-alive connections to the stopped daemon


# One client (an SSL context costs ~0.1 s of CPU each), enough connections for all probes.
_PROBES = httpx.Client(trust_env=False, limits=httpx.Limits(max_connections=32))


def timed_get(url: str) -> tuple[int, float]:
    began = time.monotonic()
    try:
        status = _PROBES.get(url, timeout=10).status_code
    except httpx.HTTPError:
        status = 0
    return status, time.monotonic() - began
