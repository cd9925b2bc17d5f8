"""Small builders for normalized records used across tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from syncd.records import EventRecord

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def event(
    key: int | str,
    *,
    version: int = 0,
    occurred_at: datetime | None = None,
    updated_at: datetime | None = None,
    name: str | None = None,
    **extra: Any,
) -> EventRecord:
    """An event whose content (payload, person_name) depends on ``version``."""
    occurred = occurred_at or T0 + timedelta(seconds=int(str(key).split("|")[-1] or 0) % 86400)
    person = name if name is not None else f"Person {key} v{version}"
    payload = {"id": key, "person_name": person, "version": version}
    fields: dict[str, Any] = {
        "event_key": str(key),
        "vendor": "doorflow",
        "occurred_at": occurred,
        "event_code": 10,
        "category": "access_granted",
        "label": "Admitted (Card/fob)",
        "payload": orjson.dumps(payload),
        "person_name": person,
        "source_updated_at": updated_at
        if updated_at is not None
        else T0 + timedelta(seconds=version),
    }
    fields.update(extra)
    return EventRecord(**fields)
