"""The command line as a user meets it: real databases, real processes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from syncd.db.engine import create_engine
from syncd.db.store import Store
from tests.factories import T0, event


def syncd(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
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


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("syncd: ")
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in result.stderr


def test_migrate_creates_the_schema_on_an_empty_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    first = syncd("--database-url", url, "migrate")
    assert first.returncode == 0, first.stderr
    assert "migrated from empty to revision" in first.stdout
    again = syncd("--database-url", url, "migrate")
    assert "already current" in again.stdout


def test_migrate_creates_the_schema_on_an_empty_postgres(empty_pg_url: str) -> None:
    # A database with no tables at all, given in the plain postgresql:// form
    # the contract promises; then the command is idempotent.
    plain = empty_pg_url.replace("postgresql+psycopg://", "postgresql://")
    engine = create_engine(empty_pg_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        result = syncd("--database-url", plain, "migrate")
        assert result.returncode == 0, result.stderr
        assert "migrated from empty to revision" in result.stdout
        assert {"events", "sync_state", "rejected_events"} <= set(
            sa.inspect(engine).get_table_names()
        )
        again = syncd("--database-url", plain, "migrate")
        assert "schema already current" in again.stdout
    finally:
        engine.dispose()


def test_the_default_database_is_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    result = syncd("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "syncd.db").exists()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_status_shows_each_source(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine_fixture = "pg_engine" if backend == "postgresql" else "sqlite_engine"
    store = Store(request.getfixturevalue(engine_fixture))
    store.write_page("hq", [event(1), event(2)], [], {"watermark": "2026-01-05T09:00:02Z"}, T0)
    store.record_failure("hq", "AuthError: HTTP 401", T0)
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[[sources]]\nname = "hq"\nkind = "doorflow"\nbase_url = "https://api.doorflow.com"\n'
        'token_env = "DF_TOKEN"\n'
    )
    env = {"DF_TOKEN": "secret-value"}
    result = syncd("--config", str(config), "--database-url", url, "status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    (row,) = orjson.loads(result.stdout)["sources"]
    assert row["source"] == "hq"
    assert row["kind"] == "doorflow"
    assert row["rows"] == 2
    assert row["last_error"] == "AuthError: HTTP 401"
    assert row["consecutive_failures"] == 1
    assert row["cursor"] == {"watermark": "2026-01-05T09:00:02Z"}
    assert row["lag_seconds"] > 0
    table = syncd("--config", str(config), "--database-url", url, "status", env=env)
    assert table.returncode == 0
    assert "hq" in table.stdout
    assert "secret-value" not in table.stdout + result.stdout


def test_status_on_an_unmigrated_database_says_what_to_do(tmp_path: Path) -> None:
    # An existing database without the schema (a missing SQLite file is
    # "nothing synced yet", exit 0: status creates no file).
    (tmp_path / "empty.db").touch()
    result = syncd("--database-url", f"sqlite:///{tmp_path}/empty.db", "status")
    assert_one_clear_line(result, "syncd migrate")


def test_an_unreachable_database_is_one_line() -> None:
    result = syncd("--database-url", "postgresql://nobody:hunter2@127.0.0.1:9/none", "migrate")
    assert_one_clear_line(result, "cannot reach the database")
    assert "hunter2" not in result.stderr


def test_a_broken_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text('[[sources]]\nname = "hq"\nkind = "doorflow"\ninterval = -5\n')
    result = syncd("--config", str(config), "status")
    # Every problem at once (issue 22), each its own clear line.
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "syncd: sources[hq].base_url is required",
        "syncd: sources[hq].interval must be a number of seconds > 0, got -5",
        "syncd: sources[hq]: no credentials for doorflow: set one of: token_env/token_file "
        "(bearer token); api_key_env/api_key_file; client_id_env + client_secret_env + "
        "refresh_token_env (OAuth; or their _file forms; refresh_token_env may be left out "
        "once `syncd auth doorflow` stored a token)",
    ]


def test_an_unknown_source_name_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[[sources]]\nname = "hq"\nkind = "doorflow"\nbase_url = "https://x.test"\n'
        'token_env = "T"\n'
    )
    url = f"sqlite:///{tmp_path}/db.db"
    result = syncd("--config", str(config), "--database-url", url, "sync", "--source", "hk",
                   env={"T": "x"})  # fmt: skip
    assert_one_clear_line(result, "unknown source 'hk'")


def test_sync_without_sources_says_how_to_start(tmp_path: Path) -> None:
    result = syncd("--database-url", f"sqlite:///{tmp_path}/db.db", "sync", cwd=tmp_path)
    assert_one_clear_line(result, "no sources configured")
