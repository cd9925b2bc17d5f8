"""Normalized records: the only shapes the store ever sees.

Connectors build these with their vendor's ``from_api()`` functions; the store
writes them without knowing which vendor they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
    """A record a connector could not normalize, kept with the reason."""

    reason: str
    raw: Any
