"""``syncd reconcile`` and the reconciliation ``syncd sync`` runs, as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from syncd.simulators import DoorFlowSimulator, IntServSimulator


def _config(tmp_path: Path, *sources: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text("\n".join(sources))
    return path


def _doorflow(sim: DoorFlowSimulator, start: datetime) -> str:
    return (
        f'[[sources]]\nname = "hq"\nkind = "doorflow"\nbase_url = "{sim.base_url}"\n'
        f'token_env = "DF_TOKEN"\nstart = "{start.isoformat()}"\n'
    )


def _syncd(config: Path, db: str, *args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DF_TOKEN": token, "IS_KEY": token}
    return subprocess.run(
        [sys.executable, "-m", "syncd.cli", "--config", str(config), "--database-url", db, *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_reconcile_finds_a_late_upload_and_says_what_it_did(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/syncd.db"
    with DoorFlowSimulator(seed=9, history=3000, history_days=3) as sim:
        config = _config(tmp_path, _doorflow(sim, datetime.now(UTC) - timedelta(days=4)))
        assert _syncd(config, db, "sync", token=sim.token).returncode == 0
        sim.late_share, sim.late_delay = 1.0, 2 * 86_400
        sim.generate(3)  # three on time (the next pass's), three two days late
        done = _syncd(config, db, "reconcile", "--source", "hq", "--json", token=sim.token)
        assert done.returncode == 0, done.stderr
        report = orjson.loads(done.stdout)
        assert report["found"] >= 3
        assert report["requests"] >= 2
        human = _syncd(config, db, "reconcile", "--source", "hq", token=sim.token)
        assert human.returncode == 0
        assert re.search(r"\d+ spans? checked", human.stdout)
        assert "0 missing events found" in human.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "nope"], "unknown source 'nope'"),
        (["--source", "hq", "--since", "yesterday"], "--since 'yesterday' is not an ISO 8601"),
        (["--source", "hq", "--since", "2030-01-01", "--until", "2029-01-01"], "before --until"),
    ],
)
def test_reconcile_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    db = f"sqlite:///{tmp_path}/syncd.db"
    with DoorFlowSimulator(seed=9, history=10) as sim:
        config = _config(tmp_path, _doorflow(sim, datetime.now(UTC) - timedelta(days=1)))
        done = _syncd(config, db, "reconcile", *args, token=sim.token)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert message in line
    assert "Traceback" not in done.stderr


def test_reconcile_of_intserv_is_not_needed_and_asks_nothing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/syncd.db"
    with IntServSimulator(seed=2, history=10) as sim:
        config = _config(
            tmp_path,
            f'[[sources]]\nname = "se"\nkind = "intserv"\nbase_url = "{sim.base_url}"\n'
            'api_key_env = "IS_KEY"\n',
        )
        before = sim.stats.get("requests", 0)
        done = _syncd(config, db, "reconcile", "--source", "se", token=sim.api_key)
        assert done.returncode == 0, done.stderr
        assert "not needed" in done.stdout
        assert sim.stats.get("requests", 0) == before
