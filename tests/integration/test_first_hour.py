"""A new operator's first hour (issue 22, "What was seen"): each item as a user meets it.

Commands run as a user runs them: ``syncd`` in a subprocess, in a temporary
directory, with and without a ``syncd.toml``, against the simulators.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from syncd.db import migrate as migrations
from syncd.db.engine import create_engine
from syncd.db.store import Store
from syncd.simulators import DoorFlowSimulator, IntServSimulator
from tests.integration.daemonhelpers import free_port, source_toml

TOKEN = "df-first-hour-token-51c0"
API_KEY = "is-first-hour-key-e07d"


def syncd(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    return subprocess.run(
        [sys.executable, "-m", "syncd.cli", *args],
        env={**base, "COLUMNS": "80", **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def doorflow() -> Iterator[DoorFlowSimulator]:
    with DoorFlowSimulator(seed=8, history=40, history_days=1, token=TOKEN) as sim:
        yield sim


@pytest.fixture(scope="module")
def intserv() -> Iterator[IntServSimulator]:
    with IntServSimulator(seed=8, history=40, history_days=1, api_key=API_KEY) as sim:
        yield sim


def two_sources(tmp_path: Path, doorflow: str, intserv: str, extra: str = "") -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(
        source_toml("hq", "doorflow", doorflow, token_env="DF_TOKEN", max_retries=1)
        + "\n"
        + source_toml("stockholm", "intserv", intserv, api_key_env="IS_KEY", max_retries=1)
        + extra
    )
    return path


# -- 1. the demo on its own database ------------------------------------------------


def test_demo_ignores_the_configured_database_and_its_secrets(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    (tmp_path / "syncd.toml").write_text(
        f'database_url = "sqlite:///{real}"\n\n'
        + source_toml("hq", "doorflow", "https://api.doorflow.com", token_env="DF_TOKEN")
    )
    env_db = tmp_path / "env.db"
    result = syncd(
        "demo", "--passes", "2", cwd=tmp_path, env={"SYNCD_DATABASE_URL": f"sqlite:///{env_db}"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "syncd-demo.db").is_file()
    assert not real.exists()
    assert not env_db.exists()
    assert "Your data is in sqlite:///syncd-demo.db" in result.stdout
    # 9: no log lines between the report's lines, the unlisted codes said, plurals.
    assert result.stderr == "", result.stderr
    assert "remote-control events (codes 50-63) that its event list cannot return" in result.stdout
    assert " 1 pages" not in result.stdout


def test_demo_database_url_option_is_honoured(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.db"
    result = syncd("--database-url", f"sqlite:///{chosen}", "demo", "--passes", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert chosen.is_file()
    assert not (tmp_path / "syncd-demo.db").exists()


# -- 2. secrets only for the sources a command touches -----------------------------


def test_commands_need_only_the_secrets_of_the_sources_they_touch(
    tmp_path: Path, doorflow: DoorFlowSimulator, intserv: IntServSimulator
) -> None:
    two_sources(tmp_path, doorflow.base_url, intserv.base_url)
    only_intserv = {"IS_KEY": API_KEY}
    for command in (["migrate"], ["status"], ["status", "--json"]):
        result = syncd(*command, cwd=tmp_path, env={})
        assert result.returncode == 0, (command, result.stderr)
    synced = syncd("sync", "--source", "stockholm", cwd=tmp_path, env=only_intserv)
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.startswith("stockholm: ok, 40 new")
    everything = syncd("sync", cwd=tmp_path, env=only_intserv)
    assert everything.returncode == 1
    assert everything.stderr.strip() == (
        "syncd: sources[hq].token_env: environment variable DF_TOKEN is not set"
    )
    backfill = syncd(
        "backfill", "--source", "hq", "--since", "2026-01-01", cwd=tmp_path, env=only_intserv
    )
    assert backfill.returncode == 1
    assert "DF_TOKEN is not set" in backfill.stderr


# -- 3. connection errors name host and cause ---------------------------------------


def test_connection_failures_name_host_cause_and_fix(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "syncd.toml").write_text(
        source_toml("refused", "doorflow", f"http://127.0.0.1:{port}", token_env="T", max_retries=1)
        + "\n"
        + source_toml("dns", "intserv", "https://no-such-host.invalid", api_key_env="T").replace(
            "\n", "\nmax_retries = 1\n", 1
        )
    )
    result = syncd("sync", cwd=tmp_path, env={"T": "x"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0] == (
        f"syncd: refused failed: connection failed: refused: nothing accepts connections on "
        f"127.0.0.1:{port}: check the port in base_url and that the vendor (or your proxy) is up"
    )
    assert lines[1].startswith("syncd: dns failed: connection failed: DNS: cannot resolve")
    assert "no-such-host.invalid" in lines[1]
    assert "ConnectError" not in result.stderr


# -- 5. start in the future; a date-only start ----------------------------------------


@pytest.mark.parametrize("kind", ["doorflow", "intserv"])
def test_start_in_the_future_is_a_config_error(tmp_path: Path, kind: str) -> None:
    (tmp_path / "syncd.toml").write_text(
        source_toml("site", kind, "http://127.0.0.1:9", token_env="T", start="2999-01-01")
    )
    result = syncd("sync", cwd=tmp_path, env={"T": "x"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "syncd: sources[site].start 2999-01-01T00:00:00Z is in the future: a pass reads from "
        "start up to now and would find nothing until then; use a past time, or leave start "
        "out (7 days back)"
    )


def test_date_only_start_reads_from_that_midnight(
    tmp_path: Path, doorflow: DoorFlowSimulator
) -> None:
    (tmp_path / "syncd.toml").write_text(
        source_toml("hq", "doorflow", doorflow.base_url, token_env="T", start="2020-01-01")
    )
    result = syncd("sync", cwd=tmp_path, env={"T": TOKEN})
    assert result.returncode == 0, result.stderr
    assert re.match(r"hq: ok, [1-9]\d* new", result.stdout), result.stdout


# -- 6. read-only commands create nothing ---------------------------------------------


@pytest.mark.parametrize("with_config", [False, True], ids=["empty-dir", "with-syncd.toml"])
def test_read_only_commands_create_no_file(tmp_path: Path, with_config: bool) -> None:
    if with_config:
        (tmp_path / "syncd.toml").write_text(
            source_toml("hq", "doorflow", "http://127.0.0.1:9", token_env="UNSET_T")
        )
    before = files(tmp_path)
    status = syncd("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "no database file yet" in status.stdout
    assert syncd("status", "--json", cwd=tmp_path).returncode == 0
    assert syncd("--help", cwd=tmp_path).returncode == 0
    assert syncd("check", "--help", cwd=tmp_path).returncode == 0
    syncd("check", cwd=tmp_path)
    assert files(tmp_path) == before


def test_run_without_migrate_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "syncd.toml").write_text(
        f'[daemon]\nlisten = "127.0.0.1:{free_port()}"\n\n'
        + source_toml("hq", "doorflow", "http://127.0.0.1:9", token_env="T")
    )
    result = syncd("run", cwd=tmp_path, env={"T": "x"})
    assert result.returncode == 1
    assert "run `syncd migrate` first, or `syncd run --migrate`" in result.stderr
    assert files(tmp_path) == ["syncd.toml"]
    # An existing but empty SQLite file: refused without a lock file left behind.
    (tmp_path / "syncd.db").touch()
    again = syncd("run", cwd=tmp_path, env={"T": "x"})
    assert again.returncode == 1
    assert not (tmp_path / "syncd.db.daemon.lock").exists()


# -- 8. *_env secrets stripped like *_file -------------------------------------------


def test_env_secret_with_a_trailing_newline_works(
    tmp_path: Path, doorflow: DoorFlowSimulator
) -> None:
    (tmp_path / "syncd.toml").write_text(
        source_toml("hq", "doorflow", doorflow.base_url, token_env="T", max_retries=1)
    )
    result = syncd("sync", cwd=tmp_path, env={"T": f"  {TOKEN}\n"})
    assert result.returncode == 0, result.stderr
    assert "hq: ok" in result.stdout


# -- 9. output: status at 80 columns, JSON scope, every config problem --------------


def test_status_reads_at_80_columns(
    tmp_path: Path, doorflow: DoorFlowSimulator, intserv: IntServSimulator
) -> None:
    url = f"sqlite:///{tmp_path}/syncd.db"
    engine = create_engine(url)
    migrations.upgrade(engine)
    store = Store(engine)
    from datetime import UTC, datetime

    long_error = "AuthError: HTTP 401 from GET /api/3/events: unauthorized - " + "x" * 120
    store.record_failure("retired-site", long_error, datetime.now(UTC))
    engine.dispose()
    two_sources(tmp_path, doorflow.base_url, intserv.base_url)
    env = {"DF_TOKEN": TOKEN, "IS_KEY": API_KEY}
    assert syncd("sync", "--source", "stockholm", cwd=tmp_path, env=env).returncode == 0

    result = syncd("status", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert all(len(line) <= 80 for line in table), result.stdout
    retired = next(line for line in table if "retired-site" in line)
    assert "not configured" in retired
    assert " - " not in retired.replace("│", " ").split("not configured")[0]
    assert retired.split("│")[5].strip() == "-", "no lag beside 'last success never'"
    error_lines = [line for line in result.stdout.splitlines() if "last error" in line]
    assert error_lines == [f"retired-site last error ({error_lines[0][25:44]}): {long_error}"]

    document = orjson.loads(syncd("status", "--json", cwd=tmp_path).stdout)
    stockholm = next(s for s in document["sources"] if s["source"] == "stockholm")
    assert stockholm["cursor"]["scope"] == {}, "IntServ's scope is JSON, not a JSON string"


def test_every_config_problem_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "syncd.toml").write_text(
        textwrap.dedent(
            """
            [[sources]]
            name = "hq"
            kind = "doorflow"
            base_url = "https://api.doorflow.com"
            token_env = "T"
            interval = -1

            [[sources]]
            name = "stockholm"
            kind = "intsrv"
            base_url = "https://api.intserv.se"
            api_key_env = "K"
            """
        )
    )
    result = syncd("status", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "syncd: sources[hq].interval must be a number of seconds > 0, got -1",
        "syncd: sources[stockholm].kind 'intsrv' is not a known vendor (known: doorflow, "
        "intserv); did you mean 'intserv'?",
    ]


# -- 10. the simulator answers 401 to a non-ASCII Authorization header ---------------


def test_simulators_answer_401_to_non_ascii_authorization(
    doorflow: DoorFlowSimulator, intserv: IntServSimulator
) -> None:
    header = {"Authorization": "Bearer tök€n".encode()}
    with httpx.Client(trust_env=False) as client:
        df = client.get(f"{doorflow.base_url}/api/3/events", headers=header)
        basic = client.get(
            f"{doorflow.base_url}/api/3/events", headers={"Authorization": "Basic w7Z4Og=="}
        )
        isv = client.post(f"{intserv.base_url}/v1/events/list", headers=header, json={})
    assert (df.status_code, basic.status_code, isv.status_code) == (401, 401, 401)
