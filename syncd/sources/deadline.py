"""A whole-request deadline for httpx: a source's ``timeout`` bounds connect to last byte.

httpx's timeouts bound each network operation: a vendor that trickles its
body (a byte every few seconds) never trips a read timeout, and one request
can hang a pass for as long as the vendor likes. DESIGN.md ("Sync
semantics") wants ``timeout`` to bound the whole request instead, retried
like any timeout.

:func:`deadline_hooks` gives a client's event hooks that do it, for every
request the client sends (list pages, webhook fetches, token refreshes):

- the request hook stamps a monotonic deadline (now + ``seconds``) on the
  request and installs an httpcore ``trace`` callback, which before each
  later phase (sending, waiting for the headers, reading the body) lowers
  the phase's timeouts to what is left of the deadline, so a server that
  sends its headers and then stalls times out at the deadline, not a whole
  ``timeout`` after it;
- the response hook wraps the body stream: between chunks it checks the
  deadline, so a trickled body ends at the deadline too.

Both raise httpx's own :class:`httpx.ReadTimeout` (through httpcore's, which
httpx maps), so :func:`syncd.sources.http.send` classifies it as
:class:`~syncd.errors.RequestTimeout`: retried, ``retries_total{reason="timeout"}``.
Connect and pool waits keep their own bound (the ``timeout`` itself). What
no hook can see is a response's *headers* trickled byte by byte: each read
is bounded by what was left when the headers were awaited, not the total.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpcore
import httpx

DEADLINE = "syncd.deadline"
"""The request extension holding the request's monotonic deadline."""

# The httpcore phases whose timeouts are read when they start (the trace's
# ".started" event comes just before): the remaining time is set then.
_PHASES = (
    ".send_request_headers.started",
    ".send_request_body.started",
    ".receive_response_headers.started",
    ".receive_response_body.started",
)
_MIN_WAIT = 0.001  # never hand httpcore a zero or negative timeout (0 means "do not block")

Hook = Callable[..., Any]


def deadline_hooks(seconds: float) -> dict[str, list[Hook]]:
    """Event hooks that make ``seconds`` bound each request as a whole."""

    def on_request(request: httpx.Request) -> None:
        deadline = time.monotonic() + seconds
        request.extensions[DEADLINE] = deadline
        request.extensions["trace"] = _tracer(request, deadline, request.extensions.get("trace"))

    def on_response(response: httpx.Response) -> None:
        request = response.request
        deadline = request.extensions.get(DEADLINE)
        if deadline is not None and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _DeadlineStream(response.stream, deadline, request)

    return {"request": [on_request], "response": [on_response]}


def _tracer(request: httpx.Request, deadline: float, chained: Any) -> Callable[[str, Any], None]:
    def trace(name: str, info: Any) -> None:
        if chained is not None:
            chained(name, info)
        if not name.endswith(_PHASES):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise httpcore.ReadTimeout(_message(request))
        # The dict httpx built for this request (``Timeout.as_dict()``), which
        # httpcore reads when the phase starts.
        target = info.get("request") if isinstance(info, dict) else None
        timeouts = getattr(target, "extensions", request.extensions).get("timeout")
        if isinstance(timeouts, dict):
            for key in ("read", "write"):
                current = timeouts.get(key)
                timeouts[key] = max(
                    _MIN_WAIT, remaining if current is None else min(current, remaining)
                )

    return trace


class _DeadlineStream(httpx.SyncByteStream):
    """A body stream that raises :class:`httpx.ReadTimeout` once the deadline has passed."""

    def __init__(self, stream: httpx.SyncByteStream, deadline: float, request: httpx.Request):
        self._stream = stream
        self._deadline = deadline
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if time.monotonic() > self._deadline:
                raise httpx.ReadTimeout(_message(self._request), request=self._request)
            yield chunk

    def close(self) -> None:
        self._stream.close()


def _message(request: httpx.Request) -> str:
    return f"no complete answer to {request.method} {request.url.path} within the timeout"


__all__ = ["DEADLINE", "deadline_hooks"]
