"""The daemon's HTTP side against a real process: webhooks, readiness, Prometheus."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.db.schema import events
from syncd.simulators import DoorFlowSimulator
from syncd.webhooks import MAX_BODY, signature
from tests.integration.daemonhelpers import (
    DaemonProcess,
    free_port,
    http,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)

SECRET = "whsec_http_tests_5b2c"


def _stored_ids(engine: sa.Engine, source: str) -> set[int]:
    with engine.connect() as conn:
        query = sa.select(events.c.event_key).where(events.c.source == source)
        return {int(key) for (key,) in conn.execute(query)}


def _post(daemon: DaemonProcess, source: str, body: bytes, **headers: str) -> int:
    return http(f"{daemon.url}/webhooks/doorflow/{source}", "POST", body, headers)[0]


def _signed(body: bytes, stamp: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if stamp is None else stamp))
    return {"Timestamp": timestamp, "Signature": signature(SECRET.encode(), timestamp, body)}


def test_webhooks_become_rows_within_a_second_and_hostile_requests_get_4xx(
    pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/doorflow/hq"
    sim = DoorFlowSimulator(seed=31, history=0, webhook_url=hook, webhook_secret=SECRET)
    with sim:
        config = write_config(
            tmp_path / "syncd.toml",
            port,
            [
                # Polls far apart: what arrives within the test arrives by webhook.
                source_toml(
                    "hq",
                    "doorflow",
                    sim.base_url,
                    token_env="T",
                    webhook_secret_env="S",
                    interval=3600,
                ),
                source_toml("nosecret", "doorflow", sim.base_url, token_env="T", interval=3600),
            ],
        )
        with running_daemon(config, pg_url, port, {"T": sim.token, "S": SECRET}) as daemon:
            latencies = []
            for _ in range(20):
                before = set(sim.truth())
                sim.generate(3)
                new = set(sim.truth()) - before
                started = time.monotonic()
                assert sim.deliver_webhooks() == len(new)
                wait_for(lambda n=new: n <= _stored_ids(pg_engine, "hq"), 5, "rows", every=0.01)  # type: ignore[misc]
                latencies.append(time.monotonic() - started)
                # The acknowledgements follow the commit: wait for them, or the next
                # delivery re-sends the last ones (harmless, but not what is counted).
                wait_for(lambda: not sim.pending_webhooks(), 5, "acknowledged", every=0.01)
            latencies.sort()
            assert latencies[-1] < 1.0, latencies
            wait_for(lambda: not sim.pending_webhooks(), 5, "every delivery acknowledged")
            assert {event_id for event_id, _, _ in sim.acks} == set(sim.truth())

            served = sim.stats.get("events_served", 0)
            _hostile(daemon)
            time.sleep(0.5)
            assert sim.stats.get("events_served", 0) == served, "a hostile payload was fetched"

            # An event the vendor does not show (yet): retried, then left to the next poll.
            body = orjson.dumps(
                [{"action": "CREATE", "resource_type": "Event", "resource_id": 987654321}]
            )
            assert _post(daemon, "hq", body, **_signed(body)) == 200
            wait_for(
                lambda: (
                    daemon.metric(
                        "syncd_webhook_notifications_total", source="hq", outcome="abandoned"
                    )
                    == 1
                ),
                10,
                "the unknown event abandoned",
            )
            metrics = daemon.metrics()
            assert daemon.stop() == 0

    def count(source: str, status: str) -> float:
        key = ("syncd_webhook_requests_total", (("source", source), ("status", status)))
        return metrics.get(key, 0.0)

    assert count("hq", "200") == 20 + 2  # the deliveries, the ignored ids, the unknown event
    assert count("hq", "401") == 6
    assert count("hq", "400") == 3
    assert count("hq", "413") == 2
    assert count("hq", "405") == 2
    assert count("nosecret", "404") == 1
    assert count("(unknown)", "404") == 2
    assert not any(labels and dict(labels).get("source") == "nope" for (_, labels) in metrics), (
        "a path's source name became a label"
    )


def _hostile(daemon: DaemonProcess) -> None:
    body = orjson.dumps([{"action": "CREATE", "resource_type": "Event", "resource_id": 1}])
    now = time.time()
    # Unknown source, a source without a secret, other methods.
    assert _post(daemon, "nope", body, **_signed(body)) == 404
    assert _post(daemon, "..%2F..%2Fmetrics", body, **_signed(body)) == 404
    assert _post(daemon, "nosecret", body, **_signed(body)) == 404
    assert http(f"{daemon.url}/webhooks/doorflow/hq")[0] == 405
    assert http(f"{daemon.url}/webhooks/doorflow/hq", "PUT", body, _signed(body))[0] == 405
    assert http(f"{daemon.url}/healthz", "POST", b"")[0] == 405
    # Signatures and timestamps.
    assert _post(daemon, "hq", body) == 401
    assert _post(daemon, "hq", body, Timestamp=str(int(now)), Signature="00" * 32) == 401
    assert _post(daemon, "hq", body, **_signed(body, time.time() - 310)) == 401
    assert _post(daemon, "hq", body, **_signed(body, time.time() + 310)) == 401
    assert _post(daemon, "hq", body + b" ", **_signed(body)) == 401
    assert _post(daemon, "hq", body, **_signed(body, 0)) == 401
    # Bodies: not notifications, too large (declared and chunked).
    for bad in (b"{not json", b'["x"]', b"7"):
        assert _post(daemon, "hq", bad, **_signed(bad)) == 400
    big = b"[" + b" " * MAX_BODY + b"]"
    assert _post(daemon, "hq", big, **_signed(big)) == 413
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    status = http(f"{daemon.url}/webhooks/doorflow/hq", "POST", chunks, _signed(big))[0]
    assert status == 413
    # Oversized headers: refused by the server, never a 5xx.
    status = http(f"{daemon.url}/webhooks/doorflow/hq", "POST", body, {"X-Big": "a" * 100_000})[0]
    assert 400 <= status < 500
    # Ids that are no ids, URLs in the payload: accepted and ignored, nothing fetched.
    tricky = orjson.dumps(
        [
            {"action": "CREATE", "resource_type": "Event", "resource_id": "../../oauth/token"},
            {"action": "CREATE", "resource_type": "Event", "resource_id": -4},
            {"action": "CREATE", "resource_type": "Event", "resource_url": "http://evil.test/1"},
            {"action": "DESTROY", "resource_type": "Event", "resource_id": 1},
        ]
    )
    assert _post(daemon, "hq", tricky, **_signed(tricky)) == 200
    assert orjson.loads(http(f"{daemon.url}/readyz")[1]) == {"status": "ready"}


@pytest.fixture
def outage_db() -> Iterator[tuple[str, str]]:
    """A database of its own (admin DSN, SQLAlchemy URL), dropped after the test."""
    admin = os.environ.get("SYNCD_TEST_DATABASE_URL")
    if not admin:
        if os.environ.get("CI"):
            pytest.fail("SYNCD_TEST_DATABASE_URL is not set: PostgreSQL tests must run in CI")
        pytest.skip("no PostgreSQL (set SYNCD_TEST_DATABASE_URL or run scripts/test)")
    name = f"syncd_outage_{uuid.uuid4().hex[:8]}"
    dsn = make_url(admin).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(drivername="postgresql+psycopg", database=name)
    try:
        yield dsn, url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _set_outage(dsn: str, url: str, down: bool) -> None:
    name = make_url(url).database
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
        if down:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def test_readyz_is_503_during_a_database_outage_and_everything_resumes(
    outage_db: tuple[str, str], tmp_path: Path
) -> None:
    dsn, url = outage_db
    port = free_port()
    with DoorFlowSimulator(seed=41, history=200, rate=5.0) as sim:
        config = write_config(
            tmp_path / "syncd.toml",
            port,
            [source_toml("hq", "doorflow", sim.base_url, token_env="T", interval=0.5)],
        )
        with running_daemon(config, url, port, {"T": sim.token}) as daemon:
            wait_for(lambda: daemon.get("/readyz")[0] == 200, 10, "ready")
            wait_for(
                lambda: daemon.metric("syncd_passes_total", source="hq", result="ok") >= 1,
                15,
                "a first pass",
            )
            _set_outage(dsn, url, down=True)
            _status, body = wait_for(
                lambda: (r := daemon.get("/readyz"))[0] == 503 and r, 10, "readyz 503"
            )
            answer = orjson.loads(body)
            assert answer["status"] == "not_ready"
            assert answer["reason"].startswith("database unavailable")
            failed = daemon.metric("syncd_passes_total", source="hq", result="failed")
            wait_for(
                lambda: (
                    daemon.metric("syncd_passes_total", source="hq", result="failed") >= failed + 2
                ),
                15,
                "passes failing during the outage",
            )
            assert daemon.get("/healthz")[0] == 200
            assert daemon.proc.poll() is None
            _set_outage(dsn, url, down=False)
            wait_for(lambda: daemon.get("/readyz")[0] == 200, 10, "ready again")
            ok = daemon.metric("syncd_passes_total", source="hq", result="ok")
            # Backoff after the failures is capped at 5 x 0.5 s.
            wait_for(
                lambda: daemon.metric("syncd_passes_total", source="hq", result="ok") > ok,
                15,
                "passes succeeding again",
            )
            assert daemon.metric("syncd_consecutive_failures", source="hq") == 0
            assert daemon.stop() == 0


def test_a_webhook_fetched_while_the_database_is_down_is_acknowledged_once_it_is_stored(
    outage_db: tuple[str, str], tmp_path: Path
) -> None:
    """DESIGN.md "Webhooks": no acknowledgement before the row commits; stored once back."""
    dsn, url = outage_db
    port = free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/doorflow/hq"
    sim = DoorFlowSimulator(seed=8, history=0, webhook_url=hook, webhook_secret=SECRET)
    watcher = sa.create_engine(url, poolclass=sa.pool.NullPool)
    acks: list[tuple[int, str, bool]] = []  # (event id, token, its row there by then)

    def on_ack(event_id: int, token: str) -> None:
        try:
            stored = event_id in _stored_ids(watcher, "hq")
        except sa.exc.SQLAlchemyError:
            stored = False  # the database is down: certainly not there
        acks.append((event_id, token, stored))

    sim.on_ack = on_ack
    with sim:
        config = write_config(
            tmp_path / "syncd.toml",
            port,
            [
                # Polls far apart: the remote-control events (50-63) can come by webhook only.
                source_toml(
                    "hq",
                    "doorflow",
                    sim.base_url,
                    token_env="T",
                    webhook_secret_env="S",
                    interval=3600,
                ),
            ],
        )
        with running_daemon(config, url, port, {"T": sim.token, "S": SECRET}) as daemon:
            wait_for(lambda: daemon.get("/readyz")[0] == 200, 10, "ready")
            # A first webhook opens the source's runtime (it reads the source's state).
            sim.generate(1)
            assert sim.deliver_webhooks() == 1
            wait_for(lambda: len(acks) == 1, 10, "the first one acknowledged")
            first = set(sim.truth())
            acks.clear()
            served = sim.stats.get("events_served", 0)
            _set_outage(dsn, url, down=True)
            sim.generate(40)
            truth = {i: e for i, e in sim.truth().items() if i not in first}
            remote = {i for i, e in truth.items() if 50 <= e["event_code"] <= 63}
            assert remote, "the seed gives remote-control events"
            assert sim.deliver_webhooks() == len(truth)  # answered without the database
            wait_for(
                lambda: sim.stats.get("events_served", 0) >= served + len(truth),
                10,
                "the events fetched",
            )
            time.sleep(2.0)  # the store fails and is retried meanwhile
            assert acks == [], "acknowledged while the database was down"
            assert len(sim.pending_webhooks()) == len(truth)
            assert daemon.metric("syncd_webhook_queued") == len(truth)

            _set_outage(dsn, url, down=False)
            # The write backoff doubles from 0.5 s: the next try within ~4 s of the return.
            wait_for(lambda: not sim.pending_webhooks(), 20, "every notification acknowledged")
            assert _stored_ids(watcher, "hq") == set(truth) | first
            wait_for(lambda: daemon.metric("syncd_webhook_queued") == 0, 5, "nothing in hand")
            acknowledged = daemon.metric(
                "syncd_webhook_notifications_total", source="hq", outcome="acknowledged"
            )
            dropped = daemon.metric("syncd_webhook_dropped_total", source="hq")
            stored_logs = daemon.events("webhook_store_failed")
            assert daemon.stop() == 0
    watcher.dispose()
    assert remote <= {event_id for event_id, _, _ in acks}
    assert sorted(token for _, token, _ in acks) == sorted({token for _, token, _ in acks}), (
        "an acknowledgement sent twice"
    )
    assert len(acks) == len(truth)
    assert all(stored for _, _, stored in acks), "an ack came before its row"
    assert acknowledged == 1 + len(truth)
    assert dropped == 0
    assert stored_logs, "the failed writes are logged"


def test_a_real_prometheus_scrapes_the_metrics(tmp_path: Path, sqlite_url: str) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing in CI: scripts/test installs it")
        pytest.skip(
            "prometheus not installed (Debian package prometheus; scripts/test installs it)"
        )
    port, prom_port = free_port(), free_port()
    with DoorFlowSimulator(seed=51, history=100) as sim:
        config = write_config(
            tmp_path / "syncd.toml",
            port,
            [source_toml("hq", "doorflow", sim.base_url, token_env="T", interval=1)],
        )
        scrape = tmp_path / "prometheus.yml"
        scrape.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: syncd\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
        with running_daemon(config, sqlite_url, port, {"T": sim.token}) as daemon:
            proc = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={scrape}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                api = f"http://127.0.0.1:{prom_port}/api/v1"

                def query(expr: str) -> list[dict[str, object]]:
                    try:
                        got = httpx.get(f"{api}/query", params={"query": expr}, timeout=2).json()
                    except (httpx.HTTPError, ValueError, OSError):
                        return []
                    result: list[dict[str, object]] = got.get("data", {}).get("result", [])
                    return result

                up = wait_for(lambda: query('up{job="syncd"} == 1'), 30, "a successful scrape")
                assert up
                wait_for(
                    lambda: query('syncd_passes_total{source="hq",result="ok"} > 0'),
                    30,
                    "syncd_passes_total in Prometheus",
                )
                targets = httpx.get(f"{api}/targets", timeout=2).json()["data"]["activeTargets"]
                assert [t["health"] for t in targets] == ["up"], targets
                assert targets[0]["lastError"] == ""
            finally:
                proc.terminate()
                proc.wait(timeout=10)
            assert daemon.stop() == 0
