"""``syncd auth doorflow`` end to end against the DoorFlow simulator, as a user runs it.

The browser is scripted: an HTTP client opens the URL the command prints,
follows the simulator's redirect to the command's loopback callback (or
pastes the redirect address on standard input). Then ``syncd sync`` runs on
the stored grant with no ``refresh_token_env`` at all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from syncd.authorize import Answer, check_answer, parse_answer, pkce_pair
from syncd.db.engine import create_engine
from syncd.db.schema import sync_state
from syncd.errors import AuthError
from syncd.simulators import DoorFlowSimulator
from syncd.simulators.doorflow import pkce_challenge
from tests.integration.daemonhelpers import free_port

URL_LINE = re.compile(r"https?://\S+/oauth/authorize\?\S+")


def _config(tmp_path: Path, sim: DoorFlowSimulator) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(
        "[[sources]]\n"
        'name = "hq"\nkind = "doorflow"\n'
        f'base_url = "{sim.base_url}"\n'
        'client_id_env = "DF_CLIENT_ID"\nclient_secret_env = "DF_CLIENT_SECRET"\n'
        'start = "2024-01-01T00:00:00Z"\n'
    )
    return path


def _env(sim: DoorFlowSimulator, url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    return {
        **base,
        "DF_CLIENT_ID": sim.oauth.client_id,
        "DF_CLIENT_SECRET": sim.oauth.client_secret,
        "SYNCD_DATABASE_URL": url,
    }


@contextmanager
def auth_process(
    tmp_path: Path, sim: DoorFlowSimulator, url: str, port: int
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``syncd auth doorflow --no-browser``, and the authorize URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", "--config", str(_config(tmp_path, sim)), "auth",
         "doorflow", "--source", "hq", "--port", str(port), "--no-browser"],
        env=_env(sim, url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    printed = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        printed += line
        found = URL_LINE.search(line)
        if found:
            yield proc, found.group(0)
            break
    else:
        raise AssertionError(f"no authorize URL printed: {printed}")
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def finish(proc: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str, str]:
    out, err = proc.communicate(stdin, timeout=60)
    return proc.returncode, out, err


def browse(authorize: str) -> str:
    """The scripted browser: the redirect address the simulator answers with."""
    response = httpx.get(authorize, follow_redirects=False)
    assert response.status_code == 302, response.text
    return response.headers["Location"]


def stored_refresh(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sync_state.c.refresh_token)).scalar()
    finally:
        engine.dispose()


def _sync(tmp_path: Path, sim: DoorFlowSimulator, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd.cli", "--config", str(tmp_path / "syncd.toml"), "sync"],
        env=_env(sim, url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        return url
    request.getfixturevalue("pg_engine")  # empties the tables
    pg: str = request.getfixturevalue("pg_url")
    return pg


def test_loopback_grant_stores_a_refresh_token_and_sync_runs_on_it(
    tmp_path: Path, db_url: str
) -> None:
    with DoorFlowSimulator(seed=5, history=50) as sim:
        port = free_port()
        with auth_process(tmp_path, sim, db_url, port) as (proc, authorize):
            query = parse_qs(urlsplit(authorize).query)
            assert query["redirect_uri"] == [f"http://127.0.0.1:{port}/callback"]
            assert query["code_challenge_method"] == ["S256"]
            assert query["scope"] == ["account.event.access.readonly"]
            location = browse(authorize)
            code = parse_qs(urlsplit(location).query)["code"][0]
            assert httpx.get(location).status_code == 200  # the loopback callback
            status, out, err = finish(proc)
        assert status == 0, err
        assert "authorized" in out
        assert code not in out + err
        refresh = stored_refresh(db_url)
        assert refresh is not None
        assert refresh not in out + err
        assert sim.stats["code_grants"] == 1
        synced = _sync(tmp_path, sim, db_url)
        assert synced.returncode == 0, synced.stderr
        assert "new" in synced.stdout
        # The access token the grant brought was stored too: no refresh needed yet.
        assert sim.stats.get("token_refreshes", 0) == 0


def test_pasted_redirect_address_is_accepted(tmp_path: Path, sqlite_url: str) -> None:
    with DoorFlowSimulator(seed=5, history=10) as sim:
        port = free_port()
        with auth_process(tmp_path, sim, sqlite_url, port) as (proc, authorize):
            location = browse(authorize)  # the browser elsewhere cannot reach the loopback
            status, _out, err = finish(proc, stdin=location + "\n")
        assert status == 0, err
        assert stored_refresh(sqlite_url) is not None


def test_wrong_state_is_refused_and_nothing_is_stored(tmp_path: Path, sqlite_url: str) -> None:
    with DoorFlowSimulator(seed=5, history=10) as sim:
        port = free_port()
        with auth_process(tmp_path, sim, sqlite_url, port) as (proc, authorize):
            location = browse(authorize)
            forged = re.sub(r"state=[^&]+", "state=forged", location)
            httpx.get(forged)
            status, _out, err = finish(proc)
        assert status == 1
        assert err.strip().splitlines()[-1].startswith("syncd: the answer's state does not match")
        assert "Traceback" not in err
        assert stored_refresh(sqlite_url) is None
        assert sim.stats.get("code_grants", 0) == 0


def test_wrong_verifier_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    """A code bound to another challenge (not this command's verifier): invalid_grant."""
    with DoorFlowSimulator(seed=5, history=10) as sim:
        port = free_port()
        with auth_process(tmp_path, sim, sqlite_url, port) as (proc, authorize):
            query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
            query["code_challenge"] = pkce_challenge("someone else's verifier")
            base = authorize.split("?")[0]
            location = browse(f"{base}?{urlencode(query)}")
            httpx.get(location)
            status, out, err = finish(proc)
        assert status == 1
        last = err.strip().splitlines()[-1]
        assert "refused the authorization code (invalid_grant)" in last
        code = parse_qs(urlsplit(location).query)["code"][0]
        assert code not in out + err
        assert stored_refresh(sqlite_url) is None
        assert sim.stats["invalid_grant"] == 1


def test_a_code_used_twice_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    with DoorFlowSimulator(seed=5, history=10) as sim:
        port = free_port()
        with auth_process(tmp_path, sim, sqlite_url, port) as (proc, authorize):
            location = browse(authorize)
            httpx.get(location)
            assert finish(proc)[0] == 0
        first = stored_refresh(sqlite_url)
        with auth_process(tmp_path, sim, sqlite_url, free_port()) as (proc, authorize):
            # Paste the old redirect: its state is not this run's, so paste the bare code.
            code = parse_qs(urlsplit(location).query)["code"][0]
            status, out, err = finish(proc, stdin=code + "\n")
        assert status == 1
        assert "refused the authorization code (invalid_grant)" in err
        assert code not in out + err
        assert stored_refresh(sqlite_url) == first


def test_sync_without_any_refresh_token_names_the_command(tmp_path: Path, sqlite_url: str) -> None:
    with DoorFlowSimulator(seed=5, history=10) as sim:
        _config(tmp_path, sim)
        result = _sync(tmp_path, sim, sqlite_url)
    assert result.returncode == 1
    assert "syncd auth doorflow --source hq" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# -- the pure parts --------------------------------------------------------------


def test_parse_answer_shapes() -> None:
    assert parse_answer("  ") is None
    assert parse_answer("http://127.0.0.1:8765/callback?code=c1&state=s1") == Answer("c1", "s1")
    assert parse_answer("?code=c1&state=s1") == Answer("c1", "s1")
    assert parse_answer("c1\n") == Answer("c1", None, bare=True)
    assert parse_answer("http://x/callback?error=access_denied&state=s") == Answer(
        None, "s", "access_denied"
    )


def test_check_answer() -> None:
    assert check_answer(Answer("c", "s"), "s") == "c"
    assert check_answer(Answer("c", None, bare=True), "s") == "c"
    for wrong in (Answer("c", "t"), Answer("c", None), Answer(None, "s", "access_denied")):
        with pytest.raises(AuthError):
            check_answer(wrong, "s")


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert pkce_challenge(verifier) == challenge
