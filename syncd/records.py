"""Normalized records: the only shapes the store ever sees.

Connectors build these with their vendor's ``from_api()`` functions; the store
writes them without knowing which vendor they came from.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import structlog

log = structlog.get_logger(__name__)

CATEGORIES = (
    "access_granted",
    "access_denied",
    "exit_request",
    "door_state",
    "tamper",
    "remote_control",
    "device_status",
    "sync",
    "other",
)


class EventRecord(NamedTuple):
    """One vendor event, normalized to the ``events`` columns (less ``source``).

    ``payload`` is the event exactly as received, already serialized as JSON
    bytes, so the store never re-encodes it. A named tuple rather than a
    frozen dataclass: just as immutable, and built in a third of the time,
    which counts at one per event (``bench/compare.py``).
    """

    event_key: str
    vendor: str
    occurred_at: datetime
    event_code: int
    category: str
    label: str | None
    payload: bytes
    door_id: str | None = None
    door_name: str | None = None
    person_id: str | None = None
    person_name: str | None = None
    credential: str | None = None
    system_id: str | None = None
    sequence_id: int | None = None
    source_updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record a connector could not normalize, kept with the reason.

    ``occurred_at`` is its time when that much could be read, so the record
    still counts where vendor and local counts are compared. ``event_key`` is
    its vendor natural key when that much could be read: the store keeps one
    row per key however often (and however changed) the record is re-served,
    and one row per content when it has none. ``raw`` is always storable
    (see :func:`storable`).
    """

    reason: str
    raw: Any
    occurred_at: datetime | None = None
    event_key: str | None = None
    placed_at: datetime | None = None
    """No readable time: the time of its neighbour in the listing (see :func:`place`)."""

    @property
    def counted_at(self) -> datetime | None:
        """Where the record counts: its own time, else where the listing placed it."""
        return self.occurred_at if self.occurred_at is not None else self.placed_at


class MalformedRecord(ValueError):
    """A vendor record that cannot be normalized; the message is the reason."""


# Characters neither PostgreSQL ``text`` nor ``jsonb`` can hold: NUL, and lone
# UTF-16 surrogates (Python's json decodes ``"\ud800"`` into one; valid pairs
# become a single code point, so any surrogate left in a str is a lone one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,20}")  # ASCII digits only: str.isdigit() takes "²"
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Times of events syncd accepts: anything outside is a vendor's garbage."""
INT4 = (-(2**31), 2**31 - 1)
INT8 = (-(2**63), 2**63 - 1)


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime (naive means UTC)."""
    if not isinstance(value, str) or not value:
        raise MalformedRecord(f"{field} missing or not a string")
    try:
        parsed = datetime.fromisoformat(value)
        # Converting e.g. 0001-01-01T00:00+05:00 to UTC leaves datetime's range.
        when = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise MalformedRecord(f"{field} is not an ISO 8601 time in range: {value[:40]!r}") from exc
    if not EARLIEST <= when < LATEST:
        # Cursor arithmetic shifts times by lookbacks and windows: a watermark
        # in year 1 would overflow the next pass's ``since``.
        raise MalformedRecord(f"{field} is out of range: {value[:40]!r}")
    return when


def optional_text(value: Any, field: str) -> str | None:
    """A text column from a string or integer id; anything else is malformed."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MalformedRecord(f"{field} has the wrong type ({type(value).__name__})")


def required_int(value: Any, field: str, bounds: tuple[int, int] = INT8) -> int:
    """An integer (or ASCII decimal text) that fits the column: ``bounds`` inclusive.

    Out of range is malformed, never wrapped or truncated: ``event_code`` is an
    ``integer`` column (pass :data:`INT4`), ``sequence_id`` a ``bigint``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise MalformedRecord(f"{field} missing or not an integer")
    low, high = bounds
    if not low <= number <= high:
        raise MalformedRecord(f"{field} is out of range ({str(number)[:30]})")
    return number


def int_text(value: Any) -> int | None:
    """A non-negative integer from a header or metadata value, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()) and value.strip()[0] != "-":
        return int(value.strip())
    return None


# -- what storage can hold ----------------------------------------------------------


def _strings(raw: Any) -> Iterator[Any]:
    """Every scalar and key in a JSON value, iteratively (no recursion limit)."""
    stack = [raw]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def unstorable(raw: Any) -> str | None:
    """Why ``raw`` cannot be stored as it is, or None when it can.

    PostgreSQL refuses NUL and lone surrogates in ``text`` and ``jsonb``, and
    ``jsonb`` has no infinite or NaN numbers (SQLite would keep all three:
    the rule is the same on both so a record's fate never depends on the
    database).
    """
    for item in _strings(raw):
        if isinstance(item, str):
            found = _UNSTORABLE.search(item)
            if found is not None:
                char = found.group()
                return "a NUL character" if char == "\x00" else "a lone surrogate"
        elif isinstance(item, float) and not math.isfinite(item):
            return "a number out of range"
    return None


def _escape_text(text: str) -> str:
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def storable(raw: Any) -> Any:
    """``raw`` with every unstorable value written as text: NUL as the six
    characters ``\\u0000``, a lone surrogate likewise, a non-finite number as
    ``"inf"``/``"nan"``. Only rejected records are stored this way (their
    reason says so); events holding such values are rejected."""
    if isinstance(raw, str):
        return _escape_text(raw)
    if isinstance(raw, float) and not math.isfinite(raw):
        return repr(raw)
    if isinstance(raw, list):
        return [storable(item) for item in raw]
    if isinstance(raw, dict):
        return {_escape_text(str(k)): storable(v) for k, v in raw.items()}
    return raw


def to_json(raw: Any, *, sort_keys: bool = False) -> bytes:
    """``raw`` as JSON bytes; integers beyond 64 bits (which orjson refuses)
    go through the standard library, which both databases' JSON types accept."""
    try:
        return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        text = json.dumps(raw, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
        return text.encode("utf-8", "surrogatepass")


# -- a page ---------------------------------------------------------------------------


def split_page(
    items: Iterable[Any],
    normalize: Callable[[Any], EventRecord],
    *time_fields: str,
    identify: Callable[[Any], str | None] | None = None,
    screened: bool = False,
) -> tuple[list[EventRecord], list[RejectedRecord]]:
    """Normalize a page; each record that cannot be becomes a RejectedRecord.

    The rule for every vendor: nothing about one record stops the page. A
    record holding a value storage cannot hold is rejected before it is
    normalized; one that normalization refuses (:class:`MalformedRecord`) or
    trips over in any other way is rejected with the reason. A rejected
    record keeps the first readable time among ``time_fields``, so it still
    counts where vendor and local counts are compared, and its vendor key
    from ``identify`` when it has one. ``screened``: the page was checked as a
    whole (:func:`syncd.sources.http.parse_page`), so no record needs the walk.
    """
    records: list[EventRecord] = []
    rejected: list[RejectedRecord] = []
    order: list[datetime | RejectedRecord | None] = []  # listing order: times and rejects
    for raw in items:
        reason = _try_normalize(raw, normalize, records, screened)
        if reason is not None:
            rejected.append(reject(raw, reason, time_fields, identify))
            order.append(rejected[-1])
        else:
            order.append(records[-1].occurred_at)
    if any(r.occurred_at is None for r in rejected):
        rejected = place(order)
    return records, rejected


def place(order: list[datetime | RejectedRecord | None]) -> list[RejectedRecord]:
    """The rejects of a page, each without a readable time placed by its neighbours.

    A listing is ordered (by time, or by id, which follows arrival): a record
    whose time cannot be read sits among events of about its time. It takes
    the time of the nearest readable record before it in the page, so it
    counts in the span its neighbours count in and a
    clean history compares equal with the vendor's counts. One without a
    readable neighbour on each side in the page (at a page's edge) is left
    unplaced: it might belong on either side of a window's bound.
    """
    times = [
        item if isinstance(item, datetime) else getattr(item, "occurred_at", None) for item in order
    ]
    placed: list[RejectedRecord] = []
    for index, item in enumerate(order):
        if not isinstance(item, RejectedRecord):
            continue
        if item.occurred_at is None:
            before = next((t for t in reversed(times[:index]) if t is not None), None)
            after = next((t for t in times[index + 1 :] if t is not None), None)
            # Between two readable neighbours only: a record at a page's edge
            # could belong on either side of a window's bound, so it stays
            # unplaced (it then counts nowhere, as before: never masks).
            placed.append(replace(item, placed_at=before if after is not None else None))
        else:
            placed.append(item)
    return placed


def _try_normalize(
    raw: Any,
    normalize: Callable[[Any], EventRecord],
    records: list[EventRecord],
    screened: bool,
) -> str | None:
    problem = None if screened else unstorable(raw)
    if problem is not None:
        return f"record holds {problem}, which the database cannot store"
    try:
        records.append(normalize(raw))
    except MalformedRecord as exc:
        return str(exc)
    except Exception as exc:  # one record must never stop a page
        log.warning("record_normalization_failed", error_type=type(exc).__name__, exc_info=True)
        return f"could not be normalized ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def reject(
    raw: Any,
    reason: str,
    time_fields: Iterable[str],
    identify: Callable[[Any], str | None] | None = None,
) -> RejectedRecord:
    """A RejectedRecord for ``raw`` whose every field the store can hold."""
    if unstorable(raw) is not None:
        reason += "; stored with those characters written as \\uXXXX text"
        raw = storable(raw)
    key = _identity(raw, identify)
    return RejectedRecord(_escape_text(reason), raw, readable_time(raw, time_fields), key)


def _identity(raw: Any, identify: Callable[[Any], str | None] | None) -> str | None:
    if identify is None:
        return None
    try:
        key = identify(raw)
    except Exception:  # no key is a valid answer: keyed by content then
        return None
    return key if key is not None and unstorable(key) is None else None


def readable_time(raw: Any, fields: Iterable[str]) -> datetime | None:
    if not isinstance(raw, dict):
        return None
    for field in fields:
        if raw.get(field) is not None:
            try:
                return parse_time(raw[field], field)
            except MalformedRecord:
                return None
    return None
