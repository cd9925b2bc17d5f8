"""``simulate`` (``syncd simulate`` / ``python -m syncd.simulators``) in the foreground."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

from syncd.simulators.cli import simulate


def start(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.simulators", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    banner = []
    for line in proc.stdout:
        banner.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C"):
            break
    return proc, banner


def field(banner: list[str], pattern: str) -> str:
    for line in banner:
        match = re.search(pattern, line)
        if match:
            return match.group(1)
    raise AssertionError(f"{pattern!r} not in {banner}")


def stop(proc: subprocess.Popen[str], how: signal.Signals) -> tuple[int, str]:
    proc.send_signal(how)
    out, _ = proc.communicate(timeout=15)
    return proc.returncode, out


def test_doorflow_in_the_foreground() -> None:
    proc, banner = start(
        "doorflow", "--events", "300", "--seed", "3", "--flavor", "guide", "--unlist", "90,91"
    )
    try:
        url = field(banner, r"listening on (http://127\.0\.0\.1:\d+)")
        token = field(banner, r"bearer token:\s+(\S+)")
        api_key = field(banner, r"API key:\s+(\S+)")
        assert field(banner, r"client_id\s+(\S+)")
        assert field(banner, r"refresh_token\s+(\S+)")
        curl = field(banner, r"try: (curl .*)")
        assert token in curl
        assert url in curl
        with httpx.Client(base_url=url) as http:
            r = http.get("/api/3/events", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            assert "pagination" in r.json()
            r = http.get("/api/3/events", auth=(api_key, "X"))
            assert r.status_code == 200
            r = http.get("/api/3/events", params={"event_code": ["10", "91"]}, auth=(api_key, "X"))
            assert r.status_code == 400
            assert r.json()["error_description"].endswith("not valid for this method: 91")
        code, out = stop(proc, signal.SIGINT)
        assert code == 0
        assert "stopped" in out
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


def test_intserv_with_an_offline_system_coming_back() -> None:
    proc, banner = start(
        "intserv", "--events", "200", "--rate", "100", "--offline", "abc123-002=0.5", "--port", "0"
    )
    try:
        url = field(banner, r"listening on (http://\S+)")
        key = field(banner, r"API key:\s+(\S+)")
        assert "offline: abc123-002" in "\n".join(banner)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            r = http.post("/v1/events/list", json={"limit": 5})
            assert r.status_code == 200
            assert len(r.json()["events"]) == 5
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("system abc123-002 is back online")
        code, out = stop(proc, signal.SIGTERM)
        assert code == 0
        assert "stopped" in out
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


def test_help_lists_the_knobs() -> None:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--port", "--host", "--seed", "--events", "--flavor", "--rate", "--rate-limit",
        "--retry-after-in", "--server-errors", "--drop", "--latency", "--malformed",
        "--late-share", "--late-delay", "--ties", "--token-expiry", "--continuation-ttl",
        "--offline", "--unlist", "--malformed-kinds", "--expired-key-status",
        "--current-least-sync-time",
    ):  # fmt: skip
        assert option in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["intserv", "--flavor", "guide"], "--flavor does not apply to intserv"),
        (["doorflow", "--offline", "abc123-001"], "--offline does not apply to doorflow"),
        (["intserv", "--offline", "nope"], "unknown system"),
        (["doorflow", "--rate-limit", "0.6", "--drop", "0.6"], "must not exceed 1"),
        (["fax"], "Invalid value"),
        (["intserv", "--unlist", "90"], "--unlist does not apply to intserv"),
        (["doorflow", "--unlist", "90,x"], "not a list of integers"),
        (["doorflow", "--malformed-kinds", "nul,rot"], "malformed_kinds must be"),
        (["doorflow", "--expired-key-status", "500"], "does not apply to doorflow"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(simulate, args)
    assert result.exit_code == 2
    assert message in result.output
