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
  cursor after every page, so a crash resumes at the same position (page 1
  is read again first, to learn how the server pages now: :func:`next_page`);
  if the server answers in another shape under it (a flavor switch), the listing
  restarts at offset 0 rather than risk a skip (at most :data:`MAX_RESTARTS`
  times in one run).
- Every *listable* event code is asked for explicitly: without
  ``event_codes`` the API returns only admits and rejects, and naming a code
  it does not list for this method (50-63, remote control, although such
  events exist) is a ``400 bad_request`` "The following event codes are not
  valid for this method: ...". Should a vendor shrink its list further, the
  codes that 400 names are dropped for the life of the connector (logged once
  as ``event_codes_dropped``) and the request is repeated: a shrunk list must
  not stop syncd. Any other 400 fails the pass.
- ``category`` is the vendor's own grouping (``category()``, DESIGN.md
  "Categories"): 13 "Admitted (Request Exit)" is an admit. The label comes
  from the event itself, else from ``event_codes``.
- The watermark (newest ``created_at`` committed, never past ``now``) only
  becomes the next pass's ``since`` once a pass has finished, so the order
  the server returns (``sort=ASC`` honoured or not) does not matter.
- A late event older than the lookback is found by **reconciliation**
  (:mod:`syncd.reconcile`), its own step, using :meth:`DoorFlowSource.vendor_count`
  and :meth:`DoorFlowSource.window_pages`; a pass never re-reads older spans.
- A pass that resumes an interrupted listing finishes it and then reads a
  fresh listing from watermark - lookback (:func:`listings_for_pass`).
- Both response shapes (bare array + ``Total``/``Per-Page`` headers, and
  ``{"events", "pagination"}``) and both field namings are accepted; the
  request carries both parameter families.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import structlog

from syncd.errors import ConfigError, RequestRejected, SourceError
from syncd.records import (
    INT4,
    INT8,
    EventRecord,
    MalformedRecord,
    RejectedRecord,
    int_text,
    optional_text,
    parse_time,
    required_int,
    split_page,
    to_json,
)
from syncd.sources.auth import (
    BearerToken,
    OAuthRefresh,
    SharedOAuth,
    choose_refresh_token,
    token_fingerprint,
)
from syncd.sources.base import CodeInfo, Cursor, Page, SourceContext
from syncd.sources.http import RetryPolicy, parse_page, send

if TYPE_CHECKING:
    from syncd.config import Secret, SourceConfig

log = structlog.get_logger(__name__)

VENDOR = "doorflow"
EVENTS_PATH = "/api/3/events"
TOKEN_INFO_PATH = "/oauth/token/info"  # noqa: S105 (a path, not a secret)
# The scope that reads events (FACTS.md), and its older name.
EVENTS_SCOPES = frozenset({"account.event.access.readonly", "account.event.readonly"})
GUIDE_MAX_PER_PAGE = 500
DEFAULT_FIRST_PASS = timedelta(days=7)

# The codes ``GET /api/3/events`` accepts in ``event_codes`` (DoorFlow's
# OpenAPI, FACTS.md): every code of the reference except 50-63 (remote
# control), which that method answers with a 400. Asked for on every request.
LISTABLE_EVENT_CODES: tuple[int, ...] = (
    *range(1, 4),
    *range(10, 19),
    *range(20, 30),
    *range(30, 38),
    *range(40, 43),
    *range(70, 74),
    90,
    91,
    *range(100, 108),
    220,
    223,
    224,
    225,
)

# The contract's categories (DESIGN.md "Categories"): the vendor's own grouping
# of its codes, never a finer guess. ``event_codes`` is seeded to agree.
_CATEGORY_RANGES: tuple[tuple[range, str], ...] = (
    (range(1, 4), "device_status"),
    (range(10, 19), "access_granted"),  # 13 "Admitted (Request Exit)" is an admit
    (range(20, 30), "access_denied"),
    (range(30, 31), "exit_request"),  # the button was pressed, no admit recorded
    (range(31, 38), "door_state"),
    (range(40, 43), "door_state"),  # automatic-unlock shift
    (range(50, 64), "remote_control"),
    (range(70, 71), "access_granted"),  # MFA admit
    (range(71, 74), "access_denied"),  # MFA rejects
    (range(90, 92), "tamper"),
    (range(100, 108), "sync"),
    (range(220, 226), "sync"),
)


# One lookup per event instead of a scan of the ranges.
_CATEGORY_OF_CODE = {code: name for codes, name in _CATEGORY_RANGES for code in codes}


def category(code: int) -> str:
    """The category of a DoorFlow ``event_code``; ``other`` for any code not listed."""
    return _CATEGORY_OF_CODE.get(code, "other")


_INVALID_CODES = re.compile(
    r"\s*The following event codes are not valid for this method:"
    r"\s*(\d+(?:\s*,\s*\d+)*)\s*\.?\s*",
    re.IGNORECASE,
)


def invalid_event_codes(status: int | None, body: object) -> frozenset[int]:
    """The codes a 400 names as not listable; empty for any other rejection.

    Only a 400 whose ``error_description`` is exactly DoorFlow's sentence
    ("The following event codes are not valid for this method: 50, 51")
    counts: any other 400 is a real rejection and must fail the pass.
    """
    if status != 400 or not isinstance(body, dict):
        return frozenset()
    description = body.get("error_description")
    if not isinstance(description, str):
        return frozenset()
    match = _INVALID_CODES.fullmatch(description)
    if match is None:
        return frozenset()
    return frozenset(int(code) for code in match.group(1).split(","))


def without_codes(codes: tuple[int, ...], invalid: Iterable[int]) -> tuple[int, ...] | None:
    """``codes`` less ``invalid``; ``None`` when that changes nothing or leaves nothing.

    ``None`` means "do not retry": the same request would get the same 400,
    and an empty ``event_codes`` would silently mean "admits and rejects only".
    """
    drop = set(invalid)
    remaining = tuple(code for code in codes if code not in drop)
    if len(remaining) == len(codes) or not remaining:
        return None
    return remaining


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


_Id = int | str | None


class _Fields(msgspec.Struct):
    """The fields of a DoorFlow event that normalization reads, typed (both namings).

    ``msgspec.convert`` checks a record against it in C; a record it accepts
    can only be refused afterwards by a range or a time (checked in
    :func:`from_api`). Any other field is ignored here and kept in the payload.
    """

    event_code: int
    id: int | None = None
    event_id: int | None = None
    created_at: str | None = None
    occurred_at: str | None = None
    updated_at: str | None = None
    event_label: str | None = None
    description: str | None = None
    door_controller_id: _Id = None
    channel_id: _Id = None
    door_controller_name: _Id = None
    channel_name: _Id = None
    person_id: _Id = None
    person_name: _Id = None
    credentials_number: _Id = None
    credential_id: _Id = None
    additional_data: Any = None


def _text(value: int | str | None) -> str | None:
    return value if value is None or type(value) is str else str(value)


def from_api(raw: Any, codes: Mapping[int, CodeInfo]) -> EventRecord:
    """Normalize one DoorFlow event (either field naming); raise MalformedRecord.

    A record of the expected types is read through :class:`_Fields` (about
    half the Python work per event, ``bench/compare.py``); anything else, and
    any record refused on the way, goes through :func:`from_api_checked`,
    whose field-by-field checks decide the outcome and word the reason.
    """
    try:
        f = msgspec.convert(raw, _Fields)
    except Exception:  # ValidationError; also msgspec wording a lone surrogate
        return from_api_checked(raw, codes)
    key = f.id if f.id is not None else f.event_id
    code = f.event_code
    if key is None or not INT8[0] <= key <= INT8[1] or not INT4[0] <= code <= INT4[1]:
        return from_api_checked(raw, codes)
    extra = f.additional_data
    credential = f.credentials_number if f.credentials_number is not None else f.credential_id
    if credential is None and extra is not None:
        return from_api_checked(raw, codes)  # a card number elsewhere: checked the long way
    try:
        created = f.created_at if f.created_at is not None else f.occurred_at
        occurred_at = parse_time(created, "created_at")
        updated = f.updated_at
        source_updated_at = (
            None
            if updated is None
            else occurred_at
            if updated == created
            else parse_time(updated, "updated_at")
        )
    except MalformedRecord:
        return from_api_checked(raw, codes)
    label = f.event_label if f.event_label is not None else f.description
    if label is None:
        info = codes.get(code)
        label = info.label if info else None
    door = f.door_controller_id if f.door_controller_id is not None else f.channel_id
    name = f.door_controller_name if f.door_controller_name is not None else f.channel_name
    return EventRecord(
        str(key),
        VENDOR,
        occurred_at,
        code,
        _CATEGORY_OF_CODE.get(code, "other"),
        label,
        to_json(raw),
        _text(door),
        _text(name),
        _text(f.person_id),
        _text(f.person_name),
        _text(credential),
        None,
        None,
        source_updated_at,
    )


def from_api_checked(raw: Any, codes: Mapping[int, CodeInfo]) -> EventRecord:
    """:func:`from_api` field by field: the judge of every record the fast path
    does not take, and the wording of every reason a record is refused."""
    if not isinstance(raw, dict):
        raise MalformedRecord(f"event is a {type(raw).__name__}, not an object")
    event_id = _first(raw, "id", "event_id")
    if event_id is None:
        raise MalformedRecord("id missing")
    key = required_int(event_id, "id")
    occurred_at = parse_time(_first(raw, "created_at", "occurred_at"), "created_at")
    code = required_int(raw.get("event_code"), "event_code", INT4)
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
        category=category(code),
        label=label if label is not None else (info.label if info else None),
        payload=to_json(raw),
        door_id=optional_text(_first(raw, "door_controller_id", "channel_id"), "channel_id"),
        door_name=optional_text(
            _first(raw, "door_controller_name", "channel_name"), "channel_name"
        ),
        person_id=optional_text(raw.get("person_id"), "person_id"),
        person_name=optional_text(raw.get("person_name"), "person_name"),
        credential=_credential(raw),
        source_updated_at=None if updated is None else parse_time(updated, "updated_at"),
    )


def natural_key(raw: Any) -> str | None:
    """A raw event's ``event_key`` (its integer id as text), when it can be read."""
    if not isinstance(raw, dict):
        return None
    event_id = _first(raw, "id", "event_id")
    try:
        return None if event_id is None else str(required_int(event_id, "id"))
    except MalformedRecord:
        return None


def normalize_page(
    items: list[Any], codes: Mapping[int, CodeInfo], *, screened: bool = False
) -> tuple[list[EventRecord], list[RejectedRecord]]:
    return split_page(
        items,
        lambda raw: from_api(raw, codes),
        "created_at",
        "occurred_at",
        identify=natural_key,
        screened=screened,
    )


# -- the cursor and paging arithmetic (pure) -----------------------------------

MAX_RESTARTS = 3  # listing changes tolerated in one run before the pass fails


@dataclass(frozen=True, slots=True)
class PassState:
    """Where one listing in progress stands: its fixed bounds and positions consumed.

    ``until`` bounds a window read (backfill, reconciliation); a live pass has
    none. ``per_page`` is the server's page size as last seen, ``stated`` whether
    the server said so (header or ``pagination``) or it was inferred from the
    rows served. ``measured``: this run has read page 1 of the listing, so
    ``per_page`` describes the server as it pages *now*; it is never saved, so
    a listing resumed from the cursor measures again (:func:`next_page`).
    """

    since: datetime
    offset: int = 0
    per_page: int | None = None
    stated: bool = False
    shape: str | None = None  # "array" / "object", once seen
    until: datetime | None = None
    measured: bool = False  # not in to_json(): see next_page()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "since": self.since.isoformat(),
            "offset": self.offset,
            "per_page": self.per_page,
            "stated": self.stated,
            "shape": self.shape,
        }
        if self.until is not None:
            data["until"] = self.until.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PassState:
        until = data.get("until")
        return cls(
            since=datetime.fromisoformat(data["since"]),
            offset=int(data.get("offset", 0)),
            per_page=data.get("per_page"),
            stated=bool(data.get("stated", data.get("per_page") is not None)),
            shape=data.get("shape"),
            until=datetime.fromisoformat(until) if until else None,
        )


@dataclass(frozen=True, slots=True)
class DoorFlowCursor:
    origin: datetime  # where the first pass began; nothing before it is wanted
    watermark: datetime | None = None  # newest created_at committed (never past a pass's now)
    current: PassState | None = None  # a listing in progress

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
    """``since`` for a fresh listing: behind the watermark by the lookback, never before origin."""
    if cursor.watermark is None:
        return cursor.origin
    return max(cursor.origin, cursor.watermark - lookback)


def listings_for_pass(cursor: DoorFlowCursor, lookback: timedelta) -> list[PassState]:
    """The listings one pass reads, in order.

    A fresh pass reads one listing from :func:`regular_since`. A pass that
    resumes an interrupted listing finishes it first (its rows below the
    watermark were never read: a newest-first listing commits its newest
    page first) and then reads a fresh listing from the ``since`` the
    watermark gives *now*, because rows that reached the list while the
    process was down sit at positions the interrupted listing had already
    consumed (the head of a newest-first list, or behind the read position
    of an oldest-first one) and it would never see them.
    """
    fresh = PassState(regular_since(cursor, lookback))
    if cursor.current is None:
        return [fresh]
    return [cursor.current, fresh]


def page_number(state: PassState, requested: int) -> int:
    """The 1-based page holding position ``offset`` (rounding down: re-read, never skip)."""
    size = state.per_page or requested
    return state.offset // size + 1


def next_page(state: PassState, requested: int) -> int:
    """The page to fetch next: page 1 until this run has measured the page size.

    A page number is only as good as the page size it was computed with, and
    a size saved by an earlier run (a listing resumed after a crash) may no
    longer be the server's: the server may page differently now (another
    ``page_size`` asked, another cap, a size it does not state). Page ``p``
    asked for with a size that is too small starts past ``offset`` on the
    server; when nothing is left there the page comes back empty, which
    :func:`step` must take as the end of the list, and every row between
    ``offset`` and that page's start is skipped, although it was listed when
    the interrupted pass began (DESIGN.md "Pass semantics"). Page 1 starts at
    position 0 whatever the size, so reading it first costs one request per
    resume, re-reads only rows already stored, and gives :func:`step` the size
    to number the remaining pages with. A fresh listing starts at page 1
    anyway, so a pass that is not resumed pays nothing for this.
    """
    return page_number(state, requested) if state.measured else 1


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
    screened: bool = False  # the body passed http.parse_page(): no per-record walk


def read_list_response(
    body: Any, headers: httpx.Headers, *, screened: bool = False
) -> ListResponse:
    """Both documented shapes: bare array + headers, or ``{events, pagination}``."""
    if isinstance(body, list):
        return ListResponse(
            body,
            "array",
            _int_or_none(headers.get("Total")),
            _positive(_int_or_none(headers.get("Per-Page"))),
            screened,
        )
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        pagination = body.get("pagination")
        pagination = pagination if isinstance(pagination, dict) else {}
        return ListResponse(
            body["events"],
            "object",
            _int_or_none(pagination.get("total_count")),
            _positive(_int_or_none(pagination.get("per_page"))),
            screened,
        )
    raise SourceError("DoorFlow answered the events list with an unexpected JSON shape")


def _int_or_none(value: Any) -> int | None:
    return int_text(value)  # ASCII digits only: "²".isdigit() is True, int("²") raises


def _positive(value: int | None) -> int | None:
    return value if value else None


@dataclass(frozen=True, slots=True)
class PageStep:
    """What to do after a page: the new listing state and whether it is done."""

    state: PassState
    done: bool
    restarted: bool = False
    refetch: bool = False
    consumed: int = 0
    """Rows at the head of the page that the listing had consumed already (a page
    re-read from before the offset: page 1 of a resumed listing): not served again."""


def served_page_size(state: PassState, requested: int, response: ListResponse) -> tuple[int, bool]:
    """The page size the server used for this response, and whether it said so.

    A stated size smaller than the rows actually served is a lie: the rows
    win. Without a statement, the rows served are the best evidence: more
    than requested means the server pages bigger; fewer may be the end of
    the list or a silent cap, which only an empty page can tell apart.
    """
    count = len(response.items)
    if response.per_page is not None and response.per_page >= count:
        return response.per_page, True
    assumed = state.per_page or requested
    if count == 0:
        return assumed, False
    return count, False


def step(state: PassState, page_no: int, requested: int, response: ListResponse) -> PageStep:
    """Advance a listing over one fetched page (pure: the paging rules in one place).

    - Positions are list offsets, computed from what the server served, never
      from what was asked for. Page 1 measures the page size for the rest of
      the run (``measured``); :func:`next_page` asks for no other page before.
    - The listing ends on an empty page, or on a short one when the server
      stated its page size. ``Total`` is a hint for progress, never a reason
      to stop: a server whose total runs low would otherwise end the pass early.
    - A response of another shape is another listing (a flavor switch: another
      order, another page size); positions consumed mean nothing there, so the
      listing starts over. The caller bounds how often. The order of one
      flavor is taken to be fixed (the guide's list is newest first whatever
      is asked; the reference honours ``sort`` or not): guessing an order
      change from the times served misfires on a list ordered by id, where a
      late upload at a page edge looks like one, and restarted such a pass
      forever.
    """
    if state.shape is not None and response.shape != state.shape:
        return PageStep(PassState(state.since, until=state.until), done=False, restarted=True)
    count = len(response.items)
    size, stated = served_page_size(state, requested, response)
    assumed = state.per_page or requested
    start = (page_no - 1) * (size if stated else assumed)
    if start > state.offset:
        # The server's pages are larger than the page number assumed: this
        # page starts past what was consumed. Fetch the page holding the offset.
        return PageStep(
            replace(state, per_page=size, stated=stated, shape=response.shape), False, refetch=True
        )
    offset = max(state.offset, start + count)
    consumed = min(count, max(0, state.offset - start))
    new = replace(
        state,
        offset=offset,
        per_page=size,
        stated=stated,
        shape=response.shape,
        measured=state.measured or page_no == 1,
    )
    done = count == 0 or (stated and count < size)
    return PageStep(new, done=done, consumed=consumed)


def past_window(records: list[EventRecord], until: datetime | None) -> bool:
    """Whether a whole ascending page lies at or past ``until``: the read went past the window.

    No longer a reason to stop (a list ordered by id serves a late upload
    after later days; see :func:`accounted`), but the sign that the count
    past the window's end is worth asking again (:func:`reprobe_due`). The
    page must itself show the ascending order (the times of its events rise
    from first to last): a server that ignores ``sort=ASC`` serves the newest
    rows first, and those lie past the window too. Rejected records on the
    page need no say.
    """
    if until is None or len(records) < 2:
        return False
    times = [r.occurred_at for r in records]
    ascending = times[0] < times[-1] and all(a <= b for a, b in itertools.pairwise(times))
    return ascending and times[0] >= until


@dataclass(frozen=True, slots=True)
class Tally:
    """What a window read has accounted for: distinct rows of the window read so far.

    ``recent`` holds the keys of the last page's rows: page-number paging over
    a list that shifted (an insertion before the read position) serves the
    rows at a page edge twice, and a duplicate counted twice could make the
    read look complete one row early.
    """

    seen: int = 0
    recent: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {"seen": self.seen, "recent": sorted(self.recent)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tally:
        return cls(int(data.get("seen", 0)), frozenset(map(str, data.get("recent", ()))))


def in_window(
    tally: Tally,
    records: list[EventRecord],
    rejected: list[RejectedRecord],
    since: datetime,
    until: datetime,
) -> tuple[Tally, list[EventRecord], list[RejectedRecord]]:
    """A page's rows inside ``[since, until)``, and the tally after them.

    Rows outside the window belong to other windows (or to the live pass) and
    are left to them, so what a window read stores and counts is the window.
    A reject without a readable time counts where the listing placed it
    (:func:`syncd.records.place`); one that could not be placed is kept (stored)
    but accounts for nothing.
    """
    inside = [r for r in records if since <= r.occurred_at < until]
    kept = [r for r in rejected if r.counted_at is None or since <= r.counted_at < until]
    counting = [r.event_key for r in inside] + [
        r.event_key for r in kept if r.counted_at is not None
    ]
    seen = tally.seen
    keys: set[str] = set()
    for key in counting:
        if key is not None and (key in keys or key in tally.recent):
            continue  # served twice: one vendor row
        if key is not None:
            keys.add(key)
        seen += 1
    return Tally(seen, frozenset(keys)), inside, kept


def window_count(shape: str, total: int | None, end_total: int | None) -> int | None:
    """The vendor's count of the window, from a listing page and the count past its end.

    The guide's list honours ``until_utc``, so its ``total_count`` is the
    window's; the reference list has no ``until``: its ``Total`` counts
    everything since the window's start, and the count since its end
    (``end_total``, asked *before* the page) is taken off. Asked in that
    order, an event arriving in between can only make the window look larger
    (more reading), never complete early. None: no count to go by.
    """
    if total is None:
        return None
    if shape == "object":
        return total
    if end_total is None:
        return None
    return max(0, total - end_total)


def accounted(tally: Tally, vendor: int | None) -> bool:
    """A window read may stop early only when what it read accounts for the vendor's count."""
    return vendor is not None and tally.seen >= vendor


def reprobe_due(pages_past: int) -> bool:
    """Ask the count past the window's end again after 1, 2, 4, 8 ... pages past it.

    A count asked a while ago runs low by the events that arrived since at the
    head of the list, so the window looks larger than it is and is never
    accounted for; a fresh count ends the read. Doubling keeps those requests
    a logarithm of the pages read past the end (an id-ordered list whose late
    upload comes last is read to the end, as it must be).
    """
    return pages_past > 0 and pages_past & (pages_past - 1) == 0


def _revealed(secret: Secret | None) -> str | None:
    return None if secret is None else secret.reveal()


# -- the connector ---------------------------------------------------------------


class DoorFlowSource:
    """A DoorFlow account as a :class:`~syncd.sources.base.Source`."""

    def __init__(self, config: SourceConfig, client: httpx.Client, context: SourceContext) -> None:
        self.config = config
        self.client = client
        self.context = context
        self.policy = RetryPolicy.for_source(config, context)
        self.client.auth = self._auth()
        # What this connector asks for; shrinks when the vendor names codes
        # it no longer lists (see ``_list``), for the life of the object.
        self.event_codes: tuple[int, ...] = LISTABLE_EVENT_CODES

    def _auth(self) -> httpx.Auth:
        config = self.config
        if config.oauth is not None and self.context.credentials is not None:
            # The grant is shared state: read and saved in the store, under its lock.
            return SharedOAuth(
                source=config.name,
                token_url=f"{config.base_url}/oauth/token",
                client_id=config.oauth.client_id.reveal(),
                client_secret=config.oauth.client_secret.reveal(),
                configured=_revealed(config.oauth.refresh_token),
                credentials=self.context.credentials,
            )
        if config.oauth is not None:
            if config.oauth.refresh_token is None:
                raise ConfigError(
                    f"sources[{config.name}]: no OAuth refresh token: set refresh_token_env "
                    f"or run `syncd auth doorflow --source {config.name}`"
                )
            configured = config.oauth.refresh_token.reveal()
            refresh = choose_refresh_token(
                configured, self.context.refresh_token, self.context.refresh_token_origin
            )
            save = self.context.save_refresh_token
            origin = token_fingerprint(configured)
            return OAuthRefresh(
                token_url=f"{config.base_url}/oauth/token",
                client_id=config.oauth.client_id.reveal(),
                client_secret=config.oauth.client_secret.reveal(),
                refresh_token=refresh or configured,
                on_rotate=None if save is None else lambda token: save(token, origin),
            )
        if config.api_key is not None:
            return httpx.BasicAuth(config.api_key.reveal(), "X")
        if config.token is not None:
            return BearerToken(config.token.reveal())
        raise ConfigError(f"sources[{config.name}]: no credentials configured")

    # -- requests --

    def _params(
        self, since: datetime, page: int, size: int, sort: str, until: datetime | None = None
    ) -> list[tuple[str, Any]]:
        stamp = _stamp(since)
        params: list[tuple[str, Any]] = [
            ("since", stamp),
            ("since_utc", stamp),
            ("sort", sort),
            ("n", size),
            ("per_page", min(size, GUIDE_MAX_PER_PAGE)),
            ("page", page),
            ("event_codes", ",".join(map(str, self.event_codes))),
        ]
        if until is not None:
            params.append(("until_utc", _stamp(until)))
        params.extend(("event_code", code) for code in self.event_codes)
        return params

    @property
    def listed_codes(self) -> frozenset[int]:
        """The codes the listing can return: what is asked for."""
        return frozenset(self.event_codes)

    def _list(
        self,
        since: datetime,
        page: int,
        size: int,
        sort: str = "ASC",
        until: datetime | None = None,
    ) -> ListResponse:
        while True:
            try:
                return self._fetch(self._params(since, page, size, sort, until))
            except RequestRejected as exc:
                if not self._drop_unlistable(exc):
                    raise
                # and again, without the codes the vendor refused

    def _fetch(self, params: list[tuple[str, Any]]) -> ListResponse:
        response, page = send(
            self.client,
            lambda c: c.get(EVENTS_PATH, params=params),
            policy=self.policy,
            source=self.config.name,
            parse=parse_page,
        )
        return read_list_response(page.body, response.headers, screened=page.storable)

    def _drop_unlistable(self, rejection: RequestRejected) -> bool:
        """Stop asking for the codes a 400 names as not listable; False: not that 400."""
        invalid = invalid_event_codes(rejection.status, rejection.body)
        remaining = without_codes(self.event_codes, invalid)
        if remaining is None:
            return False
        dropped = sorted(set(self.event_codes) - set(remaining))
        self.event_codes = remaining
        log.warning(
            "event_codes_dropped",
            source=self.config.name,
            codes=dropped,
            reason="the vendor does not list them for GET /api/3/events",
        )
        return True

    def count_since(self, since: datetime) -> int | None:
        """The vendor's count of events created at or after ``since`` (one tiny request)."""
        return self._list(since, page=1, size=1, sort="DESC").total

    def next_pass_since(self, cursor: Cursor, now: datetime) -> datetime:
        """The live pass's next ``since``: ``watermark - lookback`` (or where it began)."""
        start = self.config.start or (now - DEFAULT_FIRST_PASS)
        state = DoorFlowCursor.from_json(cursor, start)
        return regular_since(state, timedelta(seconds=self.config.lookback))

    def window_totals(self, bounds: Iterable[datetime]) -> dict[datetime, int | None]:
        """``count_since`` of each bound, asked newest first.

        Asked in that order the count of any span between two bounds
        (``totals[start] - totals[end]``) can only run high, never low.
        """
        return {bound: self.count_since(bound) for bound in sorted(set(bounds), reverse=True)}

    def vendor_count(self, since: datetime, until: datetime) -> int | None:
        """The vendor's count of events with ``since <= created_at < until``.

        The reference API has no ``until``, so this is the difference of two
        counts. The upper bound is asked first: an event arriving between the
        two requests can then only make the count look larger (an extra
        re-read), never hide a missing event.
        """
        if until <= since:
            return 0
        above_until = self.count_since(until)
        above_since = self.count_since(since)
        if above_until is None or above_since is None:
            return None
        return max(0, above_since - above_until)

    # -- preflight (``syncd check``) --

    def probe(self, now: datetime) -> None:
        """The smallest list request (one event, newest first): do the credentials work?"""
        self._list(now - timedelta(days=1), page=1, size=1, sort="DESC")

    def granted_scopes(self) -> list[str] | None:
        """The OAuth grant's scopes (``GET /oauth/token/info``); None without OAuth."""
        if self.config.oauth is None:
            return None
        _, body = send(
            self.client,
            lambda c: c.get(TOKEN_INFO_PATH),
            policy=self.policy,
            source=self.config.name,
        )
        scope = body.get("scope") if isinstance(body, dict) else None
        if isinstance(scope, str):  # the token endpoint's space-separated form
            return scope.split()
        return [str(s) for s in scope] if isinstance(scope, list) else []

    # -- a pass --

    def pages(self, cursor: Cursor, now: datetime) -> Iterator[Page]:
        start = self.config.start or (now - DEFAULT_FIRST_PASS)
        state = DoorFlowCursor.from_json(cursor, start)
        listings = listings_for_pass(state, timedelta(seconds=self.config.lookback))
        if len(listings) > 1:
            log.info(
                "pass_resumed",
                source=self.config.name,
                since=listings[0].since.isoformat(),
                offset=listings[0].offset,
            )
        for index, listing in enumerate(listings):
            then = listings[index + 1] if index + 1 < len(listings) else None
            state = replace(state, current=listing)
            for records, rejected, current, done, _ in self._read(listing, now):
                watermark = advance_watermark(state.watermark, records, now)
                state = replace(state, watermark=watermark, current=then if done else current)
                yield Page(records, rejected, state.to_json())

    def window_pages(
        self,
        since: datetime,
        until: datetime,
        position: Cursor,
        now: datetime,
        *,
        end_total: int | None = None,
    ) -> Iterator[Page]:
        """Read ``[since, until)`` once, oldest first; ``Page.cursor`` is the position in it.

        ``position`` is a cursor this method yielded earlier (resume), or empty.
        ``end_total`` is :meth:`count_since` of ``until`` when the caller just
        asked it (else it is asked here, first). The read stops early only when
        what it read accounts for the vendor's count of the window
        (:func:`accounted`): a list ordered by id serves a late upload (old
        ``created_at``, new id) after later days, and a read that stopped at
        the first page past ``until`` would miss it. Otherwise it reads on to
        the end of the listing. Only rows inside the window are yielded. The
        live cursor is never read nor moved.
        """
        listing = (
            PassState.from_json(position["pass"])
            if position.get("pass")
            else PassState(since, until=until)
        )
        tally = Tally.from_json(position)
        if end_total is None:
            end_total = self.count_since(until)
        past = 0
        for served, served_rejects, current, ended, response in self._read(listing, now):
            beyond = past_window(served, until)
            tally, records, rejected = in_window(tally, served, served_rejects, since, until)
            vendor = window_count(response.shape, response.total, end_total)
            if ended or accounted(tally, vendor):
                yield Page(records, rejected, {"done": True})
                return
            yield Page(records, rejected, {"pass": current.to_json(), **tally.to_json()})
            past = past + 1 if beyond else past
            if reprobe_due(past) and beyond:
                end_total = self.count_since(until)

    def _read(
        self, listing: PassState, now: datetime
    ) -> Iterator[tuple[list[EventRecord], list[RejectedRecord], PassState, bool, ListResponse]]:
        """One listing page by page: (records, rejected, state after it, ended, response)."""
        size = self.config.page_size
        current = listing
        restarts = 0
        while True:
            page_no = next_page(current, size)
            response = self._list(current.since, page_no, size, until=current.until)
            move = step(current, page_no, size, response)
            if move.restarted:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise SourceError(
                        f"DoorFlow's listing changed shape {restarts} times in one pass "
                        "(array vs {events, pagination}); positions in it cannot be trusted, "
                        "so the pass stops here and starts the listing again next time"
                    )
                log.warning("pass_restarted", source=self.config.name, reason="listing changed")
            current = move.state
            if move.refetch or move.restarted:
                continue
            # Rows read before (a resumed listing's page 1) are not served again:
            # a window read would count them twice and stop short of its count.
            records, rejected = normalize_page(
                response.items[move.consumed :], self.context.codes, screened=response.screened
            )
            yield records, rejected, current, move.done, response
            if move.done:
                return


def _stamp(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


SOURCE = DoorFlowSource
