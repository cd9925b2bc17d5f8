"""HTTP plumbing shared by the simulators: a keep-alive threading server that
hands each request to a simulator as a :class:`Request`, and the base class
that owns the server thread, the real-time ticker, faults and counters.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

import orjson

from syncd.simulators.clock import Clock, WallClock, clock_us
from syncd.simulators.faults import FaultInjector, Faults


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def arg(self, *names: str) -> str | None:
        """The first non-empty value of the first of ``names`` present."""
        for name in names:
            for value in self.query.get(name, ()):
                if value != "":
                    return value
        return None

    def args(self, *names: str) -> list[str]:
        """Every value of every one of ``names``, commas split, blanks dropped."""
        out: list[str] = []
        for name in names:
            for value in self.query.get(name, ()):
                out.extend(part.strip() for part in value.split(",") if part.strip())
        return out


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


DROP = Response(0)
"""Returned by a route to close the connection without writing anything."""


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, orjson.dumps(payload), headers)


def format_seconds(seconds: float) -> str:
    """``1`` for whole seconds, else the shortest decimal (``0.05``)."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "syncd-simulator/1"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True  # the body cannot be skipped reliably
            self._write(Response(400, b'{"error":"invalid_request"}'))
            return
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = Request(
            self.command,
            split.path,
            parse_qs(split.query, keep_blank_values=True),
            self.headers,
            body,
        )
        try:
            response = self.server.app(request)
        except Exception:
            traceback.print_exc()
            self.server.internal_errors += 1
            response = Response(
                500,
                b'{"error":"internal_server_error","error_description":"simulator failure"}',
            )
        if response is DROP:
            self.close_connection = True
            if self.server.verbose:
                self.log_message('"%s" dropped', self.requestline)
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        phrase = self.responses.get(response.status, ("",))[0]
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + response.body)
        if self.server.verbose:
            self.log_request(response.status, len(response.body))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], app: Callable[[Request], Response], verbose: bool
    ) -> None:
        self.app = app
        self.verbose = verbose
        self.internal_errors = 0
        self._connections: set[Any] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which
        # can take seconds without DNS; loopback needs no name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-request (a killed syncd, a closed
        # keep-alive) is the client's business: no traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake every handler blocked on an idle keep-alive connection."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class BaseSimulator:
    """Server thread, ticker thread, faults and counters; vendors fill in routes."""

    vendor: ClassVar[str] = ""

    def __init__(
        self,
        *,
        seed: int,
        clock: Clock | None,
        faults: Faults | None,
        host: str,
        port: int,
        rate: float,
        verbose: bool = False,
    ) -> None:
        self.seed = seed
        self.clock: Clock = clock if clock is not None else WallClock()
        self.rate = rate
        """Events per second generated in the background while running (0: none)."""
        self.verbose = verbose
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._faults = faults if faults is not None else Faults()
        self._injector = FaultInjector(self._faults, seed)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.date_skew = 0.0
        """Seconds added to the ``Date`` header: a vendor whose clock is off."""

    # -- life cycle -------------------------------------------------------

    def start(self) -> Self:
        """Bind, then serve in a background thread. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._stopping.clear()
        server = _Server((self._host, self._port), self._dispatch, self.verbose)
        self._server = server
        serve = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.vendor}-sim-server",
            daemon=True,
        )
        ticker = threading.Thread(
            target=self._run_ticker, name=f"{self.vendor}-sim-ticker", daemon=True
        )
        self._threads = [serve, ticker]
        serve.start()
        ticker.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join every thread."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        for thread in self._threads:
            thread.join()
        self._threads = []
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

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return self._server.server_port

    @property
    def base_url(self) -> str:
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"http://{host}:{self.port}"

    # -- knobs and counters ----------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        self._injector = FaultInjector(faults, self.seed)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, faults served by kind, events served, ..."""
        with self._stats_lock:
            out = dict(self._stats)
        out["internal_errors"] = self._server.internal_errors if self._server else 0
        return out

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _now(self) -> int:
        return clock_us(self.clock)

    # -- requests -----------------------------------------------------------

    def _dispatch(self, request: Request) -> Response:
        self._count("requests")
        response = self._route(request)
        if response is DROP:
            return response
        # Real time, not the simulated clock: the header is what a client
        # compares its own clock with (``syncd check``).
        date = email.utils.formatdate(time.time() + self.date_skew, usegmt=True)
        response.headers = (*response.headers, ("Date", date))
        return response

    def _route(self, request: Request) -> Response:
        raise NotImplementedError

    def _error(self, status: int, error: str, description: str, **extra: Any) -> Response:
        """The vendor's error body; subclasses may reshape it."""
        return json_response(status, {"error": error, "error_description": description, **extra})

    def _inject(self) -> Response | None:
        """Latency, then the fault drawn for this request (None: serve it)."""
        injector = self._injector
        faults = injector.faults
        if faults.latency:
            time.sleep(faults.latency)
        kind, status = injector.draw()
        if kind is None:
            return None
        if kind == "drop":
            self._count("dropped")
            return DROP
        if kind == "rate_limit":
            self._count("rate_limited")
            wait = faults.retry_after
            headers: tuple[tuple[str, str], ...] = ()
            extra: dict[str, Any] = {}
            if faults.retry_after_in in ("header", "both"):
                headers = (("Retry-After", format_seconds(wait)),)
            if faults.retry_after_in in ("body", "both"):
                extra["retry_in"] = wait
            response = self._error(429, "rate_limited", "Too many requests", **extra)
            response.headers = headers
            return response
        self._count("server_errors")
        self._count(f"status_{status}")
        if status == 503:
            return Response(
                503,
                b"<html><head><title>503 Service Temporarily Unavailable</title></head>"
                b"<body><h1>503 Service Temporarily Unavailable</h1></body></html>",
                content_type="text/html",
            )
        return self._error(500, "internal_server_error", "An unexpected error occurred")

    # -- real time ---------------------------------------------------------

    def generate(self, n: int) -> int:
        raise NotImplementedError

    def _tick(self, elapsed: float, carry: float) -> float:
        """Background work every ~0.1 s; returns the fractional events carried over."""
        carry += self.rate * elapsed
        n = int(carry)
        if n > 0:
            self.generate(n)
            carry -= n
        return carry

    def _run_ticker(self) -> None:
        last = time.monotonic()
        carry = 0.0
        while not self._stopping.wait(0.1):
            now = time.monotonic()
            try:
                carry = self._tick(now - last, carry)
            except Exception:
                traceback.print_exc()
            last = now
