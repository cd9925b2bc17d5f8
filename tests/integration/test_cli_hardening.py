"""User mistakes and crashes at the command line: one line, exit 1, the other sources go on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd import cli, engine
from syncd.db.engine import create_engine
from syncd.db.store import Store
from syncd.simulators import DoorFlowSimulator
from tests.integration.test_cli import assert_one_clear_line, syncd


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql+psycopg2://u@127.0.0.1/x", "'postgresql+psycopg2'"),
        ("mysql://u@127.0.0.1/x", "'mysql'"),
    ],
)
def test_a_url_for_a_driver_syncd_does_not_ship(url: str, named: str) -> None:
    result = syncd("--database-url", url, "migrate")
    assert_one_clear_line(result, named, "postgresql://", "sqlite:///")


def test_a_home_directory_of_nobody(tmp_path: Path) -> None:
    assert_one_clear_line(syncd("--config", "~nosuchuser-syncd/x.toml", "sync"), "no such user")
    url = "sqlite:///~nosuchuser-syncd/x.db"
    assert_one_clear_line(syncd("--database-url", url, "migrate"), "no such user")


@pytest.mark.parametrize("command", ["migrate", "sync", "status"])
def test_a_database_migrated_by_a_newer_syncd(
    sqlite_url: str, command: str, tmp_path: Path
) -> None:
    db = create_engine(sqlite_url)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    db.dispose()
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[[sources]]\nname = "hq"\nkind = "doorflow"\nbase_url = "http://127.0.0.1:1"\n'
        'token_env = "DF_TOKEN"\n'
    )
    env = {"DF_TOKEN": "t"}
    result = syncd("--config", str(config), "--database-url", sqlite_url, command, env=env)
    assert_one_clear_line(result, "revision 0999", "newer syncd")


def test_a_password_in_the_query_is_never_printed(pg_url: str, tmp_path: Path) -> None:
    url = f"{pg_url}?password=hunter2-query"
    migrated = syncd("--database-url", url, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "password=***" in migrated.stdout
    unreachable = "postgresql://nobody@127.0.0.1:1/x?password=hunter2-query"
    failed = syncd("--database-url", unreachable, "migrate")
    assert_one_clear_line(failed, "password=***")
    assert "hunter2" not in migrated.stdout + migrated.stderr + failed.stdout + failed.stderr


@pytest.fixture
def doorflow_sim() -> Iterator[DoorFlowSimulator]:
    with DoorFlowSimulator(seed=3, history=40, history_days=1) as sim:
        yield sim


def test_an_unexpected_exception_fails_only_its_source(
    sqlite_url: str,
    tmp_path: Path,
    doorflow_sim: DoorFlowSimulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        "".join(
            f'[[sources]]\nname = "{name}"\nkind = "doorflow"\n'
            f'base_url = "{doorflow_sim.base_url}"\n'
            'token_env = "DF_TOKEN"\nstart = "2000-01-01T00:00:00Z"\n'
            for name in ("broken", "fine")
        )
    )
    monkeypatch.setenv("DF_TOKEN", doorflow_sim.token)
    real = engine.run_pass

    def run_pass(store: Store, source: Any, **kwargs: Any) -> Any:
        if source.name == "broken":
            raise ZeroDivisionError("a bug nobody foresaw")
        return real(store, source, **kwargs)

    monkeypatch.setattr(engine, "run_pass", run_pass)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--config", str(config), "--database-url", sqlite_url, "sync"])
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert "fine: ok, 40 new" in out
    assert err.strip() == "syncd: broken failed: ZeroDivisionError: a bug nobody foresaw"
    db = create_engine(sqlite_url)
    state = Store(db).load_state("broken")
    db.dispose()
    assert state.last_error == "ZeroDivisionError: a bug nobody foresaw"
    assert state.consecutive_failures == 1
