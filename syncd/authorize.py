"""``syncd auth doorflow``: the OAuth authorization-code grant with PKCE, from a terminal.

The user's browser asks DoorFlow to authorize syncd and is redirected to a
loopback address this command listens on (``http://127.0.0.1:{port}/callback``,
which the user registers in their DoorFlow application). On a server without
a browser the user opens the URL elsewhere and pastes the address the browser
was sent to (or just the code) on standard input. The ``state`` parameter
must come back unchanged; the code is exchanged once, with the PKCE verifier,
and the refresh token it yields is stored in ``sync_state`` exactly like a
rotated one, under the source's refresh lock. The code and the tokens never
appear in any output.

The pure parts (:func:`pkce_pair`, :func:`authorize_url`,
:func:`parse_answer`) take their inputs as arguments and are tested alone.
"""

from __future__ import annotations

import base64
import hashlib
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from syncd.config import SourceConfig
from syncd.db.store import Store, StoredCredentials
from syncd.errors import AuthError, ConfigError, SyncdError
from syncd.sources.auth import (
    OAuthGrant,
    parse_token_answer,
    token_error,
    token_fingerprint,
    usable_until,
)

EVENTS_SCOPE = "account.event.access.readonly"
DEFAULT_PORT = 8765
# DoorFlow's codes live 10 minutes: no point waiting longer for one.
WAIT_S = 600.0


@dataclass(frozen=True)
class Answer:
    """What came back from the authorization: a code, or the server's refusal."""

    code: str | None
    state: str | None
    error: str | None = None
    bare: bool = False  # a pasted code alone: no state came with it to compare


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE (verifier, S256 challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def redirect_uri(port: int) -> str:
    return f"http://127.0.0.1:{port}/callback"


def authorize_url(base_url: str, client_id: str, redirect: str, state: str, challenge: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": EVENTS_SCOPE,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{base_url.rstrip('/')}/oauth/authorize?{query}"


def parse_answer(text: str) -> Answer | None:
    """A pasted redirect address, a bare query string, or a bare code; None if empty."""
    text = text.strip()
    if not text:
        return None
    query = urlsplit(text).query if "://" in text else text.lstrip("?")
    if "=" not in query:
        return Answer(code=text, state=None, bare=True)
    fields = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    return Answer(fields.get("code") or None, fields.get("state"), fields.get("error") or None)


def check_answer(answer: Answer, state: str) -> str:
    """The code, once the answer is known to be ours; else :class:`AuthError`."""
    if answer.error is not None:
        raise AuthError(f"DoorFlow did not authorize syncd ({answer.error}): run the command again")
    if not answer.bare and (
        answer.state is None or not secrets.compare_digest(answer.state.encode(), state.encode())
    ):
        raise AuthError(
            "the answer's state does not match this authorization (an old or foreign "
            "redirect): run the command again and use the new URL"
        )
    if not answer.code:
        raise AuthError("the redirect carries no code: paste the whole address the browser shows")
    return answer.code


class _Callback(BaseHTTPRequestHandler):
    answers: queue.Queue[Answer]

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        if split.path != "/callback":
            self.send_error(404)
            return
        answer = parse_answer("?" + split.query) or Answer(None, None, "empty_answer")
        body = b"syncd: answer received. You can close this window; the terminal says the rest.\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.answers.put(answer)  # after the page is sent: the command may exit at once

    def log_message(self, format: str, *args: object) -> None:
        return None  # the request line holds the code: never printed


def _listen(port: int, answers: queue.Queue[Answer]) -> ThreadingHTTPServer | None:
    handler = type("Callback", (_Callback,), {"answers": answers})
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        return None
    threading.Thread(target=server.serve_forever, name="auth-callback", daemon=True).start()
    return server


def _read_pasted(stdin: TextIO, answers: queue.Queue[Answer]) -> None:
    for line in stdin:
        answer = parse_answer(line)
        if answer is not None:
            answers.put(answer)
            return


def exchange(
    config: SourceConfig, client: httpx.Client, code: str, verifier: str, redirect: str
) -> OAuthGrant:
    """The code for tokens at ``{base_url}/oauth/token``; the grant to store."""
    assert config.oauth is not None
    response = client.post(
        f"{config.base_url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "code_verifier": verifier,
            "client_id": config.oauth.client_id.reveal(),
            "client_secret": config.oauth.client_secret.reveal(),
        },
        headers={"Accept": "application/json"},
    )
    if response.status_code != 200:
        said = token_error(response) or f"HTTP {response.status_code}"
        raise AuthError(
            f"DoorFlow refused the authorization code ({said}): run "
            f"`syncd auth doorflow --source {config.name}` again"
        )
    answer = parse_token_answer(response, config.name)
    if answer.refresh_token is None:
        raise AuthError("DoorFlow answered without a refresh token: syncd cannot keep access")
    configured = config.oauth.refresh_token
    return OAuthGrant(
        refresh_token=answer.refresh_token,
        # The origin is the configured token as it is now (none: ""): a token
        # configured later is a new authorization and wins over this one.
        origin=token_fingerprint("" if configured is None else configured.reveal()),
        access_token=answer.access_token,
        access_until=usable_until(time.time(), answer.lifetime),
    )


def authorize(
    store: Store,
    config: SourceConfig,
    *,
    port: int = DEFAULT_PORT,
    browser: bool = True,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    stdin: TextIO | None = None,
    open_browser: Callable[[str], bool] | None = None,
    wait_s: float = WAIT_S,
) -> None:
    """Run the grant for ``config`` and store its refresh token; raise a SyncdError on failure."""
    if config.kind != "doorflow" or config.oauth is None:
        raise ConfigError(
            f"sources[{config.name}]: `syncd auth doorflow` needs a doorflow source with "
            "client_id_env and client_secret_env (your DoorFlow OAuth application)"
        )
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    redirect = redirect_uri(port)
    url = authorize_url(
        config.base_url, config.oauth.client_id.reveal(), redirect, state, challenge
    )
    answers: queue.Queue[Answer] = queue.Queue()
    server = _listen(port, answers)
    if server is None and browser:
        raise SyncdError(
            f"port {port} on 127.0.0.1 is in use: choose another with --port "
            "(and register that redirect URI), or use --no-browser to paste the answer"
        )
    try:
        say(f"The DoorFlow application must list this redirect URI: {redirect}")
        opened = False
        if browser:
            if open_browser is None:
                import webbrowser

                open_browser = webbrowser.open
            opened = bool(open_browser(url))
        if opened:
            say("A browser window asks you to authorize syncd; waiting for its answer ...")
        else:
            say(f"Open this URL in a browser and authorize syncd:\n\n  {url}\n")
            say("Then paste here the address the browser was sent to (or just its code):")
        reader = stdin if stdin is not None else sys.stdin
        threading.Thread(
            target=_read_pasted, args=(reader, answers), name="auth-paste", daemon=True
        ).start()
        try:
            answer = answers.get(timeout=wait_s)
        except queue.Empty:
            raise AuthError(f"no answer within {wait_s:.0f} s: run the command again") from None
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    code = check_answer(answer, state)
    with httpx.Client(verify=config.tls_verify(), timeout=config.timeout) as client:
        try:
            grant = exchange(config, client, code, verifier, redirect)
        except httpx.HTTPError as exc:
            raise AuthError(
                f"could not reach {config.base_url}/oauth/token: {type(exc).__name__}"
            ) from None
    credentials = StoredCredentials(store, config.name)
    with credentials.locked():
        credentials.save(grant)
