"""Smoke test of ``bench/compare.py``: every contender runs, loads every event, is reported.

Small (5,000 events) so it fits in CI; the figures themselves are not
checked, only that the benchmark still measures what it claims: each
contender's table verified (the script exits non-zero otherwise), a row per
contender with its vendor requests, and the ratios.

The Singer contender is part of it: ``compare.py`` makes its venv
(``bench/.venv-singer``, ~20 s once, from PyPI like the project's own
dependencies) when it is missing. A machine that cannot make it (no PyPI)
gets the one line saying Singer was skipped: a failure in CI, a skip of the
Singer assertions elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def admin_url() -> str:
    url = os.environ.get("SYNCD_TEST_DATABASE_URL")
    in_ci = bool(os.environ.get("CI"))
    if not url:
        if in_ci:
            pytest.fail("SYNCD_TEST_DATABASE_URL is not set: the benchmark smoke test runs in CI")
        pytest.skip("no PostgreSQL (set SYNCD_TEST_DATABASE_URL or run scripts/test)")
    if importlib.util.find_spec("dlt") is None:
        if in_ci:
            pytest.fail("dlt is not installed: scripts/test installs the bench extra")
        pytest.skip("dlt is not installed (pip install -e '.[bench]')")
    return url


def compare(admin_url: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--database-url", admin_url, *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def row(output: str, name: str) -> list[str]:
    match = re.search(rf"^{name} +(.*)$", output, re.MULTILINE)
    assert match is not None, output
    return match.group(1).split()


def test_doorflow_every_contender_loads_every_event(admin_url: str) -> None:
    output = compare(admin_url, "--events", "5000")
    assert re.search(r"cold sync of [\d,]+ doorflow events", output)
    skipped = re.search(r"^singer: skipped, .+$", output, re.MULTILINE)
    if skipped and os.environ.get("CI"):
        pytest.fail(f"the Singer contender did not run in CI: {skipped.group(0)}")
    names = ["download", "floor", "dlt", "syncd"] + ([] if skipped else ["singer"])
    for name in names:
        seconds, _rate, _cpu, _db_cpu, rss, requests = row(output, name)
        assert float(seconds) > 0
        assert float(rss) > 0
        # 5 pages of 1000; dlt's page-number paging stops on an empty page,
        # the Singer tap's on the Total header.
        assert int(requests) == (6 if name == "dlt" else 5), output
    assert re.search(r"^syncd / dlt: \d+\.\d\dx events/s$", output, re.MULTILINE)
    assert re.search(r"^syncd / floor: \d+\.\d\dx events/s$", output, re.MULTILINE)
    # syncd's table limit: syncd's own rows, COPYed server-side into events' shape.
    seconds, _rate, _cpu, _db_cpu, _rss, requests = row(output, "limit")
    assert float(seconds) > 0
    assert int(requests) == 0
    assert re.search(r"^syncd / table limit: \d+\.\d\dx events/s$", output, re.MULTILINE)
    if skipped:
        pytest.skip(f"Singer assertions: {skipped.group(0)}")
    assert re.search(r"^syncd / singer: \d+\.\d\dx events/s$", output, re.MULTILINE)
    assert re.search(r"^\(singer: singer-sdk [\d.]+, meltanolabs-target-postgres [\d.]+, "
                     r"load_method upsert", output, re.MULTILINE), output  # fmt: skip


def test_singer_skipped_in_one_line_when_its_venv_cannot_be_made(
    admin_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "SYNCD_BENCH_SINGER_VENV": str(blocker / "venv")}
    output = compare(admin_url, "--events", "1000", "--only", "floor,singer", env=env)
    assert row(output, "floor")
    assert not re.search(r"^singer +\d", output, re.MULTILINE), output
    lines = [line for line in output.splitlines() if "singer" in line.lower()]
    assert len(lines) == 1, output
    assert lines[0].startswith("singer: skipped, bench/singer/setup could not make"), output


def test_skip_leaves_a_contender_out(admin_url: str) -> None:
    output = compare(admin_url, "--events", "1000", "--only", "floor,singer", "--skip", "singer")
    assert row(output, "floor")
    assert "singer" not in output, output


def test_intserv_dlt_with_continuation_keys(admin_url: str) -> None:
    output = compare(admin_url, "--events", "3000", "--kind", "intserv", "--only", "dlt,syncd")
    assert "cold sync of 3,000 intserv events" in output  # IntServ lists every event
    assert int(row(output, "dlt")[-1]) == 3
    assert int(row(output, "syncd")[-1]) == 3
    assert "syncd / dlt:" in output
    assert row(output, "limit")
    assert "syncd / table limit:" in output


def test_no_table_limit_without_syncd(admin_url: str) -> None:
    output = compare(admin_url, "--events", "1000", "--only", "floor")
    assert not re.search(r"^limit ", output, re.MULTILINE), output
    assert "table limit" not in output, output
