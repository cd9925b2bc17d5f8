"""IntServ Access: ``POST /v1/events/list``, ``continuation_key`` paging, ``least_sync_time``.

How a pass works, and why (``shared/vendor-docs/FACTS.md``, IntServ section):

- **Where a pass starts.** The cursor's ``least_sync_time`` is the committed
  horizon: the server guaranteed that every event before it had reached it
  for the systems in scope. A pass asks for ``from_date`` = that horizon (the
  configured ``start``, or 7 days before the first pass, the first time) and
  follows ``continuation_key`` while ``has_more``. It never starts from the
  newest ``event_time`` seen: an offline system holds ``least_sync_time``
  back, and when it comes back online its buffered events appear with their
  *old* ``event_time``; a cursor past them would skip them forever.
  ``from_date`` is inclusive on the server (and sent rounded down to the
  second): events at the boundary are read again and deduplicated by the
  store's upsert on ``event_key``.
- **The horizon of a pass is the minimum ``least_sync_time`` reported during
  it** (in practice the first page's snapshot), never the last page's. A
  continuation position only moves forward through the list while a system
  that comes back online mid-pass inserts its old events *behind* that
  position: this pass never sees them, yet the later pages already report a
  higher ``least_sync_time`` that vouches for them. Taking that later value
  would move the cursor past them and lose them for good. The first page's
  ``least_sync_time`` L is safe: every event before L was already in the list
  when the pass began, and a forward walk over a list that only grows
  (insertions shift what follows, they never remove) visits every item that
  was present at the start. A page that reports no readable
  ``least_sync_time`` counts as a guarantee only up to ``from_date``, so such
  a pass does not move the cursor at all.
- **At the end of a pass** (``has_more`` false) the cursor becomes
  ``max(old least_sync_time, horizon)``: it never moves backwards (a horizon
  lower than the old one, e.g. a new system joining, would only re-read).
- **Per page, one transaction.** Every response is one :class:`Page` whose
  cursor lets a crash resume *after* it: the old ``least_sync_time`` plus the
  pass in progress (``from_date``, the ``continuation_key`` for the next
  page, the horizon so far, and the request filters it belongs to). A resumed
  pass uses the stored continuation key; the horizon arithmetic is the same
  as if it had never stopped.
- **A failing continuation key** (the server's TTL is unknown, and an
  expired key has been seen answered with 4xx, 403 and 500): any error that
  persists once retries are spent, to a request that *carried* a
  continuation key — the classification is by which request failed, never
  by the message — raises :class:`~syncd.errors.ContinuationRejected`, and
  the pass starts again with a fresh horizon, from its ``from_date`` or, when
  the pass had proved more (:func:`earned`: the lesser of its horizon and the
  newest ``event_time`` it read), from there, that point committed at once as
  ``least_sync_time``: a pass longer than a key's life (cut by
  ``max_pass_duration``, resumed after a longer backoff) moves the cursor at
  every attempt instead of starting over for ever. After
  :data:`MAX_RESTARTS` restarts in one run the pass fails with that error;
  the committed cursor still resumes it next time. The same error to a
  request *without* a key is a real failure and fails the pass at once.
- **A change of scope** (``systems``, ``include_*`` in the configuration):
  the committed ``least_sync_time`` belongs to the filters it was reported
  for, which the cursor records. Fewer systems: it still holds. Anything
  else (a system added): the new scope is read from the cursor's ``origin``
  (where the first pass began, else ``start``) and logged as
  ``scope_changed`` (:func:`rescope`). A pass in progress under other
  filters is dropped: its key belongs to another query.
- **No ``to_date`` is sent** (the server's default: its own now). The
  ``least_sync_time`` guarantee is stated in the server's clock for the query
  it ran; with a client-chosen ``to_date`` from *our* clock, skew could put
  it before the reported ``least_sync_time``, and moving the cursor to that
  horizon would then skip the events between the two (the cursor would have
  to be capped at ``to_date``, and ``continuation_key`` semantics under
  changing bodies are unknown). Without it, the list simply grows at its tail
  while it is read, which forward paging handles; the pass still ends,
  because a page holds up to 1000 events and arrivals do not keep pace.
- **Categories** (DESIGN.md "Categories"): the event's own ``category``
  field decides (``accessgranted`` / ``accessdenied``); the code table gives
  the label only, and the category when the record has no usable field.
- Retries, 429 waits, 5xx/timeouts/dropped connections and non-JSON bodies
  are all :func:`syncd.sources.http.send`'s business. A JSON body without an
  ``events`` list or a boolean ``has_more``, ``has_more`` without a key, or
  the same key handed back (an endless loop) fails the pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import orjson
import structlog

from syncd.errors import ConfigError, ContinuationRejected, SourceError
from syncd.records import (
    INT4,
    INT8,
    EventRecord,
    MalformedRecord,
    RejectedRecord,
    optional_text,
    parse_time,
    required_int,
    split_page,
    to_json,
)
from syncd.sources.auth import BearerToken
from syncd.sources.base import CodeInfo, Cursor, Page, SourceContext
from syncd.sources.http import RetryPolicy, parse_page, send

if TYPE_CHECKING:
    from syncd.config import SourceConfig

log = structlog.get_logger(__name__)

VENDOR = "intserv"
EVENTS_PATH = "/v1/events/list"
MAX_LIMIT = 1000
DEFAULT_FIRST_PASS = timedelta(days=7)
MAX_RESTARTS = 3
"""Rejected continuation keys tolerated in one run of a pass before it fails."""

_VENDOR_CATEGORIES = {"accessgranted": "access_granted", "accessdenied": "access_denied"}
"""IntServ's own ``category`` values (compared without case, spaces, ``_`` or ``-``)."""


# -- normalization -------------------------------------------------------------


def canonical_time(when: datetime) -> str:
    """The one text form of an instant: aware UTC ISO 8601 with ``Z``.

    ``event_key`` embeds it, so ``...T10:00:00+02:00`` and ``...T08:00:00Z``
    (and ``...T08:00:00.000Z``) are the same event. Naive means UTC.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_key(system_id: str, event_time: datetime, sequence_id: int) -> str:
    """The natural key: ``system_id|event_time (UTC, canonical)|sequence_id``."""
    return f"{system_id}|{canonical_time(event_time)}|{sequence_id}"


def _object(raw: Mapping[str, Any], field: str) -> Mapping[str, Any] | None:
    value = raw.get(field)
    if value is None or isinstance(value, dict):
        return value
    raise MalformedRecord(f"{field} has the wrong type ({type(value).__name__})")


def _system_id(raw: Mapping[str, Any]) -> str:
    value = optional_text(raw.get("system_id"), "system_id")
    if value is None or not value.strip():
        raise MalformedRecord("system_id missing")
    return value


def _person_name(person: Mapping[str, Any] | None, subject: Mapping[str, Any] | None) -> str | None:
    if person is not None:
        first = optional_text(person.get("first_name"), "person.first_name") or ""
        last = optional_text(person.get("last_name"), "person.last_name") or ""
        name = f"{first.strip()} {last.strip()}".strip()
        if name:
            return name
    if subject is not None:
        name = (optional_text(subject.get("name"), "subject.name") or "").strip()
        return name or None
    return None


def vendor_category(raw_category: object) -> str | None:
    """The contract category an IntServ ``category`` field names; ``None`` if unusable.

    ``accessgranted`` / ``accessdenied``, ignoring case, spaces, ``_`` and
    ``-`` (migration 0002 applies the same rule in SQL to stored rows). Any
    other value, or a value that is not text, names no category.
    """
    if not isinstance(raw_category, str):
        return None
    folded = raw_category.replace(" ", "").replace("_", "").replace("-", "").lower()
    return _VENDOR_CATEGORIES.get(folded)


def category(raw_category: object, code: int, codes: Mapping[int, CodeInfo]) -> str:
    """The event's category (DESIGN.md "Categories"): its own field decides.

    IntServ serves every event with its ``category`` (104, the exit button,
    comes as ``accessgranted``): that field wins over any guess from ``type``.
    A record without a usable one falls back to the code table, then ``other``.
    """
    named = vendor_category(raw_category)
    if named is not None:
        return named
    info = codes.get(code)
    return info.category if info is not None else "other"


_Id = int | str | None


class _Key(msgspec.Struct):
    identification: _Id = None


class _Person(msgspec.Struct):
    id: _Id = None
    first_name: _Id = None
    last_name: _Id = None


class _Subject(msgspec.Struct):
    name: _Id = None


class _Fields(msgspec.Struct):
    """The fields of an IntServ event that normalization reads, typed.

    ``msgspec.convert`` checks a record against it in C; a record it accepts
    can only be refused afterwards by a range, a blank ``system_id`` or a
    time (checked in :func:`from_api`). Other fields stay in the payload only.
    """

    system_id: int | str
    event_time: str
    sequence_id: int
    type: int
    category: Any = None
    door_name: _Id = None
    key: _Key | None = None
    person: _Person | None = None
    subject: _Subject | None = None


_CANONICAL_SECONDS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z").fullmatch


def _text(value: int | str | None) -> str | None:
    return value if value is None or type(value) is str else str(value)


def from_api(raw: Any, codes: Mapping[int, CodeInfo]) -> EventRecord:
    """Normalize one IntServ event; raise MalformedRecord saying what is wrong.

    A record of the expected types is read through :class:`_Fields` (less
    Python per event, ``bench/compare.py``); anything else, and any record
    refused on the way, goes through :func:`from_api_checked`, whose
    field-by-field checks decide the outcome and word the reason.
    """
    try:
        f = msgspec.convert(raw, _Fields)
    except Exception:  # ValidationError; also msgspec wording a lone surrogate
        return from_api_checked(raw, codes)
    system_id = _text(f.system_id)
    sequence_id = f.sequence_id
    code = f.type
    if (
        not system_id
        or not system_id.strip()
        or not INT8[0] <= sequence_id <= INT8[1]
        or not INT4[0] <= code <= INT4[1]
    ):
        return from_api_checked(raw, codes)
    try:
        occurred_at = parse_time(f.event_time, "event_time")
    except MalformedRecord:
        return from_api_checked(raw, codes)
    info = codes.get(code)
    person = f.person
    subject = f.subject
    name = None
    if person is not None:
        first = (_text(person.first_name) or "").strip()
        last = (_text(person.last_name) or "").strip()
        name = f"{first} {last}".strip() or None
    if name is None and subject is not None:
        name = (_text(subject.name) or "").strip() or None
    text = f.event_time
    # The vendor's usual form (2026-01-02T00:13:24Z) is already canonical:
    # fixed-width fields that parsed, so formatting the instant again would
    # write the same characters.
    when = text if _CANONICAL_SECONDS(text) else canonical_time(occurred_at)
    return EventRecord(
        f"{system_id}|{when}|{sequence_id}",
        VENDOR,
        occurred_at,
        code,
        category(f.category, code, codes),
        info.label if info else None,
        to_json(raw),
        None,
        _text(f.door_name),
        _text(person.id) if person is not None else None,
        name,
        _text(f.key.identification) if f.key is not None else None,
        system_id,
        sequence_id,
    )


def from_api_checked(raw: Any, codes: Mapping[int, CodeInfo]) -> EventRecord:
    """:func:`from_api` field by field: the judge of every record the fast path
    does not take, and the wording of every reason a record is refused."""
    if not isinstance(raw, dict):
        raise MalformedRecord(f"event is a {type(raw).__name__}, not an object")
    system_id = _system_id(raw)
    occurred_at = parse_time(raw.get("event_time"), "event_time")
    sequence_id = required_int(raw.get("sequence_id"), "sequence_id")
    code = required_int(raw.get("type"), "type", INT4)
    key = _object(raw, "key")
    person = _object(raw, "person")
    subject = _object(raw, "subject")
    info = codes.get(code)
    return EventRecord(
        event_key=event_key(system_id, occurred_at, sequence_id),
        vendor=VENDOR,
        occurred_at=occurred_at,
        event_code=code,
        category=category(raw.get("category"), code, codes),
        label=info.label if info else None,
        payload=to_json(raw),
        door_name=optional_text(raw.get("door_name"), "door_name"),
        person_id=optional_text(person.get("id"), "person.id") if person else None,
        person_name=_person_name(person, subject),
        credential=optional_text(key.get("identification"), "key.identification") if key else None,
        system_id=system_id,
        sequence_id=sequence_id,
    )


def natural_key(raw: Any) -> str | None:
    """A raw event's ``event_key``, when its three parts can be read."""
    if not isinstance(raw, dict):
        return None
    try:
        return event_key(
            _system_id(raw),
            parse_time(raw.get("event_time"), "event_time"),
            required_int(raw.get("sequence_id"), "sequence_id"),
        )
    except MalformedRecord:
        return None


def normalize_page(
    items: list[Any], codes: Mapping[int, CodeInfo], *, screened: bool = False
) -> tuple[list[EventRecord], list[RejectedRecord]]:
    return split_page(
        items,
        lambda raw: from_api(raw, codes),
        "event_time",
        identify=natural_key,
        screened=screened,
    )


# -- the cursor arithmetic (pure) ----------------------------------------------


def _parse_stored(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PassState:
    """A pass in progress: its fixed ``from_date``, next key, horizon so far, filters."""

    from_date: datetime
    continuation_key: str | None = None
    horizon: datetime | None = None  # min least_sync_time reported in this pass
    scope: str = ""
    to_date: datetime | None = None  # a window read's end (backfill); live passes send none
    read_to: datetime | None = None  # the newest event_time read in this pass so far

    def to_json(self) -> dict[str, Any]:
        data = {
            "from_date": canonical_time(self.from_date),
            "continuation_key": self.continuation_key,
            "horizon": canonical_time(self.horizon) if self.horizon else None,
            "scope": self.scope,
        }
        if self.to_date is not None:
            data["to_date"] = canonical_time(self.to_date)
        if self.read_to is not None:
            data["read_to"] = canonical_time(self.read_to)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PassState:
        horizon = data.get("horizon")
        key = data.get("continuation_key")
        to_date = data.get("to_date")
        read_to = data.get("read_to")
        return cls(
            from_date=_parse_stored(data["from_date"]),
            continuation_key=str(key) if key else None,
            horizon=_parse_stored(horizon) if horizon else None,
            scope=str(data.get("scope", "")),
            to_date=_parse_stored(to_date) if to_date else None,
            read_to=_parse_stored(read_to) if read_to else None,
        )


@dataclass(frozen=True, slots=True)
class IntServCursor:
    """``least_sync_time``: the committed horizon; ``current``: a pass in progress.

    ``scope`` is the request filters the horizon was reported for (None: a
    cursor stored before syncd recorded it) and ``origin`` where the first
    pass began (None: likewise), so a scope that grows can be read from there.
    """

    least_sync_time: datetime
    current: PassState | None = None
    scope: str | None = None
    origin: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"least_sync_time": canonical_time(self.least_sync_time)}
        if self.scope is not None:
            data["scope"] = self.scope
        if self.origin is not None:
            data["origin"] = canonical_time(self.origin)
        if self.current is not None:
            data["pass"] = self.current.to_json()
        return data

    @classmethod
    def from_json(cls, data: Cursor, start: datetime) -> IntServCursor:
        """The stored cursor; an empty one starts at ``start``."""
        stored = data.get("least_sync_time") if data else None
        if not stored:
            return cls(least_sync_time=start, origin=start)
        current = data.get("pass")
        scope = data.get("scope")
        origin = data.get("origin")
        return cls(
            least_sync_time=_parse_stored(stored),
            current=PassState.from_json(current) if current else None,
            scope=str(scope) if scope is not None else None,
            origin=_parse_stored(origin) if origin else None,
        )


def begin_pass(cursor: IntServCursor, scope: str) -> IntServCursor:
    """A fresh pass from the committed horizon (inclusive)."""
    return replace(
        cursor, scope=scope, current=PassState(from_date=cursor.least_sync_time, scope=scope)
    )


def narrows(old: str, new: str) -> bool:
    """Whether the filters ``new`` select a subset of what ``old`` selected.

    Only the systems list is compared that way (no list means every system);
    any change of the category flags counts as a widening (their combined
    meaning is the server's; re-reading is the safe side).
    """
    before, after = orjson.loads(old), orjson.loads(new)
    flags = ("include_access_granted", "include_access_denied")
    if any(before.get(flag) != after.get(flag) for flag in flags):
        return False
    old_systems = set(before.get("systems") or ())
    new_systems = set(after.get("systems") or ())
    return not old_systems or (bool(new_systems) and new_systems <= old_systems)


def rescope(cursor: IntServCursor, scope: str, start: datetime) -> tuple[IntServCursor, str | None]:
    """The cursor for the filters ``scope``, and what changed (None, "narrowed", "widened").

    The committed ``least_sync_time`` is a guarantee for the filters it was
    reported for. For fewer systems it still holds (their minimum can only be
    higher). For more (a system added to ``systems``), nothing is known about
    the new ones: the scope is read from where it is complete, the cursor's
    ``origin`` (else ``start``), and the horizon starts there again, so the
    first pass over the new scope ends at *its* reported minimum. A pass in
    progress under other filters is dropped either way: its key belongs to
    another query.
    """
    old = cursor.scope
    if old is None and cursor.current is not None:
        old = cursor.current.scope or None
    if old is None:
        return replace(cursor, scope=scope), None  # unknown before: adopt it
    if old == scope:
        return replace(cursor, scope=scope), None
    if narrows(old, scope):
        return replace(cursor, scope=scope, current=None), "narrowed"
    origin = cursor.origin or start
    return IntServCursor(least_sync_time=origin, scope=scope, origin=origin), "widened"


def earned(current: PassState) -> datetime | None:
    """How far a pass in progress has proved the list read: ``min(horizon, read_to)``.

    Every event before the horizon was in the list when the pass began (the
    server's ``least_sync_time`` guarantee), and the list is ordered by
    ``event_time`` (the order a forward walk relies on, see the module
    docstring): a walk that has read up to ``read_to`` has passed every such
    event older than it. None: nothing proved yet.
    """
    if current.horizon is None or current.read_to is None:
        return None
    return min(current.horizon, current.read_to)


def restart_pass(cursor: IntServCursor) -> IntServCursor:
    """The pass again without a key or a horizon, from where its progress is proved.

    A pass longer than the key's life (cut by ``max_pass_duration``, then
    resumed after a backoff longer than the key's TTL) would otherwise start
    from the same ``from_date`` every time and never finish: what it earned
    (:func:`earned`) becomes the committed ``least_sync_time`` (never moved
    backwards) and the new pass starts there.
    """
    current = cursor.current
    assert current is not None
    proved = earned(current)
    if proved is not None and proved > cursor.least_sync_time:
        return replace(
            cursor,
            least_sync_time=proved,
            current=PassState(from_date=proved, scope=current.scope),
        )
    return replace(cursor, current=PassState(from_date=current.from_date, scope=current.scope))


def after_page(
    cursor: IntServCursor,
    reported: datetime | None,
    has_more: bool,
    next_key: str | None,
    newest: datetime | None = None,
) -> IntServCursor:
    """The cursor to commit with a page just read.

    ``reported`` is the page's ``least_sync_time`` (None: unreadable, which
    vouches for nothing past ``from_date``). The pass's horizon is the minimum
    reported so far. ``newest`` is the page's newest ``event_time`` (None: no
    readable one), kept as the pass's ``read_to``. Mid-pass the committed
    horizon stays put and the pass state carries the next key; at the end it
    becomes ``max(old, horizon)``.
    """
    current = cursor.current
    assert current is not None
    seen = reported if reported is not None else current.from_date
    horizon = seen if current.horizon is None else min(current.horizon, seen)
    read_to = current.read_to
    if newest is not None:
        read_to = newest if read_to is None else max(read_to, newest)
    if has_more:
        moved = replace(current, continuation_key=next_key, horizon=horizon, read_to=read_to)
        return replace(cursor, current=moved)
    return replace(cursor, least_sync_time=max(cursor.least_sync_time, horizon), current=None)


# -- responses -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListResponse:
    events: list[Any]
    least_sync_time: datetime | None
    has_more: bool
    continuation_key: str | None
    screened: bool = False  # the body passed http.parse_page(): no per-record walk


def read_list_response(body: Any, *, screened: bool = False) -> ListResponse:
    """``{least_sync_time, has_more, continuation_key, events[]}``, checked."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise SourceError("IntServ answered the events list without an 'events' array")
    has_more = body.get("has_more")
    if not isinstance(has_more, bool):
        # Taking a missing flag for "done" would move the cursor past unread events.
        raise SourceError("IntServ answered the events list without a boolean 'has_more'")
    key = body.get("continuation_key")
    if has_more and (not isinstance(key, str) or not key):
        raise SourceError("IntServ answered has_more without a continuation_key")
    try:
        reported: datetime | None = parse_time(body.get("least_sync_time"), "least_sync_time")
    except MalformedRecord:
        reported = None
        log.warning("least_sync_time_unreadable", vendor=VENDOR)
    return ListResponse(body["events"], reported, has_more, key if has_more else None, screened)


PRESENT_LAG = timedelta(minutes=2)
"""How far an online system's ``least_sync_time`` may trail ``now`` (it lags a second or so)."""


def vouched(horizon: datetime, until: datetime, now: datetime) -> bool:
    """Whether ``least_sync_time`` (``horizon``) vouches for everything before ``until``.

    A window that ends in the last :data:`PRESENT_LAG` before ``now`` asks
    only that much: an online system's ``least_sync_time`` trails the present
    by a second or so, and what it then uploads is the live pass's to read.
    An offline system's ``least_sync_time`` stays where it went offline.
    """
    return horizon >= min(until, now - PRESENT_LAG)


def _post(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post(EVENTS_PATH, json=body)


def held_position(horizon: datetime, holders: list[str]) -> dict[str, Any]:
    """A window read to its end that ``least_sync_time`` does not vouch for yet."""
    return {"held": canonical_time(horizon), "systems": holders}


# -- the connector ---------------------------------------------------------------


class IntServSource:
    """An IntServ Access integration as a :class:`~syncd.sources.base.Source`."""

    def __init__(self, config: SourceConfig, client: httpx.Client, context: SourceContext) -> None:
        self.config = config
        self.client = client
        self.context = context
        self.policy = RetryPolicy.for_source(config, context)
        self.client.auth = self._auth()

    def _auth(self) -> httpx.Auth:
        secret = self.config.api_key or self.config.token
        if secret is None:
            raise ConfigError(f"sources[{self.config.name}]: no api_key configured")
        return BearerToken(secret.reveal())

    # -- requests --

    def _filters(self) -> dict[str, Any]:
        config = self.config
        filters: dict[str, Any] = {}
        if config.systems:
            filters["systems"] = list(config.systems)
        if config.include_access_granted is not None:
            filters["include_access_granted"] = config.include_access_granted
        if config.include_access_denied is not None:
            filters["include_access_denied"] = config.include_access_denied
        return filters

    def scope(self) -> str:
        """The filters a continuation key (and a horizon) belongs to."""
        return orjson.dumps(self._filters(), option=orjson.OPT_SORT_KEYS).decode()

    def request_body(self, current: PassState) -> dict[str, Any]:
        body: dict[str, Any] = {
            # Whole seconds, rounded down: only ever re-reads, and no server
            # has to parse sub-second precision.
            "from_date": canonical_time(current.from_date.replace(microsecond=0)),
            "limit": min(self.config.page_size, MAX_LIMIT),
            **self._filters(),
        }
        if current.to_date is not None:
            body["to_date"] = canonical_time(current.to_date)
        if current.continuation_key is not None:
            body["continuation_key"] = current.continuation_key
        return body

    def _list(self, current: PassState) -> ListResponse:
        body = self.request_body(current)
        try:
            _, page = send(
                self.client,
                lambda c: c.post(EVENTS_PATH, json=body),
                policy=self.policy,
                source=self.config.name,
                parse=parse_page,
            )
        except ContinuationRejected:
            raise
        except SourceError as exc:
            # Whatever a request with a key keeps failing with once retries are
            # spent (4xx, 403, a 500 that persists): the key may be the cause,
            # so it is dropped and the pass restarts without it. A request
            # without a key failing the same way is a real failure.
            if current.continuation_key is None:
                raise
            raise ContinuationRejected(f"continuation key failed: {exc}") from exc
        return read_list_response(page.body, screened=page.storable)

    # -- preflight (``syncd check``) --

    def probe(self, now: datetime) -> None:
        """The smallest list request (``limit`` = page_size): does the API key work?"""
        self._list(PassState(from_date=now - timedelta(days=1), scope=self.scope()))

    # -- a pass --

    listed_codes: frozenset[int] | None = None  # every type is listed

    def vendor_count(self, since: datetime, until: datetime) -> int | None:
        """IntServ has no count: ``least_sync_time`` is its completeness guarantee."""
        return None

    def pages(self, cursor: Cursor, now: datetime) -> Iterator[Page]:
        """One pass; a pass resumed after a crash is followed by a fresh one.

        The resumed part walks on from its continuation key, so events that
        reached the list behind that position while the process was down
        (an offline system's upload, still above the committed horizon)
        are only read by a pass that starts at the horizon again.
        """
        stored = cursor.get("pass") if cursor else None
        resumed = stored is not None and PassState.from_json(stored).scope == self.scope()
        last: Cursor = cursor
        for page in self._pass(cursor, now):
            last = page.cursor
            yield page
        if resumed and not last.get("pass"):
            log.info("pass_resumed_then_fresh", source=self.config.name)
            yield from self._pass(last, now)

    def next_pass_since(self, cursor: Cursor, now: datetime) -> datetime:
        """The committed ``least_sync_time``: where the next live pass begins."""
        start = self.config.start or (now - DEFAULT_FIRST_PASS)
        return IntServCursor.from_json(cursor, start).least_sync_time

    def window_totals(self, bounds: Iterable[datetime]) -> dict[datetime, int | None]:
        """IntServ has no counts."""
        return dict.fromkeys(bounds)

    def window_pages(
        self,
        since: datetime,
        until: datetime,
        position: Cursor,
        now: datetime,
        *,
        end_total: int | None = None,
    ) -> Iterator[Page]:
        """Read ``[since, until)`` once (``from_date``/``to_date``); resumable by key.

        ``Page.cursor`` is the position in the window; the live cursor and its
        ``least_sync_time`` are never read nor moved. A rejected key restarts
        the window from ``since`` (bounded, like a pass). The read is complete
        (``{"done": True}``) only when the smallest ``least_sync_time`` the
        vendor reported during it is at or past ``until``: before that, a
        system that is offline may still upload into the window. Then the last
        page's position is ``{"held": ..., "systems": [...]}`` (the systems
        holding it back, when they can be named), the window is not finished
        and a later read loads what the system uploaded meanwhile.
        """
        scope = self.scope()
        stored = position.get("pass") if position else None
        current = (
            PassState.from_json(stored)
            if stored and PassState.from_json(stored).scope == scope
            else PassState(from_date=since, scope=scope, to_date=until)
        )
        restarts = 0
        systems: set[str] = set()
        while True:
            try:
                response = self._list(current)
            except ContinuationRejected:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise
                current = PassState(from_date=since, scope=scope, to_date=until)
                continue
            records, rejected = normalize_page(
                response.events, self.context.codes, screened=response.screened
            )
            # from_date goes out rounded down to the second: keep the window's rows only.
            records = [r for r in records if since <= r.occurred_at < until]
            rejected = [
                r for r in rejected if r.counted_at is None or since <= r.counted_at < until
            ]
            systems.update(r.system_id for r in records if r.system_id)
            reported = response.least_sync_time or current.from_date
            horizon = reported if current.horizon is None else min(current.horizon, reported)
            if not response.has_more:
                if vouched(horizon, until, now):
                    yield Page(records, rejected, {"done": True})
                else:
                    holders = self.holding_back(since, until, sorted(systems), now)
                    yield Page(records, rejected, held_position(horizon, holders))
                return
            if response.continuation_key == current.continuation_key:
                raise SourceError("IntServ answered with the continuation_key it was sent")
            current = replace(current, continuation_key=response.continuation_key, horizon=horizon)
            yield Page(records, rejected, {"pass": current.to_json()})

    def holding_back(
        self, since: datetime, until: datetime, seen: list[str], now: datetime
    ) -> list[str]:
        """The systems whose ``least_sync_time`` is before ``until`` (one small request each).

        The candidates are the configured ``systems``, else those seen in the
        window; a system with no event there yet is named only when configured.
        """
        holders = []
        for system in self.config.systems or seen:
            probe = PassState(from_date=since, scope=self.scope(), to_date=until)
            body = {**self.request_body(probe), "systems": [system], "limit": 1}
            _, page = send(
                self.client,
                partial(_post, body=body),
                policy=self.policy,
                source=self.config.name,
                parse=parse_page,
            )
            reported = read_list_response(page.body).least_sync_time
            if reported is None or not vouched(reported, until, now):
                holders.append(system)
        return holders

    def _pass(self, cursor: Cursor, now: datetime) -> Iterator[Page]:
        start = self.config.start or (now - DEFAULT_FIRST_PASS)
        state = IntServCursor.from_json(cursor, start)
        scope = self.scope()
        state, change = rescope(state, scope, start)
        if change is not None:
            log.warning(
                "scope_changed",
                source=self.config.name,
                change=change,
                scope=scope,
                read_from=canonical_time(state.least_sync_time),
            )
        if state.current is None:
            state = begin_pass(state, scope)
        restarts = 0
        while state.current is not None:
            current = state.current
            try:
                response = self._list(current)
            except ContinuationRejected as exc:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise ContinuationRejected(
                        f"continuation keys rejected {restarts} times in one pass; "
                        f"giving up for now (last: {exc})"
                    ) from exc
                state = restart_pass(state)
                assert state.current is not None
                kept = state.current.from_date > current.from_date
                log.warning(
                    "pass_restarted",
                    source=self.config.name,
                    reason="continuation key rejected",
                    restarts=restarts,
                    from_date=canonical_time(state.current.from_date),
                    progress_kept=kept,
                )
                if kept:
                    # What the pass earned commits now, before anything can cut it.
                    yield Page([], [], state.to_json())
                continue
            if response.has_more and response.continuation_key == current.continuation_key:
                raise SourceError("IntServ answered with the continuation_key it was sent")
            records, rejected = normalize_page(
                response.events, self.context.codes, screened=response.screened
            )
            state = after_page(
                state,
                response.least_sync_time,
                response.has_more,
                response.continuation_key,
                newest_time(records, rejected),
            )
            yield Page(records, rejected, state.to_json())


def newest_time(records: list[EventRecord], rejected: list[RejectedRecord]) -> datetime | None:
    """The newest ``event_time`` of a page (rejected records with a readable one count:
    they were read, and are stored as rejects)."""
    times = [r.occurred_at for r in records]
    times += [r.occurred_at for r in rejected if r.occurred_at is not None]
    return max(times, default=None)


SOURCE = IntServSource
