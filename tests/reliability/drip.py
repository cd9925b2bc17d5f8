"""A loopback vendor that answers slowly on purpose: a body trickled a byte at a time,
or headers and then nothing. For the whole-request deadline tests."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self


class DripServer:
    """Every request is answered 200 with ``body``; ``mode`` decides how.

    ``drip``: headers at once, then one body byte every ``every`` seconds.
    ``stall``: headers at once, then nothing until the client gives up.
    ``normal``: the whole answer at once (a vendor that recovered).
    ``head_delay``: seconds before the headers are sent, in every mode.
    ``requests`` counts what arrived; ``open_connections`` what is still open.
    """

    def __init__(
        self, body: bytes, *, mode: str = "drip", every: float = 3.0, head_delay: float = 0.0
    ) -> None:
        self.body = body
        self.head_delay = head_delay
        self.mode = mode
        self.every = every
        self.requests = 0
        self.open_connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.open_connections += 1
        try:
            conn.settimeout(60)
            while not self._stop.is_set():
                if not self._read_request(conn):
                    return
                with self._lock:
                    self.requests += 1
                mode = self.mode
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(self.body)}\r\n\r\n"
                ).encode()
                if self.head_delay and self._stop.wait(self.head_delay):
                    return
                conn.sendall(head if mode != "normal" else head + self.body)
                if mode == "drip":
                    for index in range(len(self.body)):
                        if self._stop.wait(self.every):
                            return
                        conn.sendall(self.body[index : index + 1])
                elif mode == "stall":
                    while not self._stop.wait(0.1):
                        if _closed(conn):
                            return
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self.open_connections -= 1
            conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            rest += chunk
        return True


def _closed(conn: socket.socket) -> bool:
    try:
        conn.settimeout(0)
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        conn.settimeout(60)


def wait_for(predicate: object, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(step)
    return False
