"""``/readyz`` without an HTTP worker ever waiting on the database.

A database that stops answering (a network partition: packets dropped, not
refused) leaves a query blocked until TCP gives up, minutes later. Asked from
the HTTP worker, each probe would hold one of cheroot's few threads: a few
stuck probes, and ``/healthz`` (which needs no database) times out too, so
Kubernetes restarts the pod for the wrong reason; and cheroot's stop joins
the blocked worker, so SIGTERM waits for the database too.

:class:`Readiness` runs the probe in a thread of its own, one at a time, and
answers from its outcome: a fresh one (under :data:`FRESH` s old) at once;
else it starts a probe (unless one is already running) and waits for it at
most :data:`WAIT` s in all, counted from when that probe began. A probe that
does not answer in time reads as "not answering"; it may stay blocked, alone,
in a daemon thread, and the next question after it ends starts a new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

WAIT = 1.5  # seconds a /readyz waits for a probe, at most: the contract's answer within 2 s
FRESH = 1.0  # seconds an outcome is reused (probes from several kubelets cost one query)

Probe = Callable[[], str | None]  # None when ready, else the reason


class Readiness:
    """``check()``: None when ready, else why not; never blocks longer than ``wait``."""

    def __init__(
        self,
        probe: Probe,
        *,
        wait: float = WAIT,
        fresh: float = FRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._wait = wait
        self._fresh = fresh
        self._clock = clock
        self._lock = threading.Lock()
        self._outcome: tuple[float, str | None] | None = None  # (when it ended, reason)
        self._running: tuple[float, threading.Event] | None = None  # (when it began, its end)

    def check(self) -> str | None:
        with self._lock:
            now = self._clock()
            if self._outcome is not None and now - self._outcome[0] < self._fresh:
                return self._outcome[1]
            if self._running is None:
                self._running = (now, threading.Event())
                threading.Thread(
                    target=self._run, args=(self._running[1],), name="syncd-readyz", daemon=True
                ).start()
            began, ended = self._running
        if ended.wait(max(0.0, began + self._wait - self._clock())):
            with self._lock:
                assert self._outcome is not None
                return self._outcome[1]
        return f"database not answering (no answer within {self._wait:g}s)"

    def _run(self, ended: threading.Event) -> None:
        try:
            reason = self._probe()
        except Exception as exc:  # the probe's own errors are its answer
            reason = f"readiness probe failed: {type(exc).__name__}"
        with self._lock:
            self._outcome = (self._clock(), reason)
            self._running = None
        ended.set()
