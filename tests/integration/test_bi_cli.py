"""The configuration reaches the ``sources`` table through ``syncd migrate`` and ``syncd sync``."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.db.engine import create_engine
from tests.integration.test_cli import syncd

CONFIG = """
[[sources]]
name = "hq"
kind = "doorflow"
base_url = "http://127.0.0.1:9"
token_env = "DF_TOKEN"
timeout = 1
max_retries = 1
timezone = "{zone}"
business_hours = "{hours}"
"""


def settings_in_db(url: str) -> list[tuple[object, ...]]:
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.source, s.kind, s.timezone, s.business_hours_start, "
                "s.business_hours_end, (SELECT count(*) FROM zone_local_days d "
                "WHERE d.timezone = s.timezone AND d.day = '2026-10-25') FROM sources s"
            )
        )
        result = [tuple(str(v) for v in row) for row in rows]
    engine.dispose()
    return result


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migrate_and_sync_write_the_configured_settings(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "postgresql":
        request.getfixturevalue("pg_engine")  # empties the tables
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path}/bi.db"
    config = tmp_path / "syncd.toml"
    config.write_text(CONFIG.format(zone="Europe/Stockholm", hours="07:00-18:00"))
    args = ("--config", str(config), "--database-url", url)
    env = {"DF_TOKEN": "x"}
    migrated = syncd(*args, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    # 2026-10-25 in Stockholm: cut at UTC midnight and at the daylight-saving change
    assert [(*row[:3], row[3][:8], row[4][:8], row[5]) for row in settings_in_db(url)] == [
        ("hq", "doorflow", "Europe/Stockholm", "07:00:00", "18:00:00", "3")
    ]
    config.write_text(CONFIG.format(zone="Asia/Kolkata", hours="22:00-06:00"))
    synced = syncd(*args, "sync", env=env)  # the vendor is unreachable: the pass fails ...
    assert synced.returncode == 1
    got = settings_in_db(url)  # ... but the settings were written before it
    assert [(*row[:3], row[3][:8], row[4][:8], row[5]) for row in got] == [
        ("hq", "doorflow", "Asia/Kolkata", "22:00:00", "06:00:00", "2")  # UTC midnight
    ]
