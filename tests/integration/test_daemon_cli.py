"""``syncd run`` start-up errors: one line on stderr, exit 1, nothing logged before it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.db import migrate
from syncd.db.engine import create_engine
from tests.integration.daemonhelpers import free_port, running_daemon, source_toml, write_config


def _run(config: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "T": "dft_token_for_cli_tests"}
    env.pop("SYNCD_LOG_LEVEL", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "syncd.cli",
            "--config",
            str(config),
            "--database-url",
            url,
            "run",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    source = source_toml("hq", "doorflow", "http://127.0.0.1:9", token_env="T")
    return write_config(tmp_path / "syncd.toml", free_port(), [source])


def test_an_empty_schema_is_refused_with_one_line(config: Path, tmp_path: Path) -> None:
    done = _run(config, f"sqlite:///{tmp_path}/empty.db")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "syncd: the database has no syncd schema: run `syncd migrate` first, "
        "or `syncd run --migrate`"
    ]


def test_an_outdated_schema_is_refused_with_one_line(config: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    engine = create_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as conn:  # a schema this syncd does not have at head
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0123456789ab'"))
    engine.dispose()
    done = _run(config, url)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("syncd: the database is at revision 0123456789ab")


@pytest.mark.parametrize(
    ("listen", "message"),
    [("nonsense", "--listen must be"), ("127.0.0.1:99999", "--listen port must be")],
)
def test_a_bad_listen_address_is_one_line(
    config: Path, sqlite_url: str, listen: str, message: str
) -> None:
    done = _run(config, sqlite_url, "--listen", listen)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr


def test_a_port_in_use_is_one_line_after_the_schema_check(config: Path, sqlite_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run(config, sqlite_url, "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"syncd: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in done.stderr


def test_a_second_daemon_on_one_sqlite_file_is_refused(
    config: Path, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    with running_daemon(
        config, sqlite_url, port, {"T": "x"}, extra_args=("--listen", f"127.0.0.1:{port}")
    ) as first:
        done = _run(config, sqlite_url, "--listen", f"127.0.0.1:{free_port()}")
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"syncd: another `syncd run` is using {tmp_path}/syncd.db: on SQLite one daemon "
            "runs per database (use PostgreSQL to run several)"
        ]
        assert first.stop() == 0
