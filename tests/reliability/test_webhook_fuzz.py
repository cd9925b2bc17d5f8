"""Webhook fuzz against a real ``syncd run``: 2,000 requests (200 reduced).

A real daemon serves ``POST /webhooks/doorflow/{source}`` for a DoorFlow
source with a webhook secret, whose ``base_url`` (with a path prefix) is a
recording loopback vendor. Hypothesis builds each request: method, source
name (configured with or without a secret, an IntServ source, unknown, path
tricks), ``Timestamp`` and ``Signature`` (valid, stale, garbage, raw non-UTF-8
bytes, missing), ``Content-Type``, and a body (notifications carrying URLs of
an "attacker" loopback server in every field a sender could hope syncd
follows, arbitrary JSON, invalid UTF-8, empty, chunked, at and past the 1 MiB
limit, several MB). A few raw malformed HTTP requests go in too.

What must hold: every answer is 2xx or 4xx (and the contract's status
where the request makes it clear), the process lives on (``/healthz``, and
a clean SIGTERM stop at the end), every request syncd made went to the
configured base URL's host and path (``/api/3/events`` under the prefix,
event ids only from verified notifications), the attacker got nothing, and
no secret (token, webhook secret, ack tokens) was printed.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.web import SERVER_BODY_LIMIT
from syncd.webhooks import MAX_BODY, signature
from tests.fuzzing import JSON_VALUES
from tests.integration.daemonhelpers import (
    DaemonProcess,
    free_port,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)
from tests.reliability.loopback import LoopbackServer, Reply, Request
from tests.reliability.scale import scaled
from tests.reliability.secretscan import assert_no_secrets

REQUESTS = scaled(2000, 200)
TOKEN = "df-hook-fuzz-token-31d7"
SECRET = "whsec-fuzz-8f2a61c4"
ACK = "ack-fuzz-5c0ffee"  # every ack_token sent starts with this; none may be printed
PREFIX = "/tenant-a"  # the configured base_url's path
JSON_TYPE = {"Content-Type": "application/json"}


class Vendor:
    """The configured base URL: DoorFlow's list (empty) and single events, every request kept."""

    def __init__(self, attacker: str) -> None:
        self.attacker = attacker
        self.server = LoopbackServer(self.handle)

    def handle(self, request: Request) -> Reply:
        if request.path == f"{PREFIX}/api/3/events":
            return Reply(200, b"[]", JSON_TYPE | {"Total": "0", "Per-Page": "1000"})
        found = re.fullmatch(rf"{PREFIX}/api/3/events/(\d+)", request.path)
        if found is None:
            return Reply(404, b'{"error":"not_found"}', JSON_TYPE)
        event_id = int(found.group(1))
        if event_id % 3 == 0:  # not visible yet: syncd asks again a few times, then leaves it
            return Reply(404, b'{"error":"not_found"}', JSON_TYPE)
        event = {
            "id": event_id,
            "created_at": "2026-03-02T08:00:00Z",
            "event_code": 10,
            "channel_id": 1,
            # Links in a fetched event are data, never something to follow.
            "links": {"self": f"{self.attacker}/api/3/events/{event_id}"},
            "url": self.attacker,
        }
        return Reply(200, orjson.dumps(event), JSON_TYPE)


# -- the requests --------------------------------------------------------------------

NAMED_SOURCES = st.sampled_from(
    ["hq"] * 12
    + ["nosecret", "stockholm", "unknown", "HQ", "hq/", "hq/extra", "..%2Fhq", "%00", ""]
)
ODD_SOURCES = st.text(alphabet="abcxyz-_%2F.", max_size=8)
METHODS = st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "text/plain", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", "application/json; charset=latin-1", "\xff/\xfe"]
)  # fmt: skip


@st.composite
def notification(draw: st.DrawFn, attacker: str) -> dict[str, Any]:
    note: dict[str, Any] = {
        "action": draw(st.sampled_from(["CREATE", "UPDATE", "DESTROY", "create", None, 7])),
        "resource_type": draw(st.sampled_from(["Event", "Event", "Person", "event", None])),
        "resource_id": draw(
            st.integers(1, 10**6)
            | st.sampled_from(["42", "-4", "0", "4.5", "../../oauth/token", f"{attacker}/1"])
            | JSON_VALUES
        ),
        "ack_token": draw(st.sampled_from([f"{ACK}-{draw(st.integers(0, 99))}", None])),
    }
    # Everything a sender could hope syncd fetches from instead of its base URL.
    for key in draw(st.sets(st.sampled_from(["url", "resource_url", "href", "base_url", "host"]))):
        note[key] = attacker
    if draw(st.booleans()):
        note["links"] = {"self": f"{attacker}/api/3/events/1", "event": f"{attacker}/x"}
    return note


def to_json(value: Any, ascii: bool) -> bytes:
    """Escaped, or raw UTF-8 where it can be (a lone surrogate forces escapes)."""
    if not ascii:
        try:
            return json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            pass
    return json.dumps(value).encode()


@st.composite
def body(draw: st.DrawFn, attacker: str) -> bytes:
    ascii = draw(st.booleans())
    limit_note = to_json([{"action": "CREATE", "resource_type": "Event", "resource_id": 2}], True)
    kinds = {
        "notifications": lambda: to_json(draw(st.lists(notification(attacker), max_size=5)), ascii),
        "one": lambda: to_json(draw(notification(attacker)), ascii),
        "json": lambda: to_json(draw(JSON_VALUES), ascii),
        "bytes": lambda: draw(st.binary(max_size=300)),
        "empty": lambda: b"",
        "not-utf8": lambda: b'[{"action":"CREATE","resource_type":"Event","x":"\xff\xfe"}]',
        # A valid notification list padded to the limit, or one byte past it.
        "limit": lambda: padded(limit_note, MAX_BODY + draw(st.sampled_from([-1, 0, 1]))),
        # Several MB, past cheroot's own limit (4 MiB) too.
        "huge": lambda: padded(b"[]", draw(st.sampled_from([3, 6])) * 1024 * 1024),
    }
    kind = draw(st.sampled_from(["notifications"] * 6 + list(kinds)))
    return kinds[kind]()


class Big(bytes):
    """A large body that Hypothesis reports by its size, not its megabytes."""

    def __repr__(self) -> str:
        return f"Big({bytes(self[:40])!r} ... {len(self)} bytes)"


def padded(document: bytes, size: int) -> bytes:
    """``document`` (a JSON array) with spaces before its closing bracket, ``size`` bytes long."""
    return Big(document[:-1] + b" " * (size - len(document)) + b"]")


@st.composite
def headers(draw: st.DrawFn, payload: bytes) -> dict[str, Any]:
    now = time.time()
    stamp = draw(
        st.sampled_from(["now", "now", "iso", "stale", "future", "garbage", "missing", "bytes"])
    )
    timestamp: Any = {
        "now": str(int(now)),
        "iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "stale": str(int(now - 301 - draw(st.integers(0, 10**6)))),
        "future": str(int(now + 301 + draw(st.integers(0, 10**6)))),
        "garbage": draw(st.sampled_from(["", "nan", "inf", "1e400", "-1", "yesterday", "٣"])),
        "missing": None,
        "bytes": b"\xff\xfe1733000000",
    }[stamp]
    valid = signature(SECRET.encode(), timestamp, payload) if isinstance(timestamp, str) else "00"
    sig: Any = draw(
        st.sampled_from(
            [
                valid,
                valid,
                valid.upper(),
                f"sha256={valid}",
                valid[:-1],
                "0" * 64,
                "",
                None,
                b"\xff" * 64,
            ]
        )
    )
    sent: dict[str, Any] = {}
    if timestamp is not None:
        sent["Timestamp"] = timestamp
    if sig is not None:
        sent["Signature"] = sig
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        sent["Content-Type"] = content_type.encode("latin-1")
    # Non-ASCII text goes out as its raw UTF-8 bytes (the server reads latin-1).
    return {k: v.encode() if isinstance(v, str) and not v.isascii() else v for k, v in sent.items()}


@st.composite
def webhook_requests(
    draw: st.DrawFn, attacker: str
) -> tuple[str, str, dict[str, Any], bytes, bool]:
    """(method, source, headers, body, chunked): a third are signed notifications for ``hq``."""
    if draw(st.integers(0, 2)) == 0:
        notes = draw(st.lists(notification(attacker), min_size=1, max_size=5))
        payload = to_json(notes, draw(st.booleans()))
        stamp = str(int(time.time()))
        sent = {"Timestamp": stamp, "Signature": signature(SECRET.encode(), stamp, payload)}
        return "POST", "hq", sent, payload, draw(st.booleans())
    payload = draw(body(attacker))
    source = draw(ODD_SOURCES if draw(st.integers(0, 9)) == 0 else NAMED_SOURCES)
    return draw(METHODS), source, draw(headers(payload)), payload, draw(st.booleans())


def expected_status(
    method: str, source: str, sent: dict[str, Any], payload: bytes, chunked: bool
) -> int | None:
    """The contract's answer where the request alone decides it; None: any 2xx/4xx."""
    if len(payload) > SERVER_BODY_LIMIT or source not in ("hq", "nosecret", "stockholm", "unknown"):
        return None  # cheroot's own 413 may come first; path tricks: 404 or 405 by routing
    if chunked and len(payload) > MAX_BODY:
        return 413  # a chunked body is read before routing (syncd.web)
    timestamp, sig = sent.get("Timestamp"), sent.get("Signature")
    signed = (
        isinstance(timestamp, str)
        and isinstance(sig, str)
        and sig.strip().lower() == signature(SECRET.encode(), timestamp, payload)
    )
    for status, applies in (
        (405, method != "POST"),
        (404, source != "hq"),
        (413, len(payload) > MAX_BODY),
        (401, not signed),
    ):
        if applies:
            return status
    return None  # 200, 400 or (a stale, future or unreadable time) 401


def chunks(payload: bytes) -> Iterator[bytes]:
    for start in range(0, len(payload), 64 * 1024):
        yield payload[start : start + 64 * 1024]


RAW_REQUESTS = [
    b"POST /webhooks/doorflow/hq HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /webhooks/doorflow/hq HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /webhooks/doorflow/hq HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"POST /webhooks/doorflow/\xff\xfe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"BREW /webhooks/doorflow/hq HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /webhooks/doorflow/hq HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /webhooks/doorflow/hq HTTP/2.0\r\nHost: x\r\n\r\n",
    b"POST /webhooks/doorflow/hq HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /webhooks/doorflow/hq HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello on plain HTTP
]


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def settled(vendor: Vendor, quiet: float = 3.0, timeout: float = 60.0) -> None:
    """Wait until syncd has asked the vendor nothing new for ``quiet`` seconds."""
    seen, since = len(vendor.server.requests), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = len(vendor.server.requests)
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def test_webhook_fuzz_never_5xx_never_dies_never_fetches_elsewhere(
    tmp_path: Path, sqlite_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    attacker = LoopbackServer()
    port = free_port()
    statuses: Counter[int] = Counter()
    verified_ids: set[int] = set()
    with attacker:
        vendor = Vendor(attacker.url)
        with vendor.server:
            base_url = vendor.server.url + PREFIX
            vendor_host = vendor.server.url.removeprefix("http://")
            config = write_config(
                tmp_path / "syncd.toml",
                port,
                [
                    source_toml(
                        "hq", "doorflow", base_url, token_env="T", webhook_secret_env="S",
                        interval=3600, max_retries=1,
                    ),
                    source_toml("nosecret", "doorflow", base_url, token_env="T", interval=3600),
                    source_toml("stockholm", "intserv", base_url, api_key_env="T", interval=3600),
                ],
            )  # fmt: skip
            env = {"T": TOKEN, "S": SECRET}
            with running_daemon(config, sqlite_url, port, env) as daemon:
                client = httpx.Client(base_url=daemon.url, timeout=30, trust_env=False)

                @settings(
                    max_examples=REQUESTS,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                )
                @given(webhook_requests(attacker.url))
                def one_request(case: tuple[str, str, dict[str, Any], bytes, bool]) -> None:
                    method, source, sent, payload, chunked = case
                    content: bytes | Iterator[bytes] = chunks(payload) if chunked else payload
                    answer = client.request(
                        method, f"/webhooks/doorflow/{source}", headers=sent, content=content
                    )
                    statuses[answer.status_code] += 1
                    assert 200 <= answer.status_code < 500, (case[:3], answer.status_code)
                    assert answer.status_code < 300 or answer.status_code >= 400
                    expected = expected_status(method, source, sent, payload, chunked)
                    if expected is not None:
                        assert answer.status_code == expected, (case[:3], answer.status_code)
                    if answer.status_code == 200:
                        accepted = orjson.loads(answer.content)["accepted"]
                        notes = orjson.loads(bytes(payload))
                        notes = [notes] if isinstance(notes, dict) else notes
                        assert accepted == len(notes)
                        for note in notes:
                            rid = note.get("resource_id")
                            if isinstance(rid, int) and not isinstance(rid, bool):
                                verified_ids.add(rid)
                            elif isinstance(rid, str) and rid.isascii() and rid.isdigit():
                                verified_ids.add(int(rid))

                with client:
                    one_request()
                raw_answers = [raw(port, request) for request in RAW_REQUESTS]
                alive(daemon)
                settled(vendor)
                alive(daemon)
                assert daemon.stop() == 0
            lines = list(daemon.lines)

    assert sum(statuses.values()) >= REQUESTS
    assert statuses[200], statuses
    for answer in raw_answers:
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
    assert attacker.requests == [], [(r.method, r.target) for r in attacker.requests]
    assert not vendor.server.errors
    assert not attacker.errors
    fetched = []
    for request in vendor.server.requests:
        assert request.host == vendor_host, request
        if request.path == f"{PREFIX}/api/3/events":
            continue  # the poll
        found = re.fullmatch(rf"{PREFIX}/api/3/events/(\d+)", request.path)
        assert found is not None, request.target
        assert int(found.group(1)) in verified_ids, request.target
        assert set(request.query) <= {"ack_token"}, request.target
        fetched.append(int(found.group(1)))
    assert fetched, "no notification was fetched: the fuzz never got a verified one through"
    captured = capfd.readouterr()
    tokens = [TOKEN, SECRET, ACK]
    assert_no_secrets([*lines, captured.out, captured.err], tokens)
    with capfd.disabled():
        answers = dict(sorted(statuses.items()))
        print(f"\nwebhook fuzz: {sum(statuses.values())} requests, answers {answers}")
        print(f"  + {len(RAW_REQUESTS)} raw malformed requests: {[a[:12] for a in raw_answers]}")
        print(
            f"  vendor asked {len(vendor.server.requests)} times "
            f"({len(set(fetched))} distinct events fetched), attacker asked 0 times"
        )


def alive(daemon: DaemonProcess) -> None:
    assert daemon.proc.poll() is None, "the daemon died"
    wait_for(lambda: daemon.get("/healthz")[0] == 200, 10, "/healthz")
