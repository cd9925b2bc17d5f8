"""Faults outside syncd: the database restarted, a vendor down, the database read-only.

Each test ends the same way: the ``events`` table compared with the
simulators' ground truth (nothing missing, nothing duplicated, nothing stale,
every malformed record in ``rejected_events``), and every byte syncd printed
scanned for the simulators' credentials.

- PostgreSQL stopped with ``pg_ctl -m immediate`` under a running ``syncd run``,
  twice: ``/readyz`` says so, the process lives on, data catches up after.
  The cluster is a throwaway one of this module's own (the shared server is
  never stopped).
- DoorFlow down behind a counting proxy: connections refused, then 503s, then
  429s with a long ``Retry-After``; requests per phase bounded by what syncd's
  own retry and backoff settings allow, ``Retry-After`` honoured, IntServ
  syncing throughout, recovery without help.
- The role syncd connects as loses INSERT/UPDATE on ``events``: ``syncd sync``
  fails with one line, commits nothing; with the grant back it completes.

Sizes follow :func:`tests.reliability.scale.scaled` (``SYNCD_RELIABILITY=full``).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.config import load_settings
from syncd.db import migrate
from syncd.db.engine import create_engine
from syncd.db.schema import events, rejected_events, sync_state
from syncd.db.store import Store
from syncd.scheduler import next_pass_delay
from syncd.simulators import DoorFlowSimulator, IntServSimulator
from syncd.sources.http import RetryPolicy
from tests.integration import test_intserv_sync as intserv_checks
from tests.integration.daemonhelpers import (
    DaemonProcess,
    free_port,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)
from tests.integration.test_doorflow_sync import assert_matches_truth as doorflow_matches_truth
from tests.reliability.scale import scaled
from tests.reliability.secretscan import assert_no_secrets

pytestmark = pytest.mark.postgres

DOORFLOW = "hq"
INTSERV = intserv_checks.SOURCE
# Where Debian (any version, newest first) and source builds put initdb and pg_ctl.
PG_BIN_DIRS = (
    *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True),
    "/usr/local/pgsql/bin",
    "/usr/local/bin",
)


# -- the simulators and syncd's configuration -------------------------------------------


@dataclass
class Vendors:
    """Both simulators (events arriving in real time) and the environment naming their keys."""

    doorflow: DoorFlowSimulator
    intserv: IntServSimulator

    @property
    def env(self) -> dict[str, str]:
        return {"DF_TOKEN": self.doorflow.token, "IS_KEY": self.intserv.api_key}

    @property
    def secrets(self) -> list[str]:
        return [self.doorflow.token, self.intserv.api_key]

    def quiet(self) -> float:
        """No more arrivals; the moment they stopped (wall clock, like the logs)."""
        self.doorflow.rate = self.intserv.rate = 0.0
        time.sleep(0.2)  # a tick in progress finishes
        return time.time()


@contextlib.contextmanager
def vendors(seed: int, rate: float) -> Iterator[Vendors]:
    doorflow = DoorFlowSimulator(
        seed=seed, history=400, history_days=1, rate=rate, malformed_share=0.01
    )
    intserv = IntServSimulator(
        seed=seed + 1, history=400, history_days=1, rate=rate, malformed_share=0.02
    )
    with doorflow, intserv:
        yield Vendors(doorflow, intserv)


def config_file(path: Path, port: int, doorflow_url: str, intserv_url: str) -> Path:
    sources = [
        source_toml(DOORFLOW, "doorflow", doorflow_url, token_env="DF_TOKEN", interval=1),
        source_toml(INTSERV, "intserv", intserv_url, api_key_env="IS_KEY", interval=1),
    ]
    return write_config(path, port, sources, workers=2)


def assert_matches_truth(engine: sa.Engine, world: Vendors) -> int:
    """Both sources against their simulator; the number of events compared."""
    doorflow_matches_truth(Store(engine), DOORFLOW, world.doorflow)
    intserv_checks.assert_matches_truth(engine, world.intserv)
    return len(world.doorflow.truth(listable=True)) + len(world.intserv.truth())


# -- what the daemon's logs say ---------------------------------------------------------


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def passes_finished(daemon: DaemonProcess, source: str, after: float) -> int:
    """Passes of ``source`` that ended well after ``after`` (wall clock)."""
    return sum(
        1
        for entry in daemon.events("pass_finished")
        if entry.get("source") == source and _epoch(entry["timestamp"]) > after
    )


def pass_began_and_ended_after(daemon: DaemonProcess, source: str, moment: float) -> bool:
    """A whole pass of ``source`` ran after ``moment``: it saw everything listed by then."""
    began = [
        _epoch(e["timestamp"])
        for e in daemon.events("pass_started")
        if e.get("source") == source and _epoch(e["timestamp"]) > moment
    ]
    return bool(began) and passes_finished(daemon, source, min(began)) > 0


def catch_up(daemon: DaemonProcess, world: Vendors, timeout: float) -> None:
    """Arrivals stop; wait for a full pass of each source after that."""
    quiet = world.quiet()
    for source in (DOORFLOW, INTSERV):
        wait_for(
            lambda s=source: pass_began_and_ended_after(daemon, s, quiet),  # type: ignore[misc]
            timeout,
            f"a whole pass of {source} after the vendors went quiet",
        )


def row_count(engine: sa.Engine, source: str) -> int:
    query = sa.select(sa.func.count()).where(events.c.source == source)
    try:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
    except sa.exc.OperationalError:
        return -1


# -- 1. PostgreSQL restarted mid-run ----------------------------------------------------


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    dirs = ([str(Path(found).parent)] if found else []) + list(PG_BIN_DIRS)
    for directory in dirs:
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    return None


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster of this module's own, on a free loopback port."""

    bin: Path
    root: Path
    port: int
    run_as: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        command = [*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def initdb(self) -> None:
        command = [*self.run_as, str(self.bin / "initdb"), "-D", str(self.root / "data")]
        command += ["-U", "postgres", "-A", "trust", "--no-sync"]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c synchronous_commit=off"
        self.pg_ctl("-l", str(self.root / "log"), "-w", "-o", options, "start")

    def crash(self) -> None:
        """``pg_ctl -m immediate stop``: no checkpoint, every connection cut."""
        self.pg_ctl("-m", "immediate", "-w", "stop")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    binaries = _pg_bin()
    if binaries is None:
        reason = "initdb/pg_ctl not found: cannot start a throwaway PostgreSQL to restart"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run this test: install postgresql)")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="syncd-rel-pg."))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(root, user="postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    made = Cluster(binaries, root, free_port(), run_as)
    try:
        made.initdb()
        made.start()
        yield made
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            made.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def readyz(daemon: DaemonProcess) -> int:
    try:
        return daemon.get("/readyz")[0]
    except (OSError, httpx.HTTPError):
        return 0


def survive_restart(
    daemon: DaemonProcess, cluster: Cluster, engine: sa.Engine, down: float
) -> None:
    """One crash of the database under the daemon, and its recovery."""
    before = row_count(engine, DOORFLOW), row_count(engine, INTSERV)
    engine.dispose()
    cluster.crash()
    wait_for(lambda: readyz(daemon) == 503, 10, "/readyz to turn 503 with the database down")
    deadline = time.monotonic() + down
    while time.monotonic() < deadline:
        assert daemon.proc.poll() is None, "syncd run exited while the database was down"
        assert daemon.get("/healthz")[0] == 200, "/healthz stopped answering 200"
        assert readyz(daemon) == 503, "/readyz answered ready with the database down"
        time.sleep(0.25)
    cluster.start()
    wait_for(lambda: readyz(daemon) == 200, 15, "/readyz back to 200 after the restart")
    for source, count in zip((DOORFLOW, INTSERV), before, strict=True):
        wait_for(
            lambda s=source, c=count: row_count(engine, s) > c,  # type: ignore[misc]
            30,
            f"new {source} events stored after the restart",
        )


def test_postgresql_restarted_twice_mid_run(cluster: Cluster, tmp_path: Path) -> None:
    restarts, down = 2, float(scaled(15, 3))
    port = free_port()
    engine = create_engine(cluster.url, poolclass=sa.pool.NullPool)
    started = time.monotonic()
    with vendors(seed=31, rate=5.0) as world:
        config = config_file(
            tmp_path / "syncd.toml", port, world.doorflow.base_url, world.intserv.base_url
        )
        with running_daemon(config, cluster.url, port, world.env) as daemon:
            wait_for(lambda: readyz(daemon) == 200, 30, "/readyz 200 at start")
            for source in (DOORFLOW, INTSERV):
                wait_for(
                    lambda s=source: passes_finished(daemon, s, 0) > 0,  # type: ignore[misc]
                    30,
                    f"a first pass of {source}",
                )
            for _ in range(restarts):
                survive_restart(daemon, cluster, engine, down)
            catch_up(daemon, world, timeout=30)
            failed = len(daemon.events("pass_failed"))
            assert daemon.stop() == 0
        compared = assert_matches_truth(engine, world)
        assert_no_secrets(daemon.lines, world.secrets)
    engine.dispose()
    print(
        f"\nfaults/pg-restart: {restarts} immediate restarts survived, {down:.0f} s down each, "
        f"{failed} passes failed meanwhile, /readyz 503 while down, "
        f"{compared} events compared (0 missing, 0 duplicated, 0 stale) "
        f"in {time.monotonic() - started:.0f} s"
    )


# -- 2. a vendor down -------------------------------------------------------------------


@dataclass
class Hit:
    at: float  # time.monotonic()
    mode: str
    status: int


class CountingProxy:
    """DoorFlow behind a proxy that can refuse, fail or rate-limit, counting every request.

    ``mode``: ``up`` (forward to the simulator), ``refused`` (nothing listens on
    the port), ``503`` (an HTML 503, like a load balancer's), ``429`` (with
    ``Retry-After: retry_after``).
    """

    def __init__(self, upstream: str, retry_after: int) -> None:
        self.upstream = httpx.Client(base_url=upstream, trust_env=False, timeout=30)
        self.retry_after = retry_after
        self.port = free_port()
        self.mode = "up"
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        """(status, headers, body) for one request, recorded."""
        mode = self.mode
        if mode == "503":
            reply: Any = (503, [("Content-Type", "text/html")], b"<html>503 Unavailable</html>")
        elif mode == "429":
            limited = [("Content-Type", "application/json"), ("Retry-After", str(self.retry_after))]
            reply = (429, limited, b'{"error":"rate_limited"}')
        else:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}
            response = self.upstream.request(method, path, headers=forwarded, content=body)
            kept = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_HEADERS]
            reply = (response.status_code, kept, response.content)
        with self._lock:
            self.hits.append(Hit(time.monotonic(), mode, reply[0]))
        return reply

    def set_mode(self, mode: str) -> None:
        if mode == "refused":
            self._close()
        elif self._server is None:
            self._open()
        self.mode = mode

    def _open(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._relay()

            def do_POST(self) -> None:
                self._relay()

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                status, reply_headers, content = proxy.answer(
                    self.command, self.path, headers, body
                )
                self.send_response(status)
                for name, value in reply_headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request: Any, client_address: Any) -> None:
                proxy._connections.add(request)
                super().process_request(request, client_address)

        server = Server(("127.0.0.1", self.port), Handler)
        serve = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        serve.start()
        self._server = server

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in list(self._connections):  # keep-alive connections too
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._connections.clear()

    def close(self) -> None:
        self._close()
        self.upstream.close()


HOP_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "content-length", "transfer-encoding", "content-encoding"}
)


def fastest_schedule(
    policy: RetryPolicy, interval: float, horizon: float, retry_after: float | None
) -> list[float]:
    """The earliest request times syncd's settings allow for one source whose vendor
    fails every request from time 0: ``policy.attempts`` tries per pass, each retry
    after the shortest wait (the exponential backoff without its jitter, or the
    server's ``Retry-After``, both capped at ``max_wait``), a failed pass followed
    by the scheduler's :func:`next_pass_delay`."""
    times, now, failures = [], 0.0, 0
    while now <= horizon:
        for attempt in range(1, policy.attempts + 1):
            times.append(now)
            if attempt < policy.attempts:
                backoff = min(policy.backoff_initial * 2 ** (attempt - 1), policy.backoff_max)
                now += min(retry_after if retry_after is not None else backoff, policy.max_wait)
        failures += 1
        now += next_pass_delay(failures, interval, retry_after, policy.max_wait)
    return times


def request_bound(
    policy: RetryPolicy, interval: float, window: float, retry_after: float | None = None
) -> int:
    """The most requests any ``window`` seconds of :func:`fastest_schedule` holds
    (plus 50 ms for timer resolution)."""
    times = fastest_schedule(policy, interval, 4 * window + 600, retry_after)
    span = window + 0.05
    return max(sum(1 for t in times[i:] if t - start <= span) for i, start in enumerate(times))


def phase_metric(daemon: DaemonProcess) -> float:
    """DoorFlow requests that got no answer at all (refused), as syncd counts them."""
    value = daemon.metric("syncd_vendor_requests_total", source=DOORFLOW, status="error")
    return 0.0 if math.isnan(value) else value  # NaN: the series has not appeared yet


PHASES = ("refused", "503", "429")


@dataclass
class Phase:
    mode: str
    seconds: float
    requests: int


def run_phase(proxy: CountingProxy, daemon: DaemonProcess, mode: str, seconds: float) -> Phase:
    """``mode`` for ``seconds``, longer if needed (up to 60 s more) until syncd tried at
    least once (twice under 429, so a wait between two of them is measured).
    Refused requests never reach the proxy: syncd's own count of unanswered ones."""

    def requests() -> int:
        if mode == "refused":
            return int(phase_metric(daemon))
        return sum(1 for hit in proxy.hits if hit.mode == mode)

    wanted = 2 if mode == "429" else 1
    before = requests()
    began = time.monotonic()
    proxy.set_mode(mode)
    time.sleep(seconds)
    wait_for(lambda: requests() - before >= wanted, 60, f"{wanted} request(s) during {mode}")
    return Phase(mode, time.monotonic() - began, requests() - before)


def phase_bound(policy: RetryPolicy, interval: float, phase: Phase, retry_after: int) -> int:
    wait = float(retry_after) if phase.mode == "429" else None
    return request_bound(policy, interval, phase.seconds, wait)


def daemon_retries(daemon: DaemonProcess) -> list[tuple[Any, ...]]:
    """What syncd logged about DoorFlow's failures (for a failure message)."""
    names = ("request_retry", "pass_failed", "pass_backoff", "pass_started")
    return [
        (e["timestamp"][11:23], e["event"], e.get("wait_s") or e.get("next_in_s") or e.get("error"))
        for e in daemon.logs()
        if e.get("source") == DOORFLOW and e.get("event") in names
    ]


def early_retries(hits: list[Hit], retry_after: float, slack: float = 0.05) -> list[float]:
    """Gaps shorter than the ``Retry-After`` the previous 429 asked for."""
    return [
        later.at - hit.at
        for hit, later in itertools.pairwise(hits)
        if hit.status == 429 and later.at - hit.at < retry_after - slack
    ]


def test_vendor_down_refused_then_503_then_429(
    pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    down = float(scaled(60, 8))
    phase = down / 3
    retry_after = scaled(10, 2)
    port = free_port()
    with vendors(seed=41, rate=5.0) as world:
        proxy = CountingProxy(world.doorflow.base_url, retry_after)
        config = config_file(tmp_path / "syncd.toml", port, proxy.base_url, world.intserv.base_url)
        settings = load_settings(config, environ=world.env)
        source = next(s for s in settings.sources if s.name == DOORFLOW)
        policy = RetryPolicy.for_source(source)
        try:
            proxy.set_mode("up")
            with running_daemon(config, pg_url, port, world.env) as daemon:
                for name in (DOORFLOW, INTSERV):
                    wait_for(
                        lambda s=name: passes_finished(daemon, s, 0) > 0,  # type: ignore[misc]
                        30,
                        f"a first pass of {name}",
                    )
                outage_began = time.time()
                intserv_rows = row_count(pg_engine, INTSERV)
                phases = [run_phase(proxy, daemon, mode, phase) for mode in PHASES]
                proxy.set_mode("up")
                back = time.monotonic()
                assert passes_finished(daemon, INTSERV, outage_began) >= 2, (
                    "IntServ stopped syncing while DoorFlow was down"
                )
                assert row_count(pg_engine, INTSERV) > intserv_rows
                catch_up(daemon, world, timeout=retry_after + 60)
                recovered = time.monotonic() - back
                assert daemon.stop() == 0
        finally:
            proxy.close()
        compared = assert_matches_truth(pg_engine, world)
        assert_no_secrets(daemon.lines, world.secrets)
    bounds = [phase_bound(policy, source.interval, each, retry_after) for each in phases]
    for each, bound in zip(phases, bounds, strict=True):
        assert each.requests <= bound, f"{each} exceeds the {bound} requests syncd's policy allows"
    early = early_retries(proxy.hits, retry_after)
    assert not early, (
        f"requests {early} s after a 429 asking for {retry_after} s: {daemon_retries(daemon)}"
    )
    figures = ", ".join(
        f"{p.mode} {p.seconds:.1f} s: {p.requests} req (bound {bound})"
        for p, bound in zip(phases, bounds, strict=True)
    )
    print(
        f"\nfaults/vendor-down: DoorFlow down {sum(p.seconds for p in phases):.0f} s "
        f"(Retry-After {retry_after} s); {figures}; IntServ kept syncing; "
        f"caught up {recovered:.1f} s after return; "
        f"{compared} events compared (0 missing, 0 duplicated, 0 stale)"
    )


# -- 3. a read-only database ------------------------------------------------------------


@dataclass
class Role:
    """A login role syncd connects as, with the grants a deployment would give it."""

    name: str
    password: str
    url: str  # as that role
    admin: str  # psycopg DSN of a superuser, same database

    def sql(self, statement: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(statement)


@pytest.fixture
def syncd_role(empty_pg_url: str) -> Iterator[Role]:
    engine = create_engine(empty_pg_url, poolclass=sa.pool.NullPool)
    migrate.upgrade(engine)  # as the superuser: the role only reads and writes rows
    engine.dispose()
    name, password = f"syncd_rw_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    admin = make_url(empty_pg_url).set(drivername="postgresql")
    role = Role(
        name,
        password,
        make_url(empty_pg_url).set(username=name, password=password).render_as_string(False),
        admin.render_as_string(hide_password=False),
    )
    role.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    role.sql(f"GRANT USAGE ON SCHEMA public TO {name}")
    role.sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}")
    role.sql(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {name}")
    yield role
    role.sql(f"DROP OWNED BY {name}")  # its grants, so the role can go
    role.sql(f"DROP ROLE {name}")


def syncd_sync(config: Path, url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "syncd.cli", "--config", str(config), "--database-url", url]
    full_env = {**os.environ, **env}
    full_env.pop("SYNCD_LOG_LEVEL", None)
    return subprocess.run(
        [*args, "sync"], env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


def snapshot(engine: sa.Engine) -> tuple[list[Any], list[Any], list[Any]]:
    """Every stored row: events, rejected records, and each source's cursor."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events).order_by(events.c.id)).all()
        rejected = conn.execute(sa.select(rejected_events).order_by(rejected_events.c.id)).all()
        cursors = conn.execute(
            sa.select(sync_state.c.source, sync_state.c.cursor).order_by(sync_state.c.source)
        ).all()
    return [tuple(r) for r in rows], [tuple(r) for r in rejected], [tuple(c) for c in cursors]


def test_read_only_events_table_fails_cleanly_then_recovers(
    syncd_role: Role, tmp_path: Path
) -> None:
    engine = create_engine(syncd_role.url, poolclass=sa.pool.NullPool)
    with vendors(seed=51, rate=0.0) as world:
        config = config_file(
            tmp_path / "syncd.toml", free_port(), world.doorflow.base_url, world.intserv.base_url
        )
        first = syncd_sync(config, syncd_role.url, world.env)
        assert first.returncode == 0, first.stderr
        world.doorflow.generate(scaled(500, 50))  # something new for the next pass to write
        world.intserv.generate(scaled(500, 50))
        syncd_role.sql(f"REVOKE INSERT, UPDATE ON events FROM {syncd_role.name}")
        before = snapshot(engine)
        refused = syncd_sync(config, syncd_role.url, world.env)
        after = snapshot(engine)
        syncd_role.sql(f"GRANT INSERT, UPDATE ON events TO {syncd_role.name}")
        again = syncd_sync(config, syncd_role.url, world.env)
        assert again.returncode == 0, again.stderr
        compared = assert_matches_truth(engine, world)
    engine.dispose()
    runs = (first, refused, again)
    assert_no_secrets(
        [run.stdout for run in runs] + [run.stderr for run in runs],
        [*world.secrets, syncd_role.password],
    )
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    # One line per source that failed (both write events), each naming the problem.
    assert len(lines) == 2, f"not one line per source: {refused.stderr!r}"
    for source, line in zip((DOORFLOW, INTSERV), lines, strict=True):
        assert line.startswith(f"syncd: {source} failed: "), line
        assert "permission denied for table events" in line, line
    assert after == before, "a failed pass changed events, rejected_events or a cursor"
    print(
        f"\nfaults/read-only: sync without INSERT/UPDATE on events exited "
        f"{refused.returncode} with one line per source ({lines[0]!r}), {len(before[0])} rows and "
        f"{len(before[2])} cursors unchanged; after GRANT exit 0, "
        f"{compared} events compared (0 missing, 0 duplicated, 0 stale)"
    )
