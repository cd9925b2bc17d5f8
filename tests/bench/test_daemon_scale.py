"""Smoke test of ``bench/daemon_scale.py`` in its reduced form (issue 20): 100 sources
(bearer, API key, OAuth, IntServ, five time zones, webhooks), one replica, then two.

Small enough for CI (about two minutes). It checks what does not depend on how
busy the machine is: the daemon is ready within the contract's 60 s, no pass
fails, no source falls behind, no webhook event is lost, two replicas cost
the vendors what one does, RSS stays within the target, and the BI calendar
does not grow with the sources. CPU is printed, not checked (CI machines are
shared); the full run's figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_a_hundred_sources_one_replica_then_two(tmp_path: Path) -> None:
    url = os.environ.get("SYNCD_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("SYNCD_TEST_DATABASE_URL is not set: the benchmark smoke test runs in CI")
        pytest.skip("no PostgreSQL (set SYNCD_TEST_DATABASE_URL or run scripts/test)")
    figures = tmp_path / "figures.json"
    args = ["--sources", "100", "--interval", "10", "--warmup", "15", "--measure", "30"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "daemon_scale.py"), *args,
         "--database-url", url, "--json", str(figures)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    got = json.loads(figures.read_text())
    one, two = got["one"], got["two"]
    assert got["startup_s"] <= 60, result.stdout
    assert one["passes"]["failed"] == 0, result.stdout
    assert two["passes"]["failed"] == 0, result.stdout
    assert got["behind"] == [], result.stdout
    assert one["lost"] == 0, result.stdout
    assert two["lost"] == 0, result.stdout
    assert two["passes"]["skipped"] > 0, result.stdout  # B met A's passes and left them

    def per_interval(phase: dict[str, float]) -> float:
        return phase["requests"] / 99 / (phase["wall"] / 10)

    # A quiet pass is about one request; a second replica adds none (20 % for drift).
    assert 0.5 <= per_interval(one) <= 1.5, result.stdout
    assert per_interval(two) <= 1.2 * per_interval(one), result.stdout
    assert max(one["peak_rss_mb"] + two["peak_rss_mb"]) <= 300, result.stdout
    # five zones' calendars, whatever the number of sources
    assert got["calendar_mb"] < 60, result.stdout
    assert "vendor requests per source per interval" in result.stdout
    assert [code for code, _s in got["stops"]] == [0, 0], result.stdout
