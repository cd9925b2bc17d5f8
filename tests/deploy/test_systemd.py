"""deploy/systemd: systemd-analyze verify and security on the unit, its config loaded by syncd."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.config import load_settings
from tests.deploy.deploytools import DEPLOY

UNIT = DEPLOY / "systemd" / "syncd.service"
INSTALLED = "/opt/syncd/bin/syncd"


def directives(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines (repeatable keys kept in order), comments and sections dropped."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's syncd (verify checks it exists)."""
    syncd = Path(sys.executable).parent / "syncd"
    assert syncd.is_file(), "the syncd console script is installed beside the interpreter"
    text = UNIT.read_text()
    assert INSTALLED in text
    path = tmp_path / "syncd.service"
    path.write_text(text.replace(INSTALLED, str(syncd)))
    return path


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    return path


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit_here(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 on unknown keys but prints them: any line about our unit fails.
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "syncd.service" not in output, output


def test_verify_would_catch_a_misspelt_directive(tmp_path: Path) -> None:
    path = unit_here(tmp_path)
    path.write_text(path.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    result = subprocess.run(
        [systemd_analyze(), "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert "Unknown key 'ProtectSystm'" in result.stdout + result.stderr


def test_the_unit_is_sandboxed(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", str(unit_here(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for syncd\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    # 0 is a perfect sandbox, 10 none; systemd calls below 2.0 "OK".
    assert float(match.group(1)) <= 2.0, result.stdout


def test_the_unit_has_what_the_install_note_promises() -> None:
    d = directives(UNIT.read_text())
    assert d["DynamicUser"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["Restart"] == ["on-failure"]
    assert d["ExecStart"] == [f"{INSTALLED} run"]
    assert d["ExecStartPre"] == [f"{INSTALLED} migrate"]
    assert d["EnvironmentFile"] == ["/etc/syncd/syncd.env"]
    assert d["Environment"] == ["SYNCD_CONFIG=/etc/syncd/syncd.toml"]
    assert d["StateDirectory"] == ["syncd"]


def test_the_example_config_reads_the_units_credentials(tmp_path: Path) -> None:
    """Every LoadCredential= is a *_file in syncd.toml and back; syncd accepts the config."""
    credentials = dict(v.split(":", 1) for v in directives(UNIT.read_text())["LoadCredential"])
    config = (DEPLOY / "systemd" / "syncd.toml").read_text()
    prefix = "/run/credentials/syncd.service/"
    read = set(re.findall(re.escape(prefix) + r"([A-Za-z0-9][A-Za-z0-9_.-]*)", config))
    assert read == set(credentials)
    for name in credentials:
        (tmp_path / name).write_text(f"value of {name}\n")
    (tmp_path / "syncd.toml").write_text(config.replace(prefix, f"{tmp_path}/"))
    settings = load_settings(
        config_path=tmp_path / "syncd.toml",
        environ={"SYNCD_DATABASE_URL": "postgresql://syncd:pw@db.example.com:5432/syncd"},
    )
    hq = {s.name: s for s in settings.sources}["hq"]
    assert hq.token is not None
    assert hq.token.reveal() == "value of doorflow-token"
