"""An in-memory DoorFlow list endpoint with the quirks seen in the wild.

Independent of ``syncd.simulators`` on purpose: it is small enough to read in
one go, and every quirk is a plain attribute a test or a Hypothesis strategy
can flip between (or during) passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass
class FakeDoorFlow:
    honour_sort: bool = True  # False: newest first whatever is asked (the guide)
    shape: str = "array"  # "array" + Total/Per-Page headers, or "object" {events, pagination}
    max_per_page: int = 1000  # a cap the server applies to n
    fixed_page_size: int | None = None  # pages of exactly this size, whatever n says
    state_size: bool = True  # False: no Per-Page header / pagination.per_page
    total_bias: int = 0  # Total reported = real + bias (negative: a Total that runs low)
    order_by_id: bool = False  # sort by id, not created_at: late uploads sit at the end
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    on_request: Callable[[FakeDoorFlow], None] | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    next_id: int = 1

    def add(self, created: datetime, name: str = "A", code: int = 10) -> int:
        event_id = self.next_id
        self.next_id += 1
        self.events[event_id] = {
            "id": event_id,
            "event_code": code,
            "person_name": name,
            "created_at": iso(created),
            "updated_at": iso(created),
        }
        return event_id

    def add_malformed(self, created: datetime | None) -> int:
        """A record syncd must reject; with ``created`` None its time is unreadable too."""
        event_id = self.next_id
        self.next_id += 1
        self.events[event_id] = {
            "id": event_id,
            "event_code": "not a code",
            "created_at": iso(created) if created else None,
            "_sort_at": iso(created or T0),
        }
        return event_id

    def rename(self, event_id: int, name: str, at: datetime) -> None:
        self.events[event_id] = {
            **self.events[event_id],
            "person_name": name,
            "updated_at": iso(at),
        }

    def _created(self, event: dict[str, Any]) -> str:
        return str(event.get("created_at") or event["_sort_at"])

    def listed(self, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
        """What the list holds for ``since`` (and ``until_utc``), in no particular order."""
        return [
            e
            for e in self.events.values()
            if datetime.fromisoformat(self._created(e)) >= since
            and (until is None or datetime.fromisoformat(self._created(e)) < until)
        ]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(self)
        params = request.url.params
        since = datetime.fromisoformat(params["since"])
        until_text = params.get("until_utc") if self.shape == "object" else None
        until = datetime.fromisoformat(until_text) if until_text else None
        size = self.fixed_page_size or min(int(params["n"]), self.max_per_page)
        page = int(params["page"])
        rows = self.listed(since, until)
        descending = not self.honour_sort or params.get("sort", "DESC") == "DESC"
        if self.order_by_id:
            rows.sort(key=lambda e: e["id"], reverse=descending)
        else:
            rows.sort(key=lambda e: (self._created(e), e["id"]), reverse=descending)
        chunk = [{k: v for k, v in e.items() if k != "_sort_at"} for e in rows]
        chunk = chunk[(page - 1) * size : page * size]
        total = max(0, len(rows) + self.total_bias)
        if self.shape == "array":
            headers = {"Total": str(total)}
            if self.state_size:
                headers["Per-Page"] = str(size)
            return httpx.Response(200, json=chunk, headers=headers)
        pagination: dict[str, Any] = {"page": page, "total_count": total}
        if self.state_size:
            pagination["per_page"] = size
        return httpx.Response(200, json={"events": chunk, "pagination": pagination})
