"""send(): retries classified by exception type, and waits a stop event interrupts."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from syncd.errors import (
    BadBody,
    CertificateError,
    ConnectionDropped,
    RateLimited,
    RequestTimeout,
    ServerError,
    TransientError,
    WaitInterrupted,
)
from syncd.sources.http import RetryHooks, RetryPolicy, certificate_problem, retry_reason, send

FAST: dict[str, float] = {"backoff_initial": 0.001, "backoff_max": 0.002}


def _client(answers: Iterator[Callable[[httpx.Request], httpx.Response]]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)(request)

    return httpx.Client(base_url="http://vendor.test", transport=httpx.MockTransport(handler))


def _answer(status: int, body: bytes = b"{}", **headers: str) -> Callable[..., httpx.Response]:
    return lambda request: httpx.Response(status, content=body, headers=headers)


def _raise(exc: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    return fail


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (_answer(429, b'{"retry_in": 0}'), "rate_limited"),
        (_answer(503), "server_error"),
        (_raise(httpx.ReadTimeout), "timeout"),
        (_raise(httpx.ConnectError), "connection"),
        (_answer(200, b"<html>"), "bad_body"),
    ],
)
def test_each_retry_is_reported_with_its_reason(
    failure: Callable[[httpx.Request], httpx.Response], reason: str
) -> None:
    seen: list[tuple[str, str]] = []
    hooks = RetryHooks(on_retry=lambda source, why: seen.append((source, why)))
    client = _client(iter([failure, failure, _answer(200, b'{"ok": 1}')]))
    _, body = send(
        client,
        lambda c: c.get("/x"),
        policy=RetryPolicy(attempts=3, hooks=hooks, **FAST),
        source="hq",
    )
    assert body == {"ok": 1}
    assert seen == [("hq", reason), ("hq", reason)]


def test_reasons_follow_the_exception_type() -> None:
    assert retry_reason(RateLimited("x", 1.0)) == "rate_limited"
    assert retry_reason(ServerError("x")) == "server_error"
    assert retry_reason(RequestTimeout("x")) == "timeout"
    assert retry_reason(ConnectionDropped("x")) == "connection"
    assert retry_reason(BadBody("x")) == "bad_body"
    assert retry_reason(TransientError("x")) == "server_error"


def test_a_stop_event_ends_a_long_retry_after_wait_at_once() -> None:
    stop = threading.Event()
    client = _client(iter([_answer(429, b"{}", **{"Retry-After": "60"})] * 3))
    policy = RetryPolicy(attempts=3, max_wait=60.0, hooks=RetryHooks(stop=stop))
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(WaitInterrupted):
            send(client, lambda c: c.get("/x"), policy=policy, source="hq")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.0


def test_without_hooks_the_last_error_is_raised_after_the_attempts() -> None:
    client = _client(iter([_answer(502)] * 2))
    with pytest.raises(ServerError):
        send(client, lambda c: c.get("/x"), policy=RetryPolicy(attempts=2, **FAST), source="hq")


def test_a_certificate_that_fails_verification_is_one_clear_error_and_not_retried() -> None:
    def untrusted(request: httpx.Request) -> httpx.Response:
        cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
        cause.verify_message = "self-signed certificate"
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] ...", request=request) from cause

    calls = iter([untrusted, _answer(200)])
    with pytest.raises(CertificateError) as info:
        send(
            _client(calls),
            lambda c: c.get("/x"),
            policy=RetryPolicy(attempts=3, **FAST),
            source="hq",
        )
    message = str(info.value)
    assert message.startswith("certificate verify failed: self-signed certificate"), message
    assert "http://vendor.test" in message
    assert "ca_file" in message
    assert next(calls, None) is not None, "retried"
    assert certificate_problem(httpx.ConnectError("refused")) is None
