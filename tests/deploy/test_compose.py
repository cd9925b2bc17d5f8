"""docker-compose.yml: the Compose specification's schema, and that its parts fit together.

No container runtime exists here, so the stack itself is not started; instead each
piece it wires up is checked with the real thing: the schema (the Compose
specification's JSON schema, vendored by the check-jsonschema package), syncd's own
configuration loader on deploy/compose/syncd.toml with the services' environment,
promtool on the Prometheus config, PostgreSQL on the BI role SQL, and the
simulators + `syncd sync` run with exactly the compose commands and credentials.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

from syncd.config import load_settings
from tests.deploy.deploytools import (
    COMPOSE_FILE,
    DEPLOY,
    ROOT,
    flag,
    free_port,
    load_compose,
    require_tool,
    service_env,
)


def compose_schema() -> dict[str, Any]:
    resource = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json"
    )
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_the_compose_file_matches_the_compose_specification() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert schema_errors(raw) == []
    # and as Compose sees it after interpolation, with overrides from the environment
    assert schema_errors(load_compose({"SYNCD_PG_PORT": "15432"})) == []


def test_the_schema_check_catches_a_broken_service() -> None:
    broken = load_compose()
    broken["services"]["syncd"]["depends_on"]["migrate"]["condition"] = "finished"
    broken["services"]["postgres"]["helthcheck"] = {}
    errors = schema_errors(broken)
    assert any("depends_on" in e for e in errors), errors
    assert any("helthcheck" in e for e in errors), errors


def test_every_service_is_wired_to_something_that_exists() -> None:
    compose = load_compose()
    services = compose["services"]
    assert set(services) >= {"postgres", "migrate", "syncd", "doorflow", "intserv"}
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    # the order the demo needs: database healthy -> migrate -> daemon
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["syncd"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["migrate"]["command"] == ["migrate"]
    assert services["syncd"]["command"] == ["run"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    # Prometheus and Grafana only under the monitoring profile
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    for name in ("postgres", "migrate", "syncd", "doorflow", "intserv"):
        assert "profiles" not in services[name]


def _compose_settings(tmp_path: Path, overrides: dict[str, str] | None = None) -> Any:
    compose = load_compose(overrides)
    env = service_env(compose["services"]["syncd"])
    config = DEPLOY / "compose" / "syncd.toml"
    return compose, load_settings(config_path=config, environ=env)


def test_the_compose_config_is_accepted_by_syncd_with_the_services_environment(
    tmp_path: Path,
) -> None:
    compose, settings = _compose_settings(tmp_path)
    services = compose["services"]
    # the daemon listens where the port mapping, Prometheus and the webhooks point
    assert (settings.daemon.host, settings.daemon.port) == ("0.0.0.0", 8080)  # noqa: S104
    assert services["syncd"]["ports"] == ["8080:8080"]
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["syncd:8080"]
    assert scrape["scrape_configs"][0]["job_name"] == "syncd"

    sources = {s.name: s for s in settings.sources}
    assert {s.kind for s in sources.values()} == {"doorflow", "intserv"}
    doorflow_args = services["doorflow"]["command"]
    intserv_args = services["intserv"]["command"]
    hq, stockholm = sources["hq"], sources["stockholm"]
    # each source points at its simulator's service name and port
    assert hq.base_url == f"http://doorflow:{flag(doorflow_args, '--port')}"
    assert stockholm.base_url == f"http://intserv:{flag(intserv_args, '--port')}"
    # the simulators require exactly the credentials syncd sends, overrides included
    _, overridden = _compose_settings(tmp_path, {"DOORFLOW_TOKEN": "t-1", "INTSERV_API_KEY": "k-1"})
    over = load_compose({"DOORFLOW_TOKEN": "t-1", "INTSERV_API_KEY": "k-1"})["services"]
    assert flag(over["doorflow"]["command"], "--token") == "t-1"
    assert flag(over["intserv"]["command"], "--api-key") == "k-1"
    assert {s.name: s for s in overridden.sources}["hq"].token is not None
    # the DoorFlow simulator's webhooks go to syncd's route for this source, signed with
    # the secret syncd verifies with
    assert flag(doorflow_args, "--webhook-url") == "http://syncd:8080/webhooks/doorflow/hq"
    assert hq.webhook_secret is not None
    assert hq.webhook_secret.reveal() == flag(doorflow_args, "--webhook-secret")
    url = make_url(service_env(services["syncd"])["SYNCD_DATABASE_URL"])
    pg = services["postgres"]["environment"]
    assert (url.username, url.password, url.host, url.database) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        "postgres",
        pg["POSTGRES_DB"],
    )


def test_the_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    # laid out as in the container: the config with alerts.yml beside it
    (tmp_path / "prometheus.yml").write_text((DEPLOY / "compose" / "prometheus.yml").read_text())
    (tmp_path / "alerts.yml").write_text((DEPLOY / "prometheus" / "alerts.yml").read_text())
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def datasource_uids(node: Any) -> set[str]:
    """Every datasource uid a dashboard names (panels, targets, variables), Grafana's own aside."""
    found: set[str] = set()
    if isinstance(node, dict):
        source = node.get("datasource")
        uid = source.get("uid") if isinstance(source, dict) else None
        if isinstance(uid, str) and not uid.startswith(("$", "-- ")) and uid != "grafana":
            found.add(uid)
        for value in node.values():
            found |= datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            found |= datasource_uids(value)
    return found


def test_grafana_provisioning_points_at_the_dashboards_and_datasources() -> None:
    compose = load_compose()
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    provisioning = ROOT / next(k for k, v in mounts.items() if v == "/etc/grafana/provisioning")
    providers = yaml.safe_load((provisioning / "dashboards" / "syncd.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    host_dir = ROOT / next(k for k, v in mounts.items() if v == path)
    assert (host_dir / "syncd-dashboard.json").is_file()
    datasources = yaml.safe_load((provisioning / "datasources" / "syncd.yml").read_text())
    uids = {d["uid"]: d for d in datasources["datasources"]}
    dashboard = json.loads((host_dir / "syncd-dashboard.json").read_text())
    assert datasource_uids(dashboard) == {"prometheus"}
    # every dashboard in the folder (the BI one too, once it is there) finds its datasources
    for path in host_dir.glob("*.json"):
        assert datasource_uids(json.loads(path.read_text())) <= set(uids), path.name
    assert uids["prometheus"]["url"] == "http://prometheus:9090"
    # the PostgreSQL datasource logs in as the read-only BI role
    assert uids["syncd-postgres"]["user"] == "syncd_bi"
    assert "$SYNCD_BI_PASSWORD" in uids["syncd-postgres"]["secureJsonData"]["password"]
    assert (
        grafana["environment"]["SYNCD_BI_PASSWORD"]
        in (DEPLOY / "compose" / "initdb" / "10-bi-role.sql").read_text()
    )


# --------------------------------------------------------------------------- BI role SQL


def _admin(pg_url: str) -> str:
    return make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.postgres
def test_the_bi_role_reads_everything_but_the_refresh_token_and_writes_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    """The compose init SQL + grants, run as the postgres image runs them, on real PostgreSQL.

    Role and database names get a unique suffix: the cluster is shared.
    """
    suffix = uuid.uuid4().hex[:8]
    owner, bi, db = f"syncd_owner_{suffix}", f"syncd_bi_{suffix}", f"syncd_bi_test_{suffix}"
    init_sql = (DEPLOY / "compose" / "initdb" / "10-bi-role.sql").read_text()
    grants_sql = (DEPLOY / "compose" / "bi-grants.sql").read_text()
    assert "syncd_bi" in init_sql
    assert "syncd_bi" in grants_sql
    init_sql, grants_sql = (s.replace("syncd_bi", bi) for s in (init_sql, grants_sql))
    admin = _admin(pg_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        # the postgres image runs init scripts as a superuser; CREATEROLE is enough here
        conn.execute(f'CREATE ROLE "{owner}" LOGIN CREATEROLE')
        conn.execute(f'CREATE DATABASE "{db}" OWNER "{owner}"')
    base = make_url(admin)
    as_owner = base.set(username=owner, database=db).render_as_string(hide_password=False)
    as_bi = base.set(username=bi, database=db).render_as_string(hide_password=False)
    try:
        # 1. init script (before any table exists), as the database owner
        with psycopg.connect(as_owner, autocommit=True) as conn:
            conn.execute(init_sql)
        # 2. syncd migrate, 3. the grants one-shot
        migrated = subprocess.run(
            [sys.executable, "-m", "syncd.cli", "--database-url", as_owner, "migrate"],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")},
        )
        assert migrated.returncode == 0, migrated.stderr
        with psycopg.connect(as_owner, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO sync_state (source, cursor, refresh_token, consecutive_failures,"
                " updated_at) VALUES ('hq', '{}', 'rt-secret', 0, now())"
            )
            conn.execute(grants_sql)
            conn.execute(grants_sql)  # idempotent: runs after every migrate
        with psycopg.connect(as_bi, autocommit=True) as conn:
            for table in ("events", "rejected_events", "event_codes"):
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            row = conn.execute("SELECT source, consecutive_failures FROM sync_state").fetchone()
            assert row == ("hq", 0)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT refresh_token FROM sync_state")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM sync_state")
            # read-only twice over: no privilege, and read-only transactions by default
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("DELETE FROM events")
            assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
            conn.execute("SET default_transaction_read_only = off")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM events")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE TABLE mine (x int)")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{bi}"')
            conn.execute(f'DROP ROLE IF EXISTS "{owner}"')


# --------------------------------------------------------------------------- the demo


def _simulator(service: dict[str, Any], port: int) -> subprocess.Popen[str]:
    """The compose service's command, on loopback: same options, same credentials."""
    args = [
        f"--port={port}" if a.startswith("--port=") else a
        for a in service["command"]
        if not a.startswith("--host=") and not a.startswith("--webhook-url=")
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", *args, "--host=127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def empty_pg_db(pg_url: str) -> Iterator[str]:
    """A database of its own, empty: `syncd sync` migrates it first, as on a fresh volume."""
    admin = _admin(pg_url)
    name = f"syncd_compose_demo_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_the_compose_demo_gets_events_into_postgres(empty_pg_db: str, tmp_path: Path) -> None:
    """The compose services' own commands and config, with loopback instead of service names."""
    compose = load_compose()
    services = compose["services"]
    ports = {"doorflow": free_port(), "intserv": free_port()}
    config = (DEPLOY / "compose" / "syncd.toml").read_text()
    for name, port in ports.items():
        original = flag(services[name]["command"], "--port")
        config = config.replace(f"http://{name}:{original}", f"http://127.0.0.1:{port}")
    (tmp_path / "syncd.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(service_env(services["syncd"]))
    env.update(SYNCD_CONFIG=str(tmp_path / "syncd.toml"), SYNCD_DATABASE_URL=empty_pg_db)
    env.pop("SYNCD_LOG_LEVEL")
    sims = {name: _simulator(copy.deepcopy(services[name]), port) for name, port in ports.items()}
    try:
        for name, proc in sims.items():
            _wait_listening(ports[name], proc)
        result = subprocess.run(
            [sys.executable, "-m", "syncd.cli", "sync"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        for proc in sims.values():
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()
    with psycopg.connect(empty_pg_db) as conn:
        counts = dict(
            conn.execute("SELECT source, count(*) FROM events GROUP BY source").fetchall()
        )
    # both simulators hold 20,000 events over 7 days; syncd's default start is 7 days back
    assert counts.get("hq", 0) > 10_000, counts
    assert counts.get("stockholm", 0) > 10_000, counts
