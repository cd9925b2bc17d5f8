"""DoorFlow (API v3): ``GET /api/3/events``, page-numbered, ``since`` on ``created_at``.

How a pass works, and why (``shared/vendor-docs/FACTS.md``):

- The list is filtered by a **fixed** ``since`` for the whole pass:
  ``watermark - lookback`` (or the configured ``start`` on the first pass), so
  events uploaded late by an offline controller, within the lookback, are
  read again. ``since`` is inclusive: ties at the boundary are re-read and
  deduplicated on ``id``, never lost.
- Page numbers over a list that grows while it is read may repeat rows (an
  insertion before the read position shifts the rest down) and miss the
  inserted rows themselves, but never skip a row that was there when the pass
  began, as long as ``since`` stays fixed. What a pass misses that way is new:
  on-time events (newer than the watermark) or late ones, which the next pass
  reads from ``watermark - lookback`` or finds by reconciliation. The pass
  keeps the number of list positions it has consumed (``offset``) in the
  cursor after every page, so a crash resumes at the same page; if the
  server's page size or order changes under it (a flavor switch), the pass
  restarts at offset 0 rather than risk a skip.
- Every event code is asked for explicitly: without ``event_codes`` the API
  returns only admits and rejects.
- The watermark (newest ``created_at`` committed, never past ``now``) only
  becomes the next pass's ``since`` once a pass has finished, so the order
  the server returns (``sort=ASC`` honoured or not) does not matter.
- A late event older than the lookback is found by **reconciliation**: at the
  start of a pass the vendor's count of events between the reconcile horizon
  and the pass's ``since`` (two ``Total`` / ``total_count`` probes) is
  compared with the local count of stored and rejected records there. If the
  vendor has more than syncd could explain by rejected records without a
  readable time (which cannot be placed in the window), the pass reads from
  the horizon instead. No deficit is ever "accepted" as known, so a missed
  event cannot be hidden; the price is that a vendor whose counts never
  match costs a horizon re-read every pass (logged as ``reconcile_needed``).
- Known limit: when the source has rejected records without a readable time,
  as many missing events as there are such records can go unnoticed by
  reconciliation (they are indistinguishable by count).
- Both response shapes (bare array + ``Total``/``Per-Page`` headers, and
  ``{"events", "pagination"}``) and both field namings are accepted; the
  request carries both parameter families.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import structlog

from syncd.errors import ConfigError, SourceError
from syncd.records import (
    EventRecord,
    MalformedRecord,
    RejectedRecord,
    optional_text,
    parse_time,
    required_int,
    split_page,
)
from syncd.sources.auth import BearerToken, OAuthRefresh
from syncd.sources.base import CodeInfo, Cursor, Page, SourceContext
from syncd.sources.http import RetryPolicy, send

if TYPE_CHECKING:
    from syncd.config import SourceConfig

log = structlog.get_logger(__name__)

VENDOR = "doorflow"
EVENTS_PATH = "/api/3/events"
GUIDE_MAX_PER_PAGE = 500
DEFAULT_FIRST_PASS = timedelta(days=7)

# Every code the API reference lists; asked for explicitly on every request.
ALL_EVENT_CODES: tuple[int, ...] = (
    *range(1, 4),
    *range(10, 19),
    *range(20, 30),
    *range(30, 38),
    *range(40, 43),
    *range(50, 64),
    *range(70, 74),
    90,
    91,
    *range(100, 108),
    220,
    223,
    224,
    225,
)


# -- normalization -------------------------------------------------------------


def _first(raw: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = raw.get(name)
        if value is not None:
            return value
    return None


def _credential(raw: Mapping[str, Any]) -> str | None:
    value = _first(raw, "credentials_number", "credential_id")
    if value is None:
        extra = raw.get("additional_data")
        if isinstance(extra, dict):
            value = extra.get("card_number")
    return optional_text(value, "credentials_number")


def from_api(raw: Any, codes: Mapping[int, CodeInfo]) -> EventRecord:
    """Normalize one DoorFlow event (either field naming); raise MalformedRecord."""
    if not isinstance(raw, dict):
        raise MalformedRecord(f"event is a {type(raw).__name__}, not an object")
    event_id = _first(raw, "id", "event_id")
    if event_id is None:
        raise MalformedRecord("id missing")
    key = required_int(event_id, "id")
    occurred_at = parse_time(_first(raw, "created_at", "occurred_at"), "created_at")
    code = required_int(raw.get("event_code"), "event_code")
    updated = raw.get("updated_at")
    info = codes.get(code)
    label = _first(raw, "event_label", "description")
    if label is not None and not isinstance(label, str):
        raise MalformedRecord(f"event_label has the wrong type ({type(label).__name__})")
    return EventRecord(
        event_key=str(key),
        vendor=VENDOR,
        occurred_at=occurred_at,
        event_code=code,
        category=info.category if info else "other",
        label=label if label is not None else (info.label if info else None),
        payload=orjson.dumps(raw),
        door_id=optional_text(_first(raw, "door_controller_id", "channel_id"), "channel_id"),
        door_name=optional_text(
            _first(raw, "door_controller_name", "channel_name"), "channel_name"
        ),
        person_id=optional_text(raw.get("person_id"), "person_id"),
        person_name=optional_text(raw.get("person_name"), "person_name"),
        credential=_credential(raw),
        source_updated_at=None if updated is None else parse_time(updated, "updated_at"),
    )


def normalize_page(
    items: list[Any], codes: Mapping[int, CodeInfo]
) -> tuple[list[EventRecord], list[RejectedRecord]]:
    return split_page(items, lambda raw: from_api(raw, codes), "created_at", "occurred_at")


# -- the cursor and paging arithmetic (pure) -----------------------------------


@dataclass(frozen=True, slots=True)
class PassState:
    """Where a pass in progress stands: its fixed ``since`` and positions consumed."""

    since: datetime
    offset: int = 0
    per_page: int | None = None  # the server's page size, once seen
    order: str | None = None  # "asc" / "desc", once seen
    shape: str | None = None  # "array" / "object", once seen

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "offset": self.offset,
            "per_page": self.per_page,
            "order": self.order,
            "shape": self.shape,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PassState:
        return cls(
            since=datetime.fromisoformat(data["since"]),
            offset=int(data.get("offset", 0)),
            per_page=data.get("per_page"),
            order=data.get("order"),
            shape=data.get("shape"),
        )


@dataclass(frozen=True, slots=True)
class DoorFlowCursor:
    origin: datetime  # where the first pass began; nothing before it is wanted
    watermark: datetime | None = None  # newest created_at committed (never past a pass's now)
    current: PassState | None = None  # a pass in progress

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "origin": self.origin.isoformat(),
            "watermark": self.watermark.isoformat() if self.watermark else None,
        }
        if self.current is not None:
            data["pass"] = self.current.to_json()
        return data

    @classmethod
    def from_json(cls, data: Cursor, start: datetime) -> DoorFlowCursor:
        if not data:
            return cls(origin=start)
        watermark = data.get("watermark")
        current = data.get("pass")
        return cls(
            origin=datetime.fromisoformat(data["origin"]),
            watermark=datetime.fromisoformat(watermark) if watermark else None,
            current=PassState.from_json(current) if current else None,
        )


def regular_since(cursor: DoorFlowCursor, lookback: timedelta) -> datetime:
    """``since`` for a fresh pass: behind the watermark by the lookback, never before origin."""
    if cursor.watermark is None:
        return cursor.origin
    return max(cursor.origin, cursor.watermark - lookback)


def reconcile_horizon(cursor: DoorFlowCursor, now: datetime, window: timedelta) -> datetime:
    return max(cursor.origin, now - window)


def page_number(state: PassState, requested: int) -> int:
    """The 1-based page holding position ``offset`` (rounding down: re-read, never skip)."""
    size = state.per_page or requested
    return state.offset // size + 1


def detect_order(records: list[EventRecord]) -> str | None:
    if len(records) < 2:
        return None
    first, last = records[0].occurred_at, records[-1].occurred_at
    if first < last:
        return "asc"
    if first > last:
        return "desc"
    return None


def advance_watermark(
    watermark: datetime | None, records: list[EventRecord], now: datetime
) -> datetime | None:
    """The newest ``created_at`` committed, but never past ``now`` (controller clock skew)."""
    newest = max((r.occurred_at for r in records), default=None)
    if newest is None:
        return watermark
    newest = min(newest, now)
    return newest if watermark is None else max(watermark, newest)


@dataclass(frozen=True, slots=True)
class ListResponse:
    items: list[Any]
    shape: str
    total: int | None
    per_page: int | None


def read_list_response(body: Any, headers: httpx.Headers) -> ListResponse:
    """Both documented shapes: bare array + headers, or ``{events, pagination}``."""
    if isinstance(body, list):
        return ListResponse(
            body, "array", _int_or_none(headers.get("Total")), _int_or_none(headers.get("Per-Page"))
        )
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        pagination = body.get("pagination")
        pagination = pagination if isinstance(pagination, dict) else {}
        return ListResponse(
            body["events"],
            "object",
            _int_or_none(pagination.get("total_count")),
            _int_or_none(pagination.get("per_page")),
        )
    raise SourceError("DoorFlow answered the events list with an unexpected JSON shape")


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class PageStep:
    """What to do after a page: the new pass state and whether the pass is done."""

    state: PassState
    done: bool
    restarted: bool = False
    refetch: bool = False


def step(
    state: PassState,
    page_no: int,
    requested: int,
    response: ListResponse,
    records: list[EventRecord],
) -> PageStep:
    """Advance a pass over one fetched page (pure: the paging rules in one place)."""
    per_page = response.per_page or requested
    order = detect_order(records) or state.order
    changed_shape = state.shape is not None and response.shape != state.shape
    changed_order = state.order is not None and order != state.order
    if changed_shape or changed_order:
        # The server changed under the pass (page size or order): positions
        # consumed so far mean nothing in the new listing. Start over.
        fresh = PassState(state.since, 0, per_page, None, response.shape)
        return PageStep(fresh, done=False, restarted=True)
    start = (page_no - 1) * per_page
    if start > state.offset:
        # The server's pages are larger than assumed: this page starts past
        # what was consumed. Fetch the page that holds the offset instead.
        return PageStep(
            replace(state, per_page=per_page, shape=response.shape), False, refetch=True
        )
    count = len(response.items)
    offset = max(state.offset, start + count)
    new = PassState(state.since, offset, per_page, order, response.shape)
    short = count < per_page
    reached_total = response.total is not None and start + count >= response.total
    return PageStep(new, done=count == 0 or short or reached_total)


# -- the connector ---------------------------------------------------------------


class DoorFlowSource:
    """A DoorFlow account as a :class:`~syncd.sources.base.Source`."""

    def __init__(self, config: SourceConfig, client: httpx.Client, context: SourceContext) -> None:
        self.config = config
        self.client = client
        self.context = context
        self.policy = RetryPolicy.for_source(config, context)
        self.client.auth = self._auth()

    def _auth(self) -> httpx.Auth:
        config = self.config
        if config.oauth is not None:
            refresh = self.context.refresh_token or config.oauth.refresh_token.reveal()
            return OAuthRefresh(
                token_url=f"{config.base_url}/oauth/token",
                client_id=config.oauth.client_id.reveal(),
                client_secret=config.oauth.client_secret.reveal(),
                refresh_token=refresh,
                on_rotate=self.context.save_refresh_token,
            )
        if config.api_key is not None:
            return httpx.BasicAuth(config.api_key.reveal(), "X")
        if config.token is not None:
            return BearerToken(config.token.reveal())
        raise ConfigError(f"sources[{config.name}]: no credentials configured")

    # -- requests --

    def _params(self, since: datetime, page: int, size: int, sort: str) -> list[tuple[str, Any]]:
        stamp = since.isoformat().replace("+00:00", "Z")
        params: list[tuple[str, Any]] = [
            ("since", stamp),
            ("since_utc", stamp),
            ("sort", sort),
            ("n", size),
            ("per_page", min(size, GUIDE_MAX_PER_PAGE)),
            ("page", page),
            ("event_codes", ",".join(map(str, ALL_EVENT_CODES))),
        ]
        params.extend(("event_code", code) for code in ALL_EVENT_CODES)
        return params

    def _list(self, since: datetime, page: int, size: int, sort: str = "ASC") -> ListResponse:
        params = self._params(since, page, size, sort)
        response, body = send(
            self.client,
            lambda c: c.get(EVENTS_PATH, params=params),
            policy=self.policy,
            source=self.config.name,
        )
        return read_list_response(body, response.headers)

    def vendor_count(self, since: datetime) -> int | None:
        """The vendor's count of events since ``since`` (one tiny request)."""
        return self._list(since, page=1, size=1, sort="DESC").total

    def deficit(self, since: datetime, until: datetime) -> int | None:
        """Vendor count minus local count of events with ``since <= created_at < until``.

        The reference API has no ``until``, so this is the difference of two
        counts. The upper bound is asked first: an event arriving between the
        two requests can then only make the deficit look larger (an extra
        re-read), never hide one.
        """
        if self.context.count_local is None or until <= since:
            return None
        above_until = self.vendor_count(until)
        above_since = self.vendor_count(since)
        if above_until is None or above_since is None:
            return None
        return (above_since - above_until) - int(self.context.count_local(since, until))

    # -- a pass --

    def pages(self, cursor: Cursor, now: datetime) -> Iterator[Page]:
        start = self.config.start or (now - DEFAULT_FIRST_PASS)
        state = DoorFlowCursor.from_json(cursor, start)
        if state.current is None:
            state = self._plan(state, now)
        yield from self._read(state, now)

    def _plan(self, cursor: DoorFlowCursor, now: datetime) -> DoorFlowCursor:
        """Choose a fresh pass's ``since``: behind the watermark, or the horizon."""
        since = regular_since(cursor, timedelta(seconds=self.config.lookback))
        horizon = reconcile_horizon(cursor, now, timedelta(days=self.config.reconcile_days))
        if cursor.watermark is not None and horizon < since:
            deficit = self.deficit(horizon, since)
            unplaced = self.context.count_unplaced() if self.context.count_unplaced else 0
            if deficit is not None and deficit > unplaced:
                log.info(
                    "reconcile_needed",
                    source=self.config.name,
                    vendor_minus_local=deficit,
                    unplaced_rejects=unplaced,
                    since=horizon.isoformat(),
                )
                since = horizon
        return replace(cursor, current=PassState(since))

    def _read(self, cursor: DoorFlowCursor, now: datetime) -> Iterator[Page]:
        size = self.config.page_size
        current = cursor.current
        assert current is not None
        while True:
            page_no = page_number(current, size)
            response = self._list(current.since, page_no, size)
            records, rejected = normalize_page(response.items, self.context.codes)
            move = step(current, page_no, size, response, records)
            if move.restarted:
                log.warning("pass_restarted", source=self.config.name, reason="listing changed")
            current = move.state
            if move.refetch or move.restarted:
                continue
            watermark = advance_watermark(cursor.watermark, records, now)
            cursor = replace(cursor, watermark=watermark, current=None if move.done else current)
            yield Page(records, rejected, cursor.to_json())
            if move.done:
                return


SOURCE = DoorFlowSource
