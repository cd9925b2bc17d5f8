"""Every dashboard and alert expression against a real Prometheus scraping a real `syncd run`.

Real processes only: both simulators (with webhooks, faults and malformed records so
retries, rejects and webhook answers happen), `syncd run --migrate` on a fresh
PostgreSQL database, and the Debian package's `prometheus` binary scraping it every
second with deploy/prometheus/alerts.yml loaded. Each expression is then evaluated
through Prometheus's HTTP API: it must succeed, and every metric it names must have
series. Skips (with that reason) until the daemon exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.deploy.deploytools import (
    ALERTS,
    alert_expressions,
    dashboard_expressions,
    free_port,
    metric_names,
    require_tool,
)

TOKEN, API_KEY, WEBHOOK_SECRET = "live-doorflow-token", "live-intserv-key", "live-webhook-secret"


def _daemon_available() -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "syncd.cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.returncode == 0 and "--listen" in result.stdout


pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not _daemon_available(), reason="needs syncd run (daemon)"),
]


def wait_for(what: str, check: Callable[[], Any], timeout: float, procs: list[Any]) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args[:4]} exited {proc.returncode} waiting for {what}")
        try:
            last = check()
            if last:
                return last
        except (OSError, httpx.HTTPError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def get(url: str) -> tuple[int, bytes]:
    response = httpx.get(url, timeout=5)
    return response.status_code, response.content


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(started):
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def live_db(pg_url: str) -> Iterator[str]:
    admin = make_url(pg_url).set(drivername="postgresql")
    name = f"syncd_prom_live_{uuid.uuid4().hex[:8]}"
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start(
    procs: list[subprocess.Popen[bytes]], args: list[str], log: Path, **env: str
) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**base, **env})
    procs.append(proc)
    return proc


def query(prom: str, expr: str) -> dict[str, Any]:
    status, body = get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    answer: dict[str, Any] = orjson.loads(body)
    assert status == 200, (expr, answer)
    assert answer["status"] == "success", (expr, answer)
    return answer


def test_every_dashboard_and_alert_expression_against_real_prometheus_and_syncd(
    tmp_path: Path, live_db: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    prometheus = require_tool("prometheus", "Debian package prometheus")
    ports = {name: free_port() for name in ("doorflow", "intserv", "syncd", "prometheus")}
    syncd_url = f"http://127.0.0.1:{ports['syncd']}"
    cli = [sys.executable, "-m", "syncd.cli"]
    start(
        processes,
        [
            *cli,
            "simulate",
            "doorflow",
            f"--port={ports['doorflow']}",
            "--events=3000",
            "--history-days=2",
            "--rate=5",
            "--rate-limit=0.05",
            "--retry-after=0.2",
            "--server-errors=0.05",
            "--malformed=0.01",
            f"--token={TOKEN}",
            f"--webhook-url={syncd_url}/webhooks/doorflow/hq",
            f"--webhook-secret={WEBHOOK_SECRET}",
            "--webhook-interval=1",
        ],
        tmp_path / "doorflow.log",
    )
    start(
        processes,
        [
            *cli,
            "simulate",
            "intserv",
            f"--port={ports['intserv']}",
            "--events=3000",
            "--history-days=2",
            "--rate=2",
            "--malformed=0.01",
            f"--api-key={API_KEY}",
        ],
        tmp_path / "intserv.log",
    )
    (tmp_path / "syncd.toml").write_text(
        f"""
[daemon]
listen = "127.0.0.1:8080"

[[sources]]
name = "hq"
kind = "doorflow"
base_url = "http://127.0.0.1:{ports["doorflow"]}"
token_env = "DOORFLOW_TOKEN"
webhook_secret_env = "DOORFLOW_WEBHOOK_SECRET"
interval = 3
max_retry_wait = 1

[[sources]]
name = "stockholm"
kind = "intserv"
base_url = "http://127.0.0.1:{ports["intserv"]}"
api_key_env = "INTSERV_API_KEY"
interval = 3
max_retry_wait = 1
"""
    )
    for name in ("doorflow", "intserv"):
        port = ports[name]
        wait_for(f"the {name} simulator", lambda p=port: _listening(p), 30, processes)
    daemon = start(
        processes,
        [*cli, "run", "--migrate", "--listen", f"127.0.0.1:{ports['syncd']}"],
        tmp_path / "syncd.log",
        SYNCD_CONFIG=str(tmp_path / "syncd.toml"),
        SYNCD_DATABASE_URL=live_db,
        DOORFLOW_TOKEN=TOKEN,
        INTSERV_API_KEY=API_KEY,
        DOORFLOW_WEBHOOK_SECRET=WEBHOOK_SECRET,
        SYNCD_LOG_LEVEL="info",
    )
    try:
        wait_for("/readyz", lambda: get(f"{syncd_url}/readyz")[0] == 200, 120, processes)

        def both_passed() -> bool:
            text = get(f"{syncd_url}/metrics")[1].decode()
            ok = [
                line
                for line in text.splitlines()
                if line.startswith("syncd_passes_total{") and 'result="ok"' in line
            ]
            return len([line for line in ok if not line.endswith(" 0.0")]) >= 2

        wait_for("a successful pass of each source", both_passed, 240, processes)
    except AssertionError:
        raise AssertionError((tmp_path / "syncd.log").read_text()[-4000:]) from None

    check_expressions_with_prometheus(prometheus, tmp_path, ports["syncd"], processes)

    # and the image's HEALTHCHECK command agrees with the daemon
    from tests.deploy.test_dockerfile import DOCKERFILE, parse_dockerfile

    runtime = {s.name: s for s in parse_dockerfile(DOCKERFILE.read_text())}["runtime"]
    args = orjson.loads(runtime.all("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
    check = subprocess.run(
        [sys.executable, *args[1:]],
        env={**os.environ, "SYNCD_HEALTHCHECK_URL": f"{syncd_url}/healthz"},
        check=False,
        timeout=30,
    )
    assert check.returncode == 0
    assert daemon.poll() is None


def check_expressions_with_prometheus(
    prometheus: str, tmp_path: Path, target_port: int, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Scrape syncd on target_port with a real Prometheus; evaluate every expression there."""
    prom_port = free_port()
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["alerts.yml"],
                "scrape_configs": [
                    {
                        "job_name": "syncd",
                        "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                    }
                ],
            }
        )
    )
    prom = f"http://127.0.0.1:{prom_port}"
    start(
        processes,
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        tmp_path / "prometheus.log",
    )
    wait_for("Prometheus", lambda: get(f"{prom}/-/ready")[0] == 200, 60, processes)
    wait_for(
        "a successful scrape of syncd",
        lambda: query(prom, 'up{job="syncd"} == 1')["data"]["result"],
        60,
        processes,
    )
    time.sleep(8)  # a few more scrapes, so rate() and increase() have samples to work on

    checked = 0
    for where, expr in [*dashboard_expressions(), *alert_expressions()]:
        query(prom, expr)  # evaluates without an error
        for name in metric_names(expr):
            selector = f"{name}_bucket" if name == "syncd_pass_duration_seconds" else name
            series = query(prom, selector)["data"]["result"]
            assert series, f"{where}: {selector} has no series in {expr}"
            checked += 1
    assert checked >= 20
    # the lag and freshness panels show numbers once events and passes exist
    lag = query(prom, dict(dashboard_expressions())["Event lag"])["data"]["result"]
    assert {r["metric"]["source"] for r in lag} == {"hq", "stockholm"}

    # every alert rule evaluates cleanly inside Prometheus too
    def rules_evaluated() -> list[dict[str, Any]]:
        _, body = get(f"{prom}/api/v1/rules")
        rules = [r for g in orjson.loads(body)["data"]["groups"] for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("20") for r in rules) else []

    rules = wait_for("rule evaluations", rules_evaluated, 30, processes)
    assert {r["name"] for r in rules} == {name for name, _ in alert_expressions()}
    for rule in rules:
        assert rule["health"] == "ok", rule
    # nothing is wrong with this stack, so no critical alert may be firing
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert "SyncdMetricsAbsent" not in firing
    assert "SyncdSourceFailingRepeatedly" not in firing


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
