"""IntServ Access simulator: ``POST /v1/events/list``.

Events are ordered by ``(event_time, system_id, sequence_id)``; times have
whole-second resolution, so several events of one system share an
``event_time`` (ties) and differ by ``sequence_id``. Each system's sequence
counter starts at its own value and restarts now and then (a controller
reboot), so only ``(system_id, event_time, sequence_id)`` identifies an event.

Every system has a sync horizon: everything before it is visible. An online
system's horizon is one second behind the clock (its newest events may still
land in the current second); an offline system's horizon stays where it was
when it went offline, and the events it records meanwhile are buffered until
it comes back, then appear with their old ``event_time``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson

from syncd.simulators import data
from syncd.simulators.clock import US, Clock, from_us, iso_s, parse_iso
from syncd.simulators.faults import (
    ALL_KINDS,
    POISON_KINDS,
    Faults,
    kind_indexes,
    poison,
)
from syncd.simulators.index import SortedIndex
from syncd.simulators.server import BaseSimulator, Request, Response, json_response

DEFAULT_SYSTEMS = ("abc123-001", "abc123-002", "def456-001")
MAX_LIMIT = 1000
DEFAULT_DAYS = 7
_BAD_TIMES = ("2020-13-01T00:00:00Z", "not a time", "", "01/03/2020 00:00", "2020-03-01T24:61:00")
_KEY_NONE, _KEY_PROXIMITY, _KEY_CODE, _KEY_COMMON, _KEY_UNKNOWN = range(5)


@dataclass(frozen=True, slots=True)
class _Holder:
    """A person (``person`` set) or a subject (``subject`` set) and their keys."""

    person: dict[str, str] | None
    subject: dict[str, str] | None
    proximity: tuple[str | None, str]  # key_id (None: not imported), identification
    code: tuple[str | None, str]


class _Event:
    __slots__ = (
        "bad",
        "door",
        "holder",
        "ident",
        "key",
        "keykind",
        "raw",
        "seq",
        "system",
        "time",
        "type",
    )

    def __init__(
        self,
        time: int,
        system: str,
        seq: int,
        type_: int,
        door: str,
        holder: int,
        keykind: int,
        ident: str | None,
        bad: int,
    ) -> None:
        self.key = (time, system, seq)
        self.time = time
        self.system = system
        self.seq = seq
        self.type = type_
        self.door = door
        self.holder = holder  # index into holders, -1: none
        self.keykind = keykind
        self.ident = ident  # identification of an unknown key
        self.bad = bad  # 0, or 1 + index into ALL_KINDS
        self.raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Query:
    """One listing: the range and filters, and where a continuation resumes."""

    since: int
    until: int
    systems: frozenset[str] | None
    category: str | None
    position: tuple[int, str, int] | None = None  # key of the last event served
    floor: int | None = None  # least_sync_time already reported to this pass


class _BadRequest(Exception):
    def __init__(self, message: str, error: str = "invalid_request") -> None:
        super().__init__(message)
        self.error = error


class IntServSimulator(BaseSimulator):
    """IntServ Access on loopback. See the module docstring and ``DESIGN.md``.

    ``history`` events over the last ``history_days`` (plus ``tie_groups`` x
    ``tie_size`` events of one system sharing one ``event_time`` each);
    ``generate(n)`` adds more at ``clock.now()``. Continuation keys expire
    ``continuation_ttl`` seconds (of the clock) after they were issued, and an
    expired key is answered with ``expired_key_status`` (400; real backends
    have been seen answering 403 or 500, every time it is sent).
    ``report_current_least_sync_time``: each page reports the horizon *now*
    instead of the minimum already reported to the pass, as a backend that
    recomputes it per page would (a connector that trusts the last page's
    value then skips events a system uploaded behind the pass's position).
    """

    vendor = "intserv"

    def __init__(
        self,
        *,
        seed: int = 1,
        history: int = 10_000,
        history_days: float = 30.0,
        clock: Clock | None = None,
        systems: Iterable[str] = DEFAULT_SYSTEMS,
        api_key: str | None = None,
        continuation_ttl: float = 300.0,
        expired_key_status: int = 400,
        report_current_least_sync_time: bool = False,
        faults: Faults | None = None,
        malformed_share: float = 0.0,
        malformed_kinds: Iterable[str] | None = None,
        tie_groups: int = 0,
        tie_size: int = 0,
        doors: int = 6,
        people: int = 200,
        rate: float = 0.0,
        offline: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            seed=seed, clock=clock, faults=faults, host=host, port=port, rate=rate, verbose=verbose
        )
        self.systems = tuple(systems)
        if not self.systems or len(set(self.systems)) != len(self.systems):
            raise ValueError("systems must be a non-empty list of distinct ids")
        if not 0.0 <= malformed_share <= 1.0:
            raise ValueError(f"malformed_share must be in [0, 1], not {malformed_share}")
        if doors < 1 or people < 1 or history < 0 or tie_groups < 0 or tie_size < 0:
            raise ValueError("doors and people must be >= 1; history and ties >= 0")
        self.continuation_ttl = continuation_ttl
        if expired_key_status not in (400, 403, 404, 410, 500, 503):
            raise ValueError(f"expired_key_status {expired_key_status} is not a served error")
        self.expired_key_status = expired_key_status
        self.report_current_least_sync_time = report_current_least_sync_time
        self.malformed_share = malformed_share
        self._bad_kinds = kind_indexes(malformed_kinds)
        creds = random.Random(f"intserv-credentials-{seed}")
        self.api_key = api_key or "isk_" + creds.getrandbits(192).to_bytes(24, "big").hex()
        self._key_secret = creds.getrandbits(256).to_bytes(32, "big")

        rng = self._rng = random.Random(seed)
        n_sys = len(self.systems)
        self._doors = {
            s: [data.INTSERV_DOORS[(i * 3 + j) % len(data.INTSERV_DOORS)] for j in range(doors)]
            for i, s in enumerate(self.systems)
        }
        self._system_cum = data.cumulative([1.0 / (1 + i) ** 0.5 for i in range(n_sys)])
        self._holders = self._make_holders(people)
        self._person_count = people
        ranks = list(range(people))
        rng.shuffle(ranks)
        self._person_cum = data.cumulative([1.0 / (1 + r) ** 0.6 for r in ranks])
        self._common_keys = {s: (data.det_uuid(rng), data.digits(rng, 4)) for s in self.systems}
        self._types = list(data.INTSERV_MIX)
        self._types_cum = data.cumulative(list(data.INTSERV_MIX.values()))
        self._seq = {s: rng.randrange(1, 200) for s in self.systems}
        self._seq_reset = {s: rng.randrange(800, 2000) for s in self.systems}
        self._last_time = dict.fromkeys(self.systems, -1)

        self._tails: dict[tuple[int, int, str], bytes] = {}
        self._middles: dict[tuple[int, str, str], bytes] = {}
        self._all: SortedIndex[_Event] = SortedIndex()
        self._views: dict[tuple[frozenset[str] | None, str | None], SortedIndex[_Event]] = {}
        self._offline: dict[str, int] = {}
        self._buffer: dict[str, list[_Event]] = {}
        self._build_history(history, history_days, tie_groups, tie_size)
        for system in offline:
            self.set_offline(system, True)

    # -- public API ---------------------------------------------------------

    def generate(self, n: int) -> int:
        """Add ``n`` events within the last second, spread over the systems;
        an offline system's are buffered. Returns how many were added."""
        with self._lock:
            now = self._now()
            rng = self._rng
            rand = rng.random
            times = sorted((t := now - int(rand() * US)) - t % US for _ in range(n))
            systems = rng.choices(self.systems, cum_weights=self._system_cum, k=n)
            events = self._make_events(times, systems, allow_reset_before=-1)
            visible = []
            for event in events:
                if event.system in self._offline:
                    self._buffer.setdefault(event.system, []).append(event)
                else:
                    visible.append(event)
            self._insert(visible)
            return n

    def set_offline(self, system: str, offline: bool = True) -> None:
        """Take ``system`` offline (its horizon freezes, its new events are
        buffered) or bring it back (the buffered events appear)."""
        if system not in self.systems:
            raise ValueError(f"unknown system {system!r}; have {', '.join(self.systems)}")
        with self._lock:
            now = self._now()
            if offline:
                self._offline.setdefault(system, self._online_horizon(now))
            elif system in self._offline:
                del self._offline[system]
                self._insert(self._buffer.pop(system, []))

    @property
    def offline(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._offline)

    def horizons(self) -> dict[str, datetime]:
        """Each system's sync horizon now."""
        with self._lock:
            now = self._now()
            return {s: from_us(self._horizon(s, now)) for s in self.systems}

    def buffered(self) -> int:
        """How many events offline systems hold back."""
        with self._lock:
            return sum(len(b) for b in self._buffer.values())

    @property
    def event_count(self) -> int:
        """How many records (valid or malformed) are visible now."""
        with self._lock:
            return len(self._all)

    def truth(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        """Every valid visible event, by (system_id, event_time, sequence_id)."""
        with self._lock:
            parts = [e.raw or self._render(e) for e in self._all.items if not e.bad]
        events = orjson.loads(b"[" + b",".join(parts) + b"]")
        return {(e["system_id"], e["event_time"], e["sequence_id"]): e for e in events}

    def malformed(self) -> list[dict[str, Any]]:
        """The malformed records visible so far, as served."""
        with self._lock:
            parts = [e.raw or self._render(e) for e in self._all.items if e.bad]
        # json, not orjson: a lone surrogate (POISON_KINDS) is in there as served.
        result: list[dict[str, Any]] = json.loads(b"[" + b",".join(parts) + b"]")
        return result

    # -- data ----------------------------------------------------------------

    def _make_holders(self, people: int) -> list[_Holder]:
        rng = self._rng

        def key(digits: int, width: int) -> tuple[str | None, str]:
            key_id = data.det_uuid(rng) if rng.random() < 0.9 else None  # 10%: not imported
            return key_id, data.digits(rng, digits).zfill(width)

        holders = []
        for _ in range(people):
            person = {
                "id": data.det_uuid(rng),
                "first_name": rng.choice(data.FIRST_NAMES),
                "last_name": rng.choice(data.LAST_NAMES),
            }
            holders.append(_Holder(person, None, key(10, 13), key(6, 6)))
        for name in data.INTSERV_SUBJECTS:
            holders.append(_Holder(None, {"name": name}, key(10, 13), key(6, 6)))
        return holders

    def _make_events(
        self, times: list[int], systems: list[str], allow_reset_before: int
    ) -> list[_Event]:
        """Events at ``times`` (sorted), sequence ids assigned in time order.

        A system's counter may restart only at a new second before
        ``allow_reset_before``, so ``(system, time, seq)`` stays unique.
        """
        rng = self._rng
        rand = rng.random
        n = len(times)
        types = rng.choices(self._types, cum_weights=self._types_cum, k=n)
        people = rng.choices(range(self._person_count), cum_weights=self._person_cum, k=n)
        n_subjects = len(data.INTSERV_SUBJECTS)
        seq, reset, last = self._seq, self._seq_reset, self._last_time
        doors = self._doors
        bad_share = self.malformed_share
        kinds = self._bad_kinds
        events = []
        for i in range(n):
            t, system, type_ = times[i], systems[i], types[i]
            if seq[system] >= reset[system] and last[system] < t < allow_reset_before:
                seq[system] = 1
                reset[system] = rng.randrange(800, 2000)
            number = seq[system]
            seq[system] = number + 1
            last[system] = max(last[system], t)
            holder = people[i] if rand() < 0.93 else self._person_count + int(rand() * n_subjects)
            keykind = _KEY_PROXIMITY
            ident = None
            if type_ == 101:
                keykind = _KEY_CODE
            elif type_ == 104:
                keykind, holder = _KEY_NONE, -1
            elif type_ == 105:
                keykind, holder = _KEY_COMMON, -1
            elif type_ == 201:
                keykind, holder = _KEY_UNKNOWN, -1
                ident = data.digits(rng, 10).zfill(13)
            door_list = doors[system]
            door = door_list[0] if rand() < 0.4 else door_list[int(rand() * len(door_list))]
            bad = 1 + kinds[int(rand() * len(kinds))] if bad_share and rand() < bad_share else 0
            events.append(_Event(t, system, number, type_, door, holder, keykind, ident, bad))
        return events

    def _build_history(self, history: int, days: float, tie_groups: int, tie_size: int) -> None:
        rng = self._rng
        now = self._now()
        start = now - int(days * 86400 * US)
        times = data.business_times(rng, start, now, history, US)
        systems = rng.choices(self.systems, cum_weights=self._system_cum, k=history)
        pairs = list(zip(times, systems, strict=True))
        for t in data.business_times(rng, start, now, tie_groups, US):
            system = rng.choice(self.systems)
            pairs += [(t, system)] * tie_size
        pairs.sort(key=lambda p: p[0])
        events = self._make_events(
            [p[0] for p in pairs], [p[1] for p in pairs], allow_reset_before=now - now % US - 2 * US
        )
        self._insert(events)

    def _insert(self, events: list[_Event]) -> None:
        ordered = sorted(events, key=lambda e: e.key)
        self._all.add(ordered)
        for (systems, category), index in self._views.items():
            index.add([e for e in ordered if _matches(e, systems, category)])

    # -- horizons ------------------------------------------------------------

    @staticmethod
    def _online_horizon(now: int) -> int:
        return now - now % US - US

    def _horizon(self, system: str, now: int) -> int:
        frozen = self._offline.get(system)
        return self._online_horizon(now) if frozen is None else frozen

    # -- rendering -----------------------------------------------------------

    def _tail(self, event: _Event) -> bytes:
        """``"key_id":...,"key":...,"person":...,"subject":...`` for ``event``."""
        system = event.system if event.keykind == _KEY_COMMON else ""
        cache_key = (event.holder, event.keykind, system)
        if event.keykind != _KEY_UNKNOWN:
            cached = self._tails.get(cache_key)
            if cached is not None:
                return cached
        holder = self._holders[event.holder] if event.holder >= 0 else None
        key_id: str | None = None
        key: dict[str, str] | None = None
        if event.keykind in (_KEY_PROXIMITY, _KEY_CODE) and holder is not None:
            kind = "proximity" if event.keykind == _KEY_PROXIMITY else "code"
            key_id, ident = holder.proximity if kind == "proximity" else holder.code
            key = {"identification": ident, "type": kind}
        elif event.keykind == _KEY_COMMON:
            key_id, ident = self._common_keys[event.system]
            key = {"identification": ident, "type": "code"}
        elif event.keykind == _KEY_UNKNOWN:
            key = {"identification": event.ident or "", "type": "proximity"}
        tail = orjson.dumps(
            {
                "key_id": key_id,
                "key": key,
                "person": holder.person if holder else None,
                "subject": holder.subject if holder else None,
            }
        )[1:-1]
        if event.keykind != _KEY_UNKNOWN:
            self._tails[cache_key] = tail
        return tail

    def _render(self, event: _Event) -> bytes:
        middle = self._middles.get((event.type, event.system, event.door))
        if middle is None:
            middle = orjson.dumps(
                {
                    "category": data.INTSERV_TYPES[event.type][0],
                    "type": event.type,
                    "system_id": event.system,
                    "door_name": event.door,
                }
            )[1:-1]
            self._middles[(event.type, event.system, event.door)] = middle
        rendered = b'{"event_time":"%b","sequence_id":%d,%b,%b}' % (
            iso_s(event.time).encode(),
            event.seq,
            middle,
            self._tail(event),
        )
        if event.bad:
            rendered = _spoil(rendered, event)
        event.raw = rendered
        return rendered

    # -- HTTP ------------------------------------------------------------------

    def _error(self, status: int, error: str, description: str, **extra: Any) -> Response:
        return json_response(status, {"error": error, "message": description, **extra})

    def _route(self, request: Request) -> Response:
        if request.path.rstrip("/") != "/v1/events/list":
            self._count("not_found")
            return self._error(404, "not_found", "No such endpoint")
        if request.method != "POST":
            return self._error(405, "method_not_allowed", "Use POST")
        fault = self._inject()
        if fault is not None:
            return fault
        scheme, _, key = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.strip().encode("utf-8", "surrogateescape"), self.api_key.encode()
        ):
            self._count("unauthorized")
            return self._error(401, "unauthorized", "Missing or invalid integration API key")
        try:
            return self._list(request)
        except _BadRequest as exc:
            self._count("bad_requests")
            status = self.expired_key_status if exc.error == "continuation_key_expired" else 400
            return self._error(status, exc.error, str(exc))

    def _list(self, request: Request) -> Response:
        try:
            body = orjson.loads(request.body) if request.body.strip() else {}
        except orjson.JSONDecodeError:
            raise _BadRequest("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _BadRequest("the request body must be a JSON object")
        now = self._now()
        limit = body.get("limit")
        if limit is None:
            limit = MAX_LIMIT
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _BadRequest("limit must be a positive integer")
        limit = min(limit, MAX_LIMIT)
        token = body.get("continuation_key")
        query = self._decode_key(token, now) if token else self._query(body, now)
        with self._lock:
            index = self._view(query.systems, query.category)
            keys = index.keys
            if query.position:
                lo = bisect_right(keys, query.position)
            else:
                lo = bisect_left(keys, (query.since,))
            hi = bisect_left(keys, (query.until,))
            end = max(lo, min(hi, lo + limit))
            items = index.items[lo:end]
            parts = [e.raw or self._render(e) for e in items]
            least = min(self._horizon(s, now) for s in (query.systems or self.systems))
        if query.floor is not None and not self.report_current_least_sync_time:
            least = min(least, query.floor)
        next_key = None
        if end < hi:
            query = replace(query, position=items[-1].key, floor=least)
            next_key = self._encode_key(query, now)
        self._count("pages")
        self._count("events_served", len(parts))
        head = orjson.dumps(
            {"least_sync_time": iso_s(least), "has_more": end < hi, "continuation_key": next_key}
        )
        return Response(200, head[:-1] + b',"events":[' + b",".join(parts) + b"]}")

    def _query(self, body: dict[str, Any], now: int) -> _Query:
        since = _time(body.get("from_date"), now - DEFAULT_DAYS * 86400 * US, "from_date")
        until = _time(body.get("to_date"), now, "to_date")
        if since > until:
            raise _BadRequest("from_date must not be after to_date")
        granted = _flag(body, "include_access_granted")
        denied = _flag(body, "include_access_denied")
        category = None  # neither or both: no filter
        if granted != denied:
            category = "accessgranted" if granted else "accessdenied"
        return _Query(since, until, self._systems(body.get("systems")), category)

    def _systems(self, value: Any) -> frozenset[str] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise _BadRequest("systems must be an array of strings")
        unknown = [s for s in value if s not in self.systems]
        if unknown:
            raise _BadRequest(f"unknown or unauthorized systems: {', '.join(unknown)}")
        return frozenset(value) if value else None

    def _view(self, systems: frozenset[str] | None, category: str | None) -> SortedIndex[_Event]:
        if systems is not None and systems >= frozenset(self.systems):
            systems = None
        if systems is None and category is None:
            return self._all
        index = self._views.get((systems, category))
        if index is None:
            index = SortedIndex([e for e in self._all.items if _matches(e, systems, category)])
            self._views[(systems, category)] = index
        return index

    def _encode_key(self, query: _Query, now: int) -> str:
        position = list(query.position) if query.position else None
        systems = sorted(query.systems) if query.systems else None
        state = [query.since, query.until, systems, query.category, position, query.floor, now]
        payload = orjson.dumps(state)
        mac = hmac.new(self._key_secret, payload, hashlib.sha256).hexdigest()[:24]
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + mac

    def _decode_key(self, token: Any, now: int) -> _Query:
        invalid = _BadRequest("the continuation key is not valid", "invalid_continuation_key")
        if not isinstance(token, str):
            raise invalid
        encoded, _, mac = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise invalid from None
        expected = hmac.new(self._key_secret, payload, hashlib.sha256).hexdigest()[:24]
        if not hmac.compare_digest(mac, expected):
            raise invalid
        since, until, systems, category, position, floor, issued = orjson.loads(payload)
        if now - issued > self.continuation_ttl * US:
            raise _BadRequest(
                "the continuation key has expired; start again from least_sync_time",
                "continuation_key_expired",
            )
        return _Query(
            since,
            until,
            frozenset(systems) if systems else None,
            category,
            (position[0], position[1], position[2]) if position else None,
            floor,
        )


def _spoil(rendered: bytes, event: _Event) -> bytes:
    record = orjson.loads(rendered)
    kind = ALL_KINDS[event.bad - 1]
    if kind in POISON_KINDS:
        return poison(record, kind, "sequence_id", 2**63 + event.seq, "event_time")
    if kind == "missing_id":
        del record["sequence_id"]
    elif kind == "missing_time":
        del record["event_time"]
    elif kind == "bad_time":
        record["event_time"] = _BAD_TIMES[event.seq % len(_BAD_TIMES)]
    elif kind == "bad_code":
        record["type"] = record["category"].upper()
    else:  # wrong_types
        record["sequence_id"] = f"#{event.seq}"
        record["person"] = "unknown"
    return orjson.dumps(record)


def _matches(event: _Event, systems: frozenset[str] | None, category: str | None) -> bool:
    if systems is not None and event.system not in systems:
        return False
    return category is None or data.INTSERV_TYPES[event.type][0] == category


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _BadRequest(f"{name} must be a boolean")
    return value


def _time(value: Any, default: int, name: str) -> int:
    if value is None:
        return default
    if not isinstance(value, str):
        raise _BadRequest(f"{name} must be an ISO 8601 string")
    try:
        return parse_iso(value)
    except ValueError:
        raise _BadRequest(f"{name} is not a valid ISO 8601 time: {value!r}") from None
