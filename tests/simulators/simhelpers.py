"""Helpers for the simulator tests: a fixed start time, clients, a webhook receiver."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

START = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)  # a Monday, midday


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Receiver:
    """A tiny HTTP server that records every POST (headers and raw body)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.posts.append((dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/doorflow/test"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client(base_url: str, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=bearer(token) if token else {}, timeout=10)
