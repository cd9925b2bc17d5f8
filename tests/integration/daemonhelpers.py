"""Run ``syncd run`` as a real process for the daemon tests: config, HTTP, logs, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def source_toml(name: str, kind: str, base_url: str, **keys: Any) -> str:
    lines = ["[[sources]]", f'name = "{name}"', f'kind = "{kind}"', f'base_url = "{base_url}"']
    for key, value in keys.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def write_config(path: Path, port: int, sources: list[str], workers: int = 4) -> Path:
    text = f'[daemon]\nlisten = "127.0.0.1:{port}"\nworkers = {workers}\n\n' + "\n".join(sources)
    path.write_text(text)
    return path


def http(
    url: str,
    method: str = "GET",
    body: bytes | Iterator[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    response = _CLIENT.request(method, url, content=body, headers=headers, timeout=timeout)
    return response.status_code, response.content


# One client for every test request: building one costs an SSL context (~0.1 s).
_CLIENT = httpx.Client(trust_env=False)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    port: int
    lines: list[bytes] = field(default_factory=list)
    stopped_in: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return http(self.url + path)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200
        values = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), float("nan"))

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                out.append({"event": "(not json)", "line": line.decode(errors="replace")})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs() if entry.get("event") == name]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        started = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout)
        self.stopped_in = time.monotonic() - started
        return code


@contextmanager
def running_daemon(
    config: Path,
    database_url: str,
    port: int,
    env: Mapping[str, str],
    *,
    extra_args: tuple[str, ...] = ("--migrate",),
    ready_timeout: float = 30.0,
) -> Iterator[DaemonProcess]:
    """``syncd run`` in a subprocess, JSON logs collected, up once /healthz answers."""
    args = [sys.executable, "-m", "syncd.cli", "--config", str(config)]
    args += ["--database-url", database_url, "--log-format", "json", "run", *extra_args]
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    full_env.pop("SYNCD_LOG_LEVEL", None)
    proc = subprocess.Popen(args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    daemon = DaemonProcess(proc, port)
    assert proc.stderr is not None
    stream = proc.stderr

    def pump() -> None:
        for line in stream:
            daemon.lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(b"".join(daemon.lines).decode(errors="replace"))
            try:
                return daemon.get("/healthz")[0] == 200
            except (OSError, httpx.HTTPError):
                return False

        wait_for(up, ready_timeout, "the daemon's /healthz")
        yield daemon
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        stream.close()
