"""Fault injection: per-request probabilities drawn from a seeded RNG."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Literal

RetryAfterIn = Literal["header", "body", "both"]
FaultKind = Literal["drop", "rate_limit", "server_error"]


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, per request to a list or single-event endpoint.

    ``rate_limit``, ``server_errors`` and ``drop`` are probabilities (their sum
    at most 1): a 429 whose wait (``retry_after`` seconds) comes in a
    ``Retry-After`` header, in the body as ``retry_in``, or both; a 500 or 503
    (half each; the 503 has an HTML body, like a load balancer's); a connection
    closed without any answer. ``latency`` (seconds) delays every such request.
    ``seed`` None: derived from the simulator's seed.
    """

    rate_limit: float = 0.0
    retry_after_in: RetryAfterIn = "header"
    retry_after: float = 0.05
    server_errors: float = 0.0
    drop: float = 0.0
    latency: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("rate_limit", "server_errors", "drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} must be a probability in [0, 1], not {value}")
        if self.rate_limit + self.server_errors + self.drop > 1.0 + 1e-9:
            raise ValueError("Faults: rate_limit + server_errors + drop must not exceed 1")
        if self.retry_after_in not in ("header", "body", "both"):
            raise ValueError("Faults.retry_after_in must be 'header', 'body' or 'both'")
        if self.retry_after < 0 or self.latency < 0:
            raise ValueError("Faults.retry_after and Faults.latency must be >= 0")


class FaultInjector:
    """Draws the fault (if any) for each request; thread-safe and seeded."""

    def __init__(self, faults: Faults, default_seed: int) -> None:
        self.faults = faults
        seed = faults.seed if faults.seed is not None else default_seed
        self._rng = random.Random(f"faults-{seed}")
        self._lock = threading.Lock()

    def draw(self) -> tuple[FaultKind | None, int]:
        """The fault for one request, and for a server error its status."""
        f = self.faults
        if not (f.rate_limit or f.server_errors or f.drop):
            return None, 0
        with self._lock:
            r = self._rng.random()
            status = 500 if self._rng.random() < 0.5 else 503
        if r < f.drop:
            return "drop", 0
        if r < f.drop + f.rate_limit:
            return "rate_limit", 429
        if r < f.drop + f.rate_limit + f.server_errors:
            return "server_error", status
        return None, 0
