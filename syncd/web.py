"""The daemon's HTTP side: a WSGI app (health, readiness, metrics, webhooks, status) on cheroot.

cheroot is a pure-Python, thread-pooled WSGI server that can be stopped
programmatically (``stop()``, which SIGTERM handling needs) and bounds
request headers and bodies before the app sees them; prometheus_client's
exposition app is mounted at ``/metrics``. Routes and answers are the
contract in DESIGN.md ("Daemon", "Webhooks"): a request the sender controls
never gets a 5xx.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cheroot.server
import orjson
import structlog
from cheroot import wsgi

from syncd.api import SOURCES_PATH, StatusRoutes
from syncd.metrics import UNKNOWN_SOURCE, Metrics
from syncd.webhooks import MAX_BODY, Answer, answer

log = structlog.get_logger(__name__)

StartResponse = Callable[..., Any]
WEBHOOK_PREFIX = "/webhooks/doorflow/"
# Headers beyond this are refused by cheroot (431/400) before the app runs;
# bodies beyond the server limit get its 413 (the app's own limit is MAX_BODY).
MAX_HEADER_BYTES = 64 * 1024
SERVER_BODY_LIMIT = 4 * MAX_BODY

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Routes:
    """What the app asks the daemon; every callable is cheap or bounded in time."""

    healthy: Callable[[], bool]
    not_ready: Callable[[], str | None]  # None when ready, else the reason
    webhook_secret: Callable[[str], bytes | None]  # None: unknown or no secret
    is_source: Callable[[str], bool]
    on_webhook: Callable[[str, Answer], None]  # after a 200, for the background fetch
    metrics: Metrics
    status: StatusRoutes | None = None  # GET /, /api/v1/sources[/{source}] (syncd.api)


def _json(start: StartResponse, status: int, body: Mapping[str, Any], *extra: Any) -> list[bytes]:
    data = orjson.dumps(body)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra]
    start(f"{status} {_REASONS[status]}", headers)
    return [data]


class App:
    """The WSGI application."""

    def __init__(self, routes: Routes, clock: Callable[[], float] = time.time) -> None:
        self.routes = routes
        self.clock = clock
        self._gets: dict[str, Callable[[dict[str, Any], StartResponse], Iterable[bytes]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": routes.metrics.wsgi_app(),
        }
        if routes.status is not None:
            self._gets["/"] = routes.status.page
            self._gets[SOURCES_PATH] = routes.status.sources

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            buffered = _buffer_chunked(environ)
            if buffered is None:  # cheroot closes the connection after a 413
                return self._too_large(environ, start)
            environ = buffered
        if environ.get("REQUEST_METHOD") == "HEAD":
            # The GET's status and headers, and no body: bytes after a HEAD
            # answer's headers would be read by a kept-alive client as the start
            # of its next answer (cheroot sends whatever the app returns).
            body = self._route({**environ, "REQUEST_METHOD": "GET"}, start)
            close = getattr(body, "close", None)
            if close is not None:
                close()
            return []
        return self._route(environ, start)

    def _route(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith(WEBHOOK_PREFIX):
            return self._webhook(environ, start, path[len(WEBHOOK_PREFIX) :], method)
        if self.routes.status is not None and path.startswith(SOURCES_PATH + "/"):
            if method != "GET":
                return _json(start, 405, {"error": "method_not_allowed"}, ("Allow", "GET, HEAD"))
            return self.routes.status.source(path[len(SOURCES_PATH) + 1 :], start)
        route = self._gets.get(path)
        if route is None:
            return _json(start, 404, {"error": "not_found"})
        if method != "GET":  # HEAD arrives here as a GET (see __call__)
            return _json(start, 405, {"error": "method_not_allowed"}, ("Allow", "GET, HEAD"))
        return route(environ, start)

    def _too_large(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path.startswith(WEBHOOK_PREFIX):
            source = path[len(WEBHOOK_PREFIX) :]
            label = source if self.routes.is_source(source) else UNKNOWN_SOURCE
            self.routes.metrics.webhook_answered(label, 413)
        return _json(start, 413, {"error": "body_too_large", "limit_bytes": MAX_BODY})

    def _healthz(self, _environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        if self.routes.healthy():
            return _json(start, 200, {"status": "ok"})
        return _json(start, 503, {"status": "stopped"})

    def _readyz(self, _environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        reason = self.routes.not_ready()
        if reason is None:
            return _json(start, 200, {"status": "ready"})
        return _json(start, 503, {"status": "not_ready", "reason": reason})

    def _webhook(
        self, environ: dict[str, Any], start: StartResponse, source: str, method: str
    ) -> Iterable[bytes]:
        label = source if self.routes.is_source(source) else UNKNOWN_SOURCE
        if method != "POST":
            self.routes.metrics.webhook_answered(label, 405)
            return _json(start, 405, {"error": "method_not_allowed"}, ("Allow", "POST"))
        secret = self.routes.webhook_secret(source)
        body = _read_body(environ) if secret is not None else b""
        headers = {
            "Timestamp": environ.get("HTTP_TIMESTAMP", ""),
            "Signature": environ.get("HTTP_SIGNATURE", ""),
        }
        result = answer(secret, headers, body, self.clock())
        self.routes.metrics.webhook_answered(label, result.status)
        log.info(
            "webhook_received",
            source=label,
            status=result.status,
            notifications=len(result.notifications),
        )
        if result.status == 200:
            self.routes.on_webhook(source, result)
        return _json(start, result.status, result.body)


def _read_body(environ: Mapping[str, Any]) -> bytes | None:
    """The body, or None when it is larger than MAX_BODY (then not read in full)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length_text = environ.get("CONTENT_LENGTH") or ""
    try:
        if length_text:
            length = int(length_text)
            if length > MAX_BODY:
                return None
            return bytes(stream.read(length))
        data = bytes(stream.read(MAX_BODY + 1))  # chunked: read one byte past the limit
    except (ValueError, OSError):  # cheroot's own limit on a chunked body
        return None
    return None if len(data) > MAX_BODY else data


def _buffer_chunked(environ: dict[str, Any]) -> dict[str, Any] | None:
    """``environ`` with its chunked body read to the end; None when past MAX_BODY.

    cheroot reads what is left of an unread Content-Length body before the
    next request on a kept-alive connection, but not of a chunked one: the
    rest was parsed as the next request line, and the client's next request
    (a valid webhook, say) got cheroot's 400. Every route sees the body as
    if it had come with a Content-Length.
    """
    data = _read_body(environ)
    if data is None:
        return None
    environ = {**environ, "wsgi.input": io.BytesIO(data), "CONTENT_LENGTH": str(len(data))}
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return environ


# What cheroot answers with a 5xx to a request it will not parse, though the
# sender alone caused it (an HTTP version it does not speak, a transfer coding
# other than chunked): 400s here, as the contract wants ("never a 5xx for
# anything the sender controls").
_SENDER_FAULTS = {
    "501": "Transfer-Encoding not supported",
    "505": "HTTP version not supported",
}


class _Request(cheroot.server.HTTPRequest):
    def simple_response(self, status: Any, msg: str = "") -> None:
        fault = _SENDER_FAULTS.get(str(status)[:3])
        if fault is not None:
            status, msg = "400 Bad Request", fault
        super().simple_response(status, msg)


class _Connection(cheroot.server.HTTPConnection):
    RequestHandlerClass = _Request


def make_server(app: App, host: str, port: int, threads: int = 4) -> wsgi.Server:
    """A cheroot server for ``app``; call ``prepare()`` (binds), ``serve()``, ``stop()``."""
    server = wsgi.Server((host, port), app, numthreads=threads, shutdown_timeout=2, timeout=10)
    server.ConnectionClass = _Connection
    server.max_request_header_size = MAX_HEADER_BYTES
    server.max_request_body_size = SERVER_BODY_LIMIT
    return server
