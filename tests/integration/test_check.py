"""``syncd check`` as a user runs it: against the simulators, all ok, then each failure kind.

Each failure is one line naming the source, the check and the fix; a source's
checks stop at its first failure; the command writes nothing and creates no
file (except a rotated OAuth refresh token, saved like a pass saves it), asks
each vendor at most twice (plus a token refresh), and exits 1 on any failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from syncd.db import migrate as migrations
from syncd.db.engine import create_engine
from syncd.db.schema import sync_state
from syncd.simulators import DoorFlowSimulator, IntServSimulator
from tests.integration.daemonhelpers import free_port, source_toml
from tests.reliability.test_tls import TlsFront
from tests.tlscerts import self_signed

TOKEN = "df-check-token-7a1f"
API_KEY = "is-check-key-93c2"


def syncd(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    return subprocess.run(
        [sys.executable, "-m", "syncd.cli", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def doorflow() -> Iterator[DoorFlowSimulator]:
    with DoorFlowSimulator(seed=3, history=30, history_days=1, token=TOKEN) as sim:
        yield sim


@pytest.fixture(scope="module")
def intserv() -> Iterator[IntServSimulator]:
    with IntServSimulator(seed=3, history=30, history_days=1, api_key=API_KEY) as sim:
        yield sim


def oauth_env(sim: DoorFlowSimulator) -> dict[str, str]:
    return {
        "CID": sim.oauth.client_id,
        "CSEC": sim.oauth.client_secret,
        "RTOK": sim.oauth.refresh_token,
    }


def oauth_source(name: str, base_url: str) -> str:
    return source_toml(
        name,
        "doorflow",
        base_url,
        client_id_env="CID",
        client_secret_env="CSEC",
        refresh_token_env="RTOK",
    )


def write(tmp_path: Path, *sources: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text("\n".join(sources))
    return path


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    """(source, check) -> the status and detail, from the --json output."""
    document = orjson.loads(result.stdout)
    return {(c["source"], c["check"]): f"{c['status']}: {c['detail']}" for c in document["checks"]}


def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/syncd.db"
    engine = create_engine(url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    return url


def test_all_ok_against_both_simulators_asks_each_vendor_at_most_twice(
    tmp_path: Path, doorflow: DoorFlowSimulator, intserv: IntServSimulator
) -> None:
    url = migrated(tmp_path)
    write(
        tmp_path,
        source_toml("hq", "doorflow", doorflow.base_url, token_env="DF_TOKEN"),
        oauth_source("hq-oauth", doorflow.base_url),
        source_toml("stockholm", "intserv", intserv.base_url, api_key_env="IS_KEY"),
    )
    env = {"DF_TOKEN": TOKEN, "IS_KEY": API_KEY, **oauth_env(doorflow)}
    files = sorted(p.name for p in tmp_path.iterdir())
    before_df, before_is = doorflow.stats.get("requests", 0), intserv.stats.get("requests", 0)
    refreshes = doorflow.stats.get("token_refreshes", 0)

    result = syncd("--database-url", url, "check", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    text = result.stdout
    for source in ("hq", "hq-oauth", "stockholm"):
        for check in ("secrets", "connection", "credentials", "clock"):
            assert any(line.split()[:3] == [source, check, "ok"] for line in text.splitlines()), (
                source,
                check,
                text,
            )
    assert any(line.split()[:3] == ["hq-oauth", "scope", "ok"] for line in text.splitlines())
    assert "database   reachable    ok" in text
    assert "database   schema       ok" in text
    assert "all checks passed" in text
    # hq: one list; hq-oauth: a refresh, one list, the token info; stockholm: one list.
    assert doorflow.stats["requests"] - before_df == 1 + 1 + 2
    assert doorflow.stats["token_refreshes"] - refreshes == 1
    assert intserv.stats["requests"] - before_is == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == files, "check creates no file"
    # The rotated refresh token was saved, as a pass saves it: a second check works.
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.select(sync_state.c.refresh_token).where(sync_state.c.source == "hq-oauth")
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored
    assert stored != doorflow.oauth.refresh_token
    again = syncd("--database-url", url, "check", "--source", "hq-oauth", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout
    assert TOKEN not in text + again.stdout
    assert stored not in text + again.stdout


def test_unset_variable_names_it_and_stops_that_source_only(
    tmp_path: Path, doorflow: DoorFlowSimulator, intserv: IntServSimulator
) -> None:
    url = migrated(tmp_path)
    write(
        tmp_path,
        source_toml("hq", "doorflow", doorflow.base_url, token_env="DF_TOKEN"),
        source_toml("stockholm", "intserv", intserv.base_url, api_key_env="IS_KEY"),
    )
    result = syncd("--database-url", url, "check", "--json", cwd=tmp_path, env={"IS_KEY": API_KEY})
    assert result.returncode == 1
    checks = lines_of(result)
    assert checks[("hq", "secrets")] == (
        "failed: sources[hq].token_env: environment variable DF_TOKEN is not set"
    )
    assert ("hq", "connection") not in checks, "stops at the first failure"
    assert checks[("stockholm", "credentials")].startswith("ok")


def test_wrong_token_names_the_variable(tmp_path: Path, doorflow: DoorFlowSimulator) -> None:
    url = migrated(tmp_path)
    write(tmp_path, source_toml("hq", "doorflow", doorflow.base_url, token_env="DF_TOKEN"))
    result = syncd(
        "--database-url", url, "check", "--json", cwd=tmp_path, env={"DF_TOKEN": "wrong-token"}
    )
    assert result.returncode == 1
    line = lines_of(result)[("hq", "credentials")]
    assert line.startswith("failed: HTTP 401")
    assert "The access token is invalid" in line, "the vendor's own words"
    assert "$DF_TOKEN" in line
    assert ("hq", "clock") not in lines_of(result)


def test_wrong_host_is_a_dns_failure(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    write(tmp_path, source_toml("hq", "doorflow", "https://no-such-host.invalid", token_env="T"))
    result = syncd("--database-url", url, "check", "--json", cwd=tmp_path, env={"T": "x"})
    assert result.returncode == 1
    line = lines_of(result)[("hq", "connection")]
    assert line.startswith("failed: DNS: cannot resolve no-such-host.invalid")
    assert "base_url" in line


def test_refused_port_names_host_and_port(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    port = free_port()
    write(tmp_path, source_toml("hq", "doorflow", f"http://127.0.0.1:{port}", token_env="T"))
    result = syncd("--database-url", url, "check", "--json", cwd=tmp_path, env={"T": "x"})
    assert result.returncode == 1
    line = lines_of(result)[("hq", "connection")]
    assert line.startswith(f"failed: refused: nothing accepts connections on 127.0.0.1:{port}")


def test_https_to_an_http_port_and_http_to_an_https_port(
    tmp_path: Path, doorflow: DoorFlowSimulator
) -> None:
    url = migrated(tmp_path)
    cert, key = self_signed(tmp_path)
    plain_port = doorflow.base_url.rsplit(":", 1)[1]
    with TlsFront(doorflow.base_url, cert, key) as front:
        tls_port = front.url.rsplit(":", 1)[1]
        write(
            tmp_path,
            source_toml(
                "https-to-http", "doorflow", f"https://127.0.0.1:{plain_port}", token_env="T"
            ),
            source_toml("http-to-https", "doorflow", f"http://127.0.0.1:{tls_port}", token_env="T"),
        )
        result = syncd("--database-url", url, "check", "--json", cwd=tmp_path, env={"T": TOKEN})
    assert result.returncode == 1
    checks = lines_of(result)
    https_line = checks[("https-to-http", "connection")]
    assert "HTTPS spoken to an HTTP port" in https_line
    assert f"http://127.0.0.1:{plain_port}" in https_line
    http_line = checks[("http-to-https", "connection")]
    assert "HTTP spoken to an HTTPS port" in http_line
    assert f"https://127.0.0.1:{tls_port}" in http_line


def test_missing_events_scope(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    with DoorFlowSimulator(seed=4, history=5, oauth_scope="account.person.readonly") as sim:
        write(tmp_path, oauth_source("hq", sim.base_url))
        result = syncd("--database-url", url, "check", "--json", cwd=tmp_path, env=oauth_env(sim))
    assert result.returncode == 1
    checks = lines_of(result)
    assert checks[("hq", "credentials")].startswith("ok")
    line = checks[("hq", "scope")]
    assert line.startswith("failed: the grant lacks the events scope")
    assert "account.person.readonly" in line
    assert "account.event.access.readonly" in line


def test_skewed_clock_is_a_warning(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    with DoorFlowSimulator(seed=4, history=5, token=TOKEN) as sim:
        sim.date_skew = -600.0  # the vendor's clock is ten minutes behind ours
        write(tmp_path, source_toml("hq", "doorflow", sim.base_url, token_env="T"))
        result = syncd("--database-url", url, "check", cwd=tmp_path, env={"T": TOKEN})
    assert result.returncode == 0, "a warning, not a failure"
    line = next(line for line in result.stdout.splitlines() if line.split()[:2] == ["hq", "clock"])
    assert line.split()[2] == "warning"
    assert "ahead of the vendor's Date" in line
    assert "NTP" in line


def test_empty_database_says_migrate_and_creates_no_file(
    tmp_path: Path, doorflow: DoorFlowSimulator
) -> None:
    write(tmp_path, source_toml("hq", "doorflow", doorflow.base_url, token_env="T"))
    result = syncd("check", cwd=tmp_path, env={"T": TOKEN})
    assert result.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syncd.toml"]
    schema = next(line for line in result.stdout.splitlines() if "schema" in line)
    assert schema.split()[:3] == ["database", "schema", "failed"]
    assert "`syncd migrate` will create it" in schema


def test_empty_postgres_database(tmp_path: Path, empty_pg_url: str) -> None:
    result = syncd("--database-url", empty_pg_url, "check", "--json", cwd=tmp_path)
    assert result.returncode == 1
    checks = lines_of(result)
    assert checks[("database", "reachable")].startswith("ok")
    assert checks[("database", "schema")] == "failed: empty: `syncd migrate` will create it"


def test_unreachable_database(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://nobody@127.0.0.1:{port}/syncd"
    result = syncd("--database-url", url, "check", "--json", cwd=tmp_path)
    assert result.returncode == 1
    line = lines_of(result)[("database", "reachable")]
    assert line.startswith("failed: cannot reach the database")
    assert "database_url" in line
