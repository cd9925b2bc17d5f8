"""Smoke test of ``bench/index_plans.py``'s load-cost part: every index of ``events``
at head, and the three migration 0011 replaced, each get a row.

Small (2,000 rows, one run) so it fits in CI; the figures are not checked.
The 10 M row plans part takes minutes and runs on demand only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_every_index_gets_its_load_cost() -> None:
    url = os.environ.get("SYNCD_TEST_DATABASE_URL")
    if not url:
        pytest.skip("no PostgreSQL (set SYNCD_TEST_DATABASE_URL or run scripts/test)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "index_plans.py"), "--admin-url", url,
         "--skip-plans", "--cost-rows", "2000", "--runs", "1"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for name in (
        "ix_events_occurred_at, before 0011",
        "ix_events_occurred_at, 0011",
        "ix_events_person_id_occurred_at, 0011",
        "ix_events_door_id_occurred_at, 0011",
        "ix_events_source_occurred_at",
        "ix_events_door_state_latest",
        "all, before 0011",
        "all, head",
    ):
        assert any(name in line for line in lines), result.stdout
