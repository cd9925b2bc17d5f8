"""Normalized records: the only shapes the store ever sees.

Connectors build these with their vendor's ``from_api()`` functions; the store
writes them without knowing which vendor they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One vendor event, normalized to the ``events`` columns (less ``source``).

    ``payload`` is the event exactly as received, already serialized as JSON
    bytes, so the store never re-encodes it.
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
    still counts where vendor and local counts are compared.
    """

    reason: str
    raw: Any
    occurred_at: datetime | None = None


class MalformedRecord(ValueError):
    """A vendor record that cannot be normalized; the message is the reason."""


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime (naive means UTC)."""
    if not isinstance(value, str) or not value:
        raise MalformedRecord(f"{field} missing or not a string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedRecord(f"{field} is not an ISO 8601 time: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def optional_text(value: Any, field: str) -> str | None:
    """A text column from a string or integer id; anything else is malformed."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MalformedRecord(f"{field} has the wrong type ({type(value).__name__})")


def required_int(value: Any, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise MalformedRecord(f"{field} missing or not an integer")


def split_page(
    items: Iterable[Any], normalize: Callable[[Any], EventRecord], *time_fields: str
) -> tuple[list[EventRecord], list[RejectedRecord]]:
    """Normalize a page; each record that cannot be becomes a RejectedRecord.

    A rejected record keeps the first readable time among ``time_fields``, so
    it still counts where vendor and local counts are compared.
    """
    records: list[EventRecord] = []
    rejected: list[RejectedRecord] = []
    for raw in items:
        try:
            records.append(normalize(raw))
        except MalformedRecord as exc:
            rejected.append(RejectedRecord(str(exc), raw, readable_time(raw, time_fields)))
    return records, rejected


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
