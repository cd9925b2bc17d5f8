"""A real HTTP(S) server on 127.0.0.1 for the reliability tests, logging every request.

Each request is answered by a plain function (``Request`` in, ``Reply`` out)
and recorded (method, ``Host`` header, path with query, when) before it is
answered, so a test can assert what was fetched and from where: a vendor
played by the test, or an "attacker" that must never be asked anything.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    host: str
    target: str  # the request target as sent: path and query
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handle = Callable[[Request], Reply]


def not_found(_request: Request) -> Reply:
    return Reply(404, b'{"error":"not_found"}', {"Content-Type": "application/json"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer, sent at once: headers and body as two small
    # writes meet the client's delayed ACK (40 ms a request).
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            self.command, self.headers.get("Host", ""), self.path, dict(self.headers), body
        )
        self.server.owner.record(request)
        try:
            reply = self.server.owner.handle(request)
        except Exception as exc:  # a bug in the test's handler: say so, loudly
            self.server.owner.errors.append(repr(exc))
            reply = Reply(599, repr(exc).encode())
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackServer

    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a client that hangs up (or fails the TLS handshake) is not news


class LoopbackServer:
    """``handle`` served on 127.0.0.1 (HTTPS with a server-side ``tls`` context)."""

    def __init__(self, handle: Handle = not_found, tls: ssl.SSLContext | None = None) -> None:
        self.handle = handle
        self.tls = tls
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        if self.tls is not None:
            # The handshake happens in the handler's thread, on its first read.
            server.socket = self.tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
