"""Every SQL example of docs/sql.md runs on PostgreSQL and SQLite, and answers on the demo's data.

The database is filled as a reader fills theirs: ``syncd demo --passes 1``
in a subprocess. A block whose first line is ``-- PostgreSQL`` or
``-- SQLite`` runs on that database only; every other block on both. Each
answers with rows, except the one that lists failing sources (none are).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.db.engine import create_engine

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
BLOCK = re.compile(r"^```sql\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Blocks that may rightly answer nothing on a healthy demo database.
EMPTY_WHEN_HEALTHY = ("have not succeeded in the last hour",)


def examples() -> list[str]:
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8, "docs/sql.md lost its examples?"
    return blocks


def dialect_of(block: str) -> str | None:
    first = block.splitlines()[0]
    if first.startswith("-- PostgreSQL"):
        return "postgresql"
    if first.startswith("-- SQLite"):
        return "sqlite"
    return None


def demo_into(url: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    result = subprocess.run(
        [sys.executable, "-m", "syncd.cli", "--database-url", url, "demo", "--passes", "1"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def demo_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/syncd-demo.db"
    else:
        url = str(request.getfixturevalue("empty_pg_url"))
    demo_into(url, tmp_path)
    return url


def test_every_example_runs_and_answers_on_the_demo_data(demo_database: str) -> None:
    engine = create_engine(demo_database)
    dialect = engine.dialect.name
    ran = 0
    try:
        for block in examples():
            wanted = dialect_of(block)
            if wanted is not None and wanted != dialect:
                continue
            with engine.connect() as conn:
                try:
                    rows = conn.exec_driver_sql(block.strip().rstrip(";")).all()
                except sa.exc.DBAPIError as exc:
                    pytest.fail(f"{dialect}: {exc.orig}\n{block}")
            if not any(marker in block for marker in EMPTY_WHEN_HEALTHY):
                assert rows, f"{dialect}: no rows on the demo's data:\n{block}"
            ran += 1
    finally:
        engine.dispose()
    assert ran >= 8
