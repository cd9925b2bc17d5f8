"""Pure pieces of the first-hour fixes: error bodies, transport causes, config, check lines."""

from __future__ import annotations

import socket
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from syncd import config
from syncd.check import clock_line, clock_skew, scope_line
from syncd.config import load_settings
from syncd.errors import AuthError, ConfigError, RateLimited
from syncd.sources.http import describe_transport_error, raise_for_status
from syncd.wording import counted


@pytest.fixture(autouse=True)
def _kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "known_kinds", lambda: frozenset({"doorflow", "intserv"}))


# -- 4. the vendor's message from every documented error-body shape -----------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": "invalid_token", "error_description": "The access token expired"},
            "invalid_token - The access token expired",
        ),
        (
            {"error": "invalid_token", "description": "The access token expired"},
            "invalid_token - The access token expired",
        ),
        (
            {"type": "unauthorized", "message": "The access token expired"},
            "unauthorized - The access token expired",
        ),
        ({"error": "invalid_token"}, "invalid_token"),
    ],
)
def test_every_error_body_shape_keeps_the_vendors_words(body: object, expected: str) -> None:
    request = httpx.Request("GET", "https://api.doorflow.com/api/3/events")
    response = httpx.Response(401, json=body, request=request)
    with pytest.raises(AuthError) as info:
        raise_for_status(response)
    assert str(info.value) == f"HTTP 401 from GET /api/3/events: {expected}"


def test_a_429_with_the_description_shape_keeps_it() -> None:
    request = httpx.Request("GET", "https://api.doorflow.com/api/3/sync")
    body = {"error": "rate_limited", "description": "Try again in 30 seconds"}
    with pytest.raises(RateLimited, match="rate_limited - Try again in 30 seconds"):
        raise_for_status(httpx.Response(429, json=body, request=request))


# -- 3. transport failures named by cause ---------------------------------------------


def _failure(url: str) -> httpx.TransportError:
    try:
        with httpx.Client(trust_env=False, timeout=5) as client:
            client.get(url)
    except httpx.TransportError as exc:
        return exc
    raise AssertionError(f"{url} answered")


def test_refused_names_host_and_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = describe_transport_error(_failure(f"http://127.0.0.1:{port}/x"))
    assert text.startswith(f"refused: nothing accepts connections on 127.0.0.1:{port}")


def test_dns_names_the_host() -> None:
    text = describe_transport_error(_failure("https://no-such-host.invalid/x"))
    assert text == (
        "DNS: cannot resolve the host of https://no-such-host.invalid: "
        "check the host name in base_url"
    )


def test_https_to_a_plain_http_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        import threading

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        text = describe_transport_error(_failure(f"https://127.0.0.1:{port}/x"))
        thread.join(5)
    assert text.startswith(f"TLS: 127.0.0.1:{port} does not speak HTTPS")
    assert "use http://" in text


def test_a_plain_http_request_answered_by_silence_hints_at_https() -> None:
    request = httpx.Request("GET", "http://127.0.0.1:8443/x")
    exc = httpx.RemoteProtocolError("Server disconnected", request=request)
    text = describe_transport_error(exc)
    assert text.startswith("127.0.0.1:8443 closed the connection without an HTTP answer")
    assert "HTTP spoken to an HTTPS port" in text


# -- 2, 5, 8, 9. configuration ------------------------------------------------------


def _settings(tmp_path: Path, text: str, env: dict[str, str], **kw: object) -> config.Settings:
    path = tmp_path / "syncd.toml"
    path.write_text(textwrap.dedent(text))
    return load_settings(path, environ=env, cwd=tmp_path, **kw)  # type: ignore[arg-type]


TWO = """
[[sources]]
name = "hq"
kind = "doorflow"
base_url = "https://api.doorflow.com"
token_env = "DF_TOKEN"

[[sources]]
name = "stockholm"
kind = "intserv"
base_url = "https://api.intserv.se"
api_key_env = "IS_KEY"
"""


def test_missing_secret_of_an_untouched_source_is_no_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, TWO, {"IS_KEY": "k"}, secrets_for=["stockholm"])
    hq = settings.source("hq")
    assert hq.token is None
    assert hq.secret_problems == (
        "sources[hq].token_env: environment variable DF_TOKEN is not set",
    )
    with pytest.raises(ConfigError, match="DF_TOKEN is not set"):
        hq.require_secrets()
    settings.source("stockholm").require_secrets()
    assert _settings(tmp_path, TWO, {}, secrets_for=()).sources[1].api_key is None


def test_every_missing_secret_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _settings(tmp_path, TWO, {})
    assert info.value.problems == (
        "sources[hq].token_env: environment variable DF_TOKEN is not set",
        "sources[stockholm].api_key_env: environment variable IS_KEY is not set",
    )
    assert str(info.value).splitlines() == list(info.value.problems)


def test_env_secret_is_stripped_like_a_file_secret(tmp_path: Path) -> None:
    settings = _settings(tmp_path, TWO, {"DF_TOKEN": " tok\n", "IS_KEY": "key\r\n"})
    assert settings.source("hq").token is not None
    assert settings.source("hq").token.reveal() == "tok"  # type: ignore[union-attr]
    assert settings.source("stockholm").api_key.reveal() == "key"  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ['"2026-11-25"', "2026-11-25"])
def test_date_only_start_is_midnight_utc(tmp_path: Path, value: str) -> None:
    text = TWO.replace('token_env = "DF_TOKEN"', f'token_env = "DF_TOKEN"\nstart = {value}')
    start = _settings(tmp_path, text, {"DF_TOKEN": "t", "IS_KEY": "k"}).source("hq").start
    assert start == datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize("kind", ["doorflow", "intserv"])
def test_start_in_the_future_is_refused(tmp_path: Path, kind: str) -> None:
    text = f"""
    [[sources]]
    name = "hq"
    kind = "{kind}"
    base_url = "https://example.com"
    token_env = "T"
    start = "2999-01-01T00:00:00Z"
    """
    with pytest.raises(ConfigError, match=r"sources\[hq\]\.start 2999-01-01T00:00:00Z is in the"):
        _settings(tmp_path, text, {"T": "t"})


# -- check's pure pieces ---------------------------------------------------------------


def test_clock_skew_from_the_date_header() -> None:
    local = datetime(2026, 12, 7, 12, 0, 0, 300000, tzinfo=UTC)
    assert clock_skew("Mon, 07 Dec 2026 12:00:00 GMT", local) == pytest.approx(0.2)
    assert clock_skew("Mon, 07 Dec 2026 12:05:00 GMT", local) == pytest.approx(300.2)
    assert clock_skew(None, local) is None
    assert clock_skew("yesterday", local) is None
    assert clock_line("hq", 0.2).status == "ok"
    assert clock_line("hq", 59.0).status == "ok"
    late = clock_line("hq", 300.2)
    assert late.status == "warning"
    assert "300 s behind the vendor's Date" in late.detail


def test_scope_line_accepts_either_events_scope() -> None:
    wanted = frozenset({"account.event.access.readonly", "account.event.readonly"})
    assert scope_line("hq", ["account.event.readonly"], wanted).status == "ok"
    missing = scope_line("hq", ["account.person.readonly"], wanted)
    assert missing.status == "failed"
    assert "syncd auth doorflow --source hq" in missing.detail


def test_counted_plurals() -> None:
    assert counted(1, "page") == "1 page"
    assert counted(0, "page") == "0 pages"
    assert counted(1234, "span") == "1,234 spans"


def test_every_problem_of_one_source_is_reported(tmp_path: Path) -> None:
    text = """
    [[sources]]
    name = "hq"
    kind = "doorflow"
    base_url = "ftp://api.doorflow.com"
    token_env = "T"
    interval = 0
    timezone = "Mars/Olympus"
    intervall = 5
    """
    with pytest.raises(ConfigError) as info:
        _settings(tmp_path, text, {"T": "t"})
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith("sources[hq].intervall: unknown key")
    assert problems[1].startswith("sources[hq].base_url must be an http(s) URL")
    assert problems[2] == "sources[hq].interval must be a number of seconds > 0, got 0"
    assert problems[3].startswith("sources[hq].timezone 'Mars/Olympus' is not a known IANA zone")
