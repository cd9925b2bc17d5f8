"""Clocks and timestamp helpers for the simulators.

Internally every simulator time is an integer count of microseconds since the
Unix epoch (UTC): cheap to compare, sort and bisect, exact to format.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000
"""Microseconds per second."""

DEFAULT_START = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
"""Where a :class:`SimClock` starts when not told (a Monday, midday)."""


class Clock(Protocol):
    """Anything that tells the time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class WallClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class SimClock:
    """A manual virtual clock: it only moves when told to (thread-safe)."""

    def __init__(self, start: datetime | None = None) -> None:
        start = DEFAULT_START if start is None else start
        if start.tzinfo is None:
            raise ValueError("SimClock needs a timezone-aware start")
        self._us = to_us(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return from_us(self._us)

    def now_us(self) -> int:
        return self._us

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (never backwards); return the new time."""
        if seconds < 0:
            raise ValueError("a SimClock never goes backwards")
        with self._lock:
            self._us += round(seconds * US)
            return from_us(self._us)

    def set(self, when: datetime) -> None:
        """Jump to ``when``, which must not be earlier than now."""
        target = to_us(when)
        with self._lock:
            if target < self._us:
                raise ValueError("a SimClock never goes backwards")
            self._us = target


def clock_us(clock: Clock) -> int:
    """``clock.now()`` in epoch microseconds (fast paths for the two known clocks)."""
    if isinstance(clock, SimClock):
        return clock.now_us()
    if isinstance(clock, WallClock):
        return time.time_ns() // 1000
    return to_us(clock.now())


def to_us(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: give a timezone")
    return (when - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


_prefixes: dict[int, str] = {}


def _minute_prefix(minute: int) -> str:
    prefix = _prefixes.get(minute)
    if prefix is None:
        if len(_prefixes) > 500_000:
            _prefixes.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
        _prefixes[minute] = prefix
    return prefix


def iso_ms(us: int, offset_minutes: int = 0) -> str:
    """``2024-01-15T14:30:00.123Z``, or with ``+01:00`` etc. for the same instant."""
    local_ms = (us + offset_minutes * 60 * US) // 1000
    minute, rest = divmod(local_ms, 60_000)
    seconds, millis = divmod(rest, 1000)
    if offset_minutes == 0:
        suffix = "Z"
    else:
        sign = "+" if offset_minutes > 0 else "-"
        hours, mins = divmod(abs(offset_minutes), 60)
        suffix = f"{sign}{hours:02d}:{mins:02d}"
    return f"{_minute_prefix(minute)}{seconds:02d}.{millis:03d}{suffix}"


def iso_s(us: int) -> str:
    """``2024-01-15T14:30:00Z`` (whole seconds, truncated)."""
    minute, rest = divmod(us // US, 60)
    return f"{_minute_prefix(minute)}{rest:02d}Z"


def parse_iso(text: str) -> int:
    """Parse an ISO 8601 timestamp or date into epoch microseconds.

    Naive values are taken as UTC. A ``+`` that a query string turned into a
    space (``...T10:00:00 01:00``) is forgiven. Raises ``ValueError``.
    """
    text = text.strip()
    if "T" in text and len(text) > 6 and text[-6] == " " and text[-3] == ":":
        text = text[:-6] + "+" + text[-5:]
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return to_us(when)
