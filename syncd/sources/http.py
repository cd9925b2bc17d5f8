"""Shared HTTP machinery for connectors: error classification and retries.

Every vendor call goes through :func:`send`, which turns HTTP outcomes into the
exception types of :mod:`syncd.errors` and retries the transient ones with
tenacity. Policy is decided by exception *type*:

- :class:`~syncd.errors.RateLimited` (429): wait what the server asked
  (``Retry-After`` header, or ``retry_in`` / ``retry_after`` in the body),
  capped at ``max_wait``; exponential backoff when it gave no hint;
- other :class:`~syncd.errors.TransientError` (5xx, timeouts, dropped
  connections, a body that is not JSON): exponential backoff with jitter;
- anything else fails at once.

Waits are interruptible: a :class:`RetryHooks` ``stop`` event (the daemon's
stop, or a pass past its maximum duration) ends any wait at once with
:class:`~syncd.errors.WaitInterrupted`, and ``on_retry`` hears of every retry
with its reason (``retries_total{reason}``), classified by exception type.
"""

from __future__ import annotations

import email.utils
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import orjson
import structlog
import tenacity

from syncd.errors import (
    AuthError,
    BadBody,
    CertificateError,
    ConnectionDropped,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    ServerError,
    TransientError,
    WaitInterrupted,
)

if TYPE_CHECKING:
    from syncd.config import SourceConfig
    from syncd.sources.base import SourceContext

log = structlog.get_logger(__name__)


# Why a request is retried, by exception type: the ``reason`` label of
# ``syncd_retries_total``. Most specific first (RateLimited before its base).
RETRY_REASONS: tuple[tuple[type[TransientError], str], ...] = (
    (RateLimited, "rate_limited"),
    (ServerError, "server_error"),
    (RequestTimeout, "timeout"),
    (ConnectionDropped, "connection"),
    (BadBody, "bad_body"),
)


def retry_reason(exc: BaseException) -> str:
    """The ``reason`` label for a retried exception (a plain TransientError: server_error)."""
    for kind, reason in RETRY_REASONS:
        if isinstance(exc, kind):
            return reason
    return "server_error"


@dataclass(frozen=True, slots=True)
class RetryHooks:
    """What the caller of a long-lived client plugs into every wait.

    ``stop``: when set, a wait in progress (backoff or 429) ends at once with
    :class:`WaitInterrupted`. ``on_retry(source, reason)``: called before each
    retry wait.
    """

    stop: threading.Event | None = None
    on_retry: Callable[[str, str], None] | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    max_wait: float = 60.0  # cap on any single wait, server-requested or not
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    hooks: RetryHooks | None = None

    @classmethod
    def for_source(cls, config: SourceConfig, context: SourceContext | None = None) -> RetryPolicy:
        """The policy a source's configuration asks for (``max_retries``, ``max_retry_wait``),
        with the context's :class:`RetryHooks` (the daemon's stop event and retry counter)."""
        hooks = context.retry_hooks if context is not None else None
        return cls(attempts=config.max_retries, max_wait=config.max_retry_wait, hooks=hooks)


def retry_after_seconds(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The wait a 429 asks for: ``Retry-After`` (seconds or HTTP date) or body hint."""
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            parsed = _http_date(header)
            if parsed is not None:
                return max(0.0, (parsed - (now or datetime.now(UTC))).total_seconds())
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict):
        for key in ("retry_in", "retry_after"):
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return max(0.0, float(value))
    return None


def _http_date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def error_body(response: httpx.Response) -> Any:
    """The error response's JSON body, or ``None`` when it is not JSON."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def vendor_message(body: dict[str, Any]) -> str:
    """The vendor's own words from any documented error-body shape.

    ``{error, error_description}`` (current), ``{error, description}`` (the
    OpenAPI file's 429) and older pages' ``{type, message}``: the code first,
    then the text.
    """
    parts: list[str] = []
    for keys in (("error", "type"), ("error_description", "description", "message")):
        value = next((body[k] for k in keys if isinstance(body.get(k), str) and body[k]), None)
        if value is not None:
            parts.append(" ".join(value.split())[:300])
    return " - ".join(parts)


def error_detail(response: httpx.Response) -> str:
    """A short, secret-free description of an error response."""
    detail = ""
    body = error_body(response)
    if isinstance(body, dict):
        detail = vendor_message(body)
        detail = f": {detail}" if detail else ""
    request = response.request
    return f"HTTP {response.status_code} from {request.method} {request.url.path}{detail}"


def raise_for_status(response: httpx.Response) -> None:
    """Raise the :mod:`syncd.errors` type an unsuccessful response stands for."""
    status = response.status_code
    if status < 400:
        return
    detail = error_detail(response)
    if status == 429:
        raise RateLimited(detail, retry_after_seconds(response))
    if status >= 500:
        raise ServerError(detail)
    if status in (401, 403):
        raise AuthError(detail)
    raise RequestRejected(detail, status, error_body(response))


def parse_json(response: httpx.Response) -> Any:
    """The response body as JSON; a body that is not JSON is transient (retried).

    orjson refuses a whole body for one value inside it (a lone surrogate
    escape such as ``"\\ud800"``, an integer beyond 64 bits, ``1e400``): the
    standard library, which accepts those, gets a second look, so one bad
    record becomes one rejected record (:func:`syncd.records.split_page`)
    instead of a page retried forever.
    """
    return _decode(response)[1]


class JsonPage(NamedTuple):
    """A list response's JSON, and whether its records need no storability check."""

    body: Any
    storable: bool


def parse_page(response: httpx.Response) -> JsonPage:
    """:func:`parse_json`, plus a page-wide answer to :func:`syncd.records.unstorable`.

    What orjson decodes can only be unstorable through NUL: it refuses lone
    surrogates and non-finite numbers, and a NUL can only come from the
    ``\\u0000`` escape (a raw NUL is not JSON). So a page orjson read whose
    bytes hold no such escape needs no walk of every value of every record,
    which was the largest single cost of normalizing (``bench/compare.py``).
    """
    strict, body = _decode(response)
    return JsonPage(body, strict and b"\\u0000" not in response.content)


def _decode(response: httpx.Response) -> tuple[bool, Any]:
    """(decoded by orjson, the value): see :func:`parse_json`."""
    content = response.content
    # orjson reads an integer beyond 64 bits as a float, silently: a body with
    # a 20-digit run anywhere (rare; a false positive only costs speed) is read
    # by the standard library, which keeps it exact.
    if not _long_digit_run(content):
        try:
            return True, orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    try:
        return False, json.loads(content, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        raise BadBody(
            f"HTTP {response.status_code} from {response.request.url.path}: body is not JSON"
        ) from exc


# Every digit as "0": a run of digits is then a plain substring search (a
# regular expression takes several times as long as decoding the page).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0000000000")


def _long_digit_run(content: bytes) -> bool:
    return b"00000000000000000000" in content.translate(_DIGITS_AS_ZERO)


def _not_json(name: str) -> Any:
    # NaN and Infinity are not JSON; the standard library would accept them.
    raise ValueError(f"{name} is not JSON")


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_exponential_jitter(
        multiplier=policy.backoff_initial, max=policy.backoff_max, jitter=policy.backoff_initial
    )

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, policy.max_wait)
        return min(backoff(state), policy.max_wait)

    return wait


def _log_retry(source: str, hooks: RetryHooks | None) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = retry_reason(exc) if exc is not None else "server_error"
        log.warning(
            "request_retry",
            source=source,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            reason=reason,
            error_type=type(exc).__name__,
            error=str(exc),
        )
        if hooks is not None and hooks.on_retry is not None:
            hooks.on_retry(source, reason)

    return before_sleep


def _sleep(stop: threading.Event | None) -> Callable[[float], None]:
    """tenacity's sleep, ended early (with WaitInterrupted) when ``stop`` is set."""
    if stop is None:
        return time.sleep

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise WaitInterrupted("stopped during a retry wait")

    return sleep


def send(
    client: httpx.Client,
    request: Callable[[httpx.Client], httpx.Response],
    *,
    policy: RetryPolicy,
    source: str,
    parse: Callable[[httpx.Response], Any] = parse_json,
) -> tuple[httpx.Response, Any]:
    """Send ``request(client)`` with retries; return the response and ``parse(response)``.

    Parsing is part of each attempt: a body that is not JSON is retried.

    Transport failures become :class:`TransientError`; status codes are
    classified by :func:`raise_for_status`. The last error is re-raised when
    the attempts run out.
    """
    hooks = policy.hooks
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        before_sleep=_log_retry(source, hooks),
        sleep=_sleep(hooks.stop if hooks is not None else None),
        reraise=True,
    )
    result: tuple[httpx.Response, Any] = retrying(_attempt, client, request, parse)
    return result


def _attempt(
    client: httpx.Client,
    request: Callable[[httpx.Client], httpx.Response],
    parse: Callable[[httpx.Response], Any],
) -> tuple[httpx.Response, Any]:
    try:
        response = request(client)
    except httpx.TimeoutException as exc:
        raise RequestTimeout(describe_transport_error(exc)) from exc
    except httpx.TransportError as exc:
        problem = certificate_problem(exc)
        if problem is not None:
            raise CertificateError(
                f"certificate verify failed: {problem} ({_origin(exc)}); "
                "if that certificate is right, trust its CA with ca_file"
            ) from exc
        raise ConnectionDropped(f"connection failed: {describe_transport_error(exc)}") from exc
    raise_for_status(response)
    return response, parse(response)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (httpx wraps httpcore's error, which wraps the OS's)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe_transport_error(exc: httpx.TransportError) -> str:  # noqa: PLR0911 (one per cause)
    """What went wrong below HTTP, named by its cause, with the host and a hint.

    One line for ``last_error`` and the CLI: DNS, refused, timeout, TLS, or
    HTTP spoken to an HTTPS port (and the reverse), classified by the
    exception types in the chain, never by the vendor's text.
    """
    origin = _origin(exc)
    host = _host_port(exc)
    chain = _chain(exc)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return f"DNS: cannot resolve the host of {origin}: check the host name in base_url"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return (
            f"refused: nothing accepts connections on {host}: check the port in base_url "
            "and that the vendor (or your proxy) is up"
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return (
            f"timeout: connecting to {origin} took longer than the timeout: check the host "
            "and port in base_url, firewalls and proxies (or raise timeout)"
        )
    if isinstance(exc, httpx.TimeoutException):
        # Connected, but the answer did not arrive whole in time (timeout bounds
        # the whole request): a stalled or trickling vendor, not an address problem.
        return (
            f"timeout: {origin} did not send its whole answer within the timeout: the vendor "
            "is stalled or slow (raise timeout only if it is merely slow)"
        )
    tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls is not None:
        if tls.reason in _NOT_TLS_REASONS:
            return (
                f"TLS: {host} does not speak HTTPS (HTTPS spoken to an HTTP port): "
                f"use http:// in base_url, or the vendor's HTTPS port"
            )
        return f"TLS: the handshake with {origin} failed: {tls.reason or tls}"
    if _scheme(exc) == "http" and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return (
            f"{host} closed the connection without an HTTP answer: if that port speaks HTTPS "
            "(HTTP spoken to an HTTPS port), use https:// in base_url"
        )
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__} talking to {origin}" + (f": {detail}" if detail else "")


# OpenSSL's reasons when the other side answers a ClientHello with something
# that is not TLS (a plain-HTTP server's "400 Bad Request").
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)


def _scheme(exc: httpx.TransportError) -> str:
    try:
        return exc.request.url.scheme
    except RuntimeError:
        return ""


def _host_port(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:
        return "the vendor"
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def certificate_problem(exc: BaseException) -> str | None:
    """What certificate verification said, when that is what ``exc`` comes from.

    httpx wraps the ``ssl`` error (through httpcore's) in a ``ConnectError``
    whose own text is not kept by :func:`send`'s message; the cause is.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or "certificate not trusted"
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _origin(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised without its request
        return "the vendor"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


__all__ = [
    "RETRY_REASONS",
    "JsonPage",
    "RetryHooks",
    "RetryPolicy",
    "certificate_problem",
    "describe_transport_error",
    "error_body",
    "parse_json",
    "parse_page",
    "raise_for_status",
    "retry_after_seconds",
    "retry_reason",
    "send",
    "vendor_message",
]
