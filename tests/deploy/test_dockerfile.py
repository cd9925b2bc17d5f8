"""The Dockerfile's own commands, run here in clean virtual environments (no Docker).

The test reads the Dockerfile, builds the context it would get (the repository
filtered by .dockerignore), runs the build stage's RUN (pip wheel) in one venv and
the runtime stage's RUN (pip install of that wheel) in another, fresh one, then runs
the ENTRYPOINT as the image would (`syncd --help`, `syncd migrate` on SQLite) from a
directory outside the source tree, and the HEALTHCHECK command against a live and a
failing /healthz.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import venv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.deploytools import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stages.append(Stage(match.group(1) if match else str(len(stages))))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also covers what is below."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        options = [pat, pat.removeprefix("**/")] if pat.startswith("**/") else [pat]
        for option in options:
            if any(fnmatch.fnmatchcase(c, option) for c in candidates) or (
                pat.startswith("**/") and any(fnmatch.fnmatchcase(p, option) for p in parts)
            ):
                ignored = not negate
                break
    return ignored


def build_context(dest: Path) -> list[str]:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not dockerignored(rel_dir + d, patterns)]
        for name in filenames:
            rel = rel_dir + name
            if not dockerignored(rel, patterns):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel)
                copied.append(rel)
    return copied


def run_instruction(args: str, python: Path, paths: dict[str, Path]) -> None:
    """A RUN instruction as /bin/sh -c runs it, with the image's paths mapped to ours."""
    words = args.split()
    while words and words[0].startswith("--mount="):
        words.pop(0)  # BuildKit bind mounts: the mapped paths below stand in for them
    command = " ".join(words)
    for image_path, here in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        command = command.replace(image_path, shlex.quote(str(here)))
    assert command.startswith("python -m pip "), command
    command = shlex.quote(str(python)) + command.removeprefix("python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "PIP_", "VIRTUAL"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {s.name: s for s in parse_dockerfile(DOCKERFILE.read_text())}


def test_the_dockerfile_has_the_shape_the_issue_asks_for(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["build", "runtime"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in DOCKERFILE.read_text()
    runtime = stages["runtime"]
    (install,) = runtime.all("RUN")[:1]
    assert "from=build" in install
    assert "--only-binary=:all:" in install  # pip never compiles: no compiler needed
    assert "syncd-*.whl" in install
    assert runtime.all("USER") == ["10001:10001"]
    assert json.loads(runtime.all("ENTRYPOINT")[0]) == ["syncd"]
    assert json.loads(runtime.all("CMD")[0]) == ["run"]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "curl" not in healthcheck
    # nothing from the build stage but the wheel reaches the runtime stage
    assert not runtime.all("COPY")


def test_the_build_context_holds_the_package_and_nothing_local(tmp_path: Path) -> None:
    files = build_context(tmp_path)
    assert {"pyproject.toml", "README.md", "alembic.ini", "syncd/cli.py"} <= set(files)
    assert any(f.startswith("migrations/versions/") for f in files)
    for unwanted in (".git/", ".venv/", "tests/", "bench/", "deploy/", "__pycache__"):
        assert not any(unwanted in f for f in files), unwanted
    assert not any(f.endswith((".db", ".pyc")) or f == "syncd.toml" for f in files)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = 200 if self.path == "/healthz" and type(self).status == 200 else 503
        body = b'{"status":"ok"}' if code == 200 else b'{"status":"down"}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()
    thread.join()


def healthcheck(stage: Stage, python: Path, url: str) -> int:
    args = json.loads(stage.all("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
    assert args[0] == "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["SYNCD_HEALTHCHECK_URL"] = url
    return subprocess.run(
        [str(python), *args[1:]], env=env, capture_output=True, check=False, timeout=30
    ).returncode


@pytest.mark.slow
def test_the_dockerfile_commands_build_install_and_run_syncd(
    stages: dict[str, Stage], tmp_path: Path, health_server: tuple[int, type[_Health]]
) -> None:
    context, wheels, workdir = tmp_path / "src", tmp_path / "wheels", tmp_path / "var-lib-syncd"
    for d in (context, wheels, workdir):
        d.mkdir()
    build_context(context)

    # stage 1: the wheel, built from the context in its own environment
    build_python = fresh_venv(tmp_path / "build-venv")
    for run in stages["build"].all("RUN"):
        run_instruction(run, build_python, {"/src": context, "/wheels": wheels})
    built = list(wheels.glob("syncd-*.whl"))
    assert len(built) == 1, list(wheels.iterdir())

    # stage 2: a clean environment gets only that wheel (and binary wheels of its deps)
    runtime_python = fresh_venv(tmp_path / "runtime-venv")
    (install,) = stages["runtime"].all("RUN")[:1]
    run_instruction(install, runtime_python, {"/wheels": wheels})
    shutil.rmtree(context)  # nothing may depend on the source tree any more

    entrypoint = json.loads(stages["runtime"].all("ENTRYPOINT")[0])
    syncd = [str(runtime_python.parent / entrypoint[0])]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "PYTHON"))}
    env["PATH"] = f"{runtime_python.parent}:{env.get('PATH', '')}"

    def image(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*syncd, *args],
            cwd=workdir,
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    helped = image("--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("migrate", "sync", "status", "simulate"):
        assert command in helped.stdout
    where = subprocess.run(
        [str(runtime_python), "-c", "import syncd; print(syncd.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(tmp_path / "runtime-venv") in where

    # the default database: SQLite in the working directory, as in the image
    migrated = image("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated from empty to revision" in migrated.stdout
    assert (workdir / "syncd.db").is_file()
    url = f"sqlite:///{tmp_path}/env.db"
    assert image("migrate", SYNCD_DATABASE_URL=url).returncode == 0
    status = image("status", "--json", SYNCD_DATABASE_URL=url)
    assert status.returncode == 0, status.stderr

    # the HEALTHCHECK: 0 on a healthy /healthz, 1 on 503 or nothing listening
    port, handler = health_server
    assert healthcheck(stages["runtime"], runtime_python, f"http://127.0.0.1:{port}/healthz") == 0
    handler.status = 503
    assert healthcheck(stages["runtime"], runtime_python, f"http://127.0.0.1:{port}/healthz") != 0
    dead = f"http://127.0.0.1:{free_port()}/healthz"
    assert healthcheck(stages["runtime"], runtime_python, dead) != 0
