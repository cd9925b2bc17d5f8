"""Fault injection: per-request probabilities drawn from a seeded RNG."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

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


MALFORMED_KINDS = ("missing_id", "missing_time", "bad_time", "bad_code", "wrong_types")
"""Records a connector must reject (the default ``malformed_kinds``)."""
POISON_KINDS = ("nul", "surrogate", "huge_int")
"""Records that once stalled a source: a NUL in a string (PostgreSQL refuses it),
a lone surrogate escape (orjson refuses the whole body), an integer past its
column (``event_code`` past int4, ``sequence_id`` past int8)."""
ALL_KINDS = MALFORMED_KINDS + POISON_KINDS
_SURROGATE_MARK = "@@syncd-lone-surrogate@@"


def kind_indexes(kinds: Iterable[str] | None) -> tuple[int, ...]:
    """``malformed_kinds`` as indexes into :data:`ALL_KINDS` (None: the classic five)."""
    chosen = MALFORMED_KINDS if kinds is None else tuple(kinds)
    unknown = [k for k in chosen if k not in ALL_KINDS]
    if unknown or not chosen:
        raise ValueError(f"malformed_kinds must be a non-empty subset of {ALL_KINDS}")
    return tuple(ALL_KINDS.index(k) for k in chosen)


def poison(record: dict[str, Any], kind: str, int_field: str, huge: int, skip: str) -> bytes:
    """``record`` served with the poison ``kind`` (see :data:`POISON_KINDS`) as JSON bytes.

    The string poisoned is the record's first string field other than ``skip``
    (its time, so the rejected record still has a readable time).
    """
    if kind == "huge_int":
        record[int_field] = huge
        return orjson.dumps(record)
    field = next(k for k, v in record.items() if isinstance(v, str) and k != skip)
    if kind == "nul":
        record[field] = f"{record[field]}\x00tail"
        return orjson.dumps(record)
    record[field] = _SURROGATE_MARK
    return orjson.dumps(record).replace(_SURROGATE_MARK.encode(), b"\\ud800")
