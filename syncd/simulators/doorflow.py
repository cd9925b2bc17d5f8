"""DoorFlow API v3 simulator: ``GET /api/3/events`` (reference and guide
flavors), ``GET /api/3/events/{id}`` with webhook acknowledgement,
``POST /oauth/token`` with rotating refresh tokens (a rotated-away one is
revoked: ``invalid_grant`` when used again, as Doorkeeper does), the
authorization-code grant with PKCE S256 (``GET /oauth/authorize`` approves at
once and redirects with ``code`` and ``state``), ``GET /oauth/token/info``,
signed webhooks.

The list names only *listable* codes (``listable_codes``, by default the
documented set: every code but 50-63); naming any other, in ``event_codes``
or the guide's repeated ``event_code``, is the vendor's ``400 bad_request``
"The following event codes are not valid for this method: ...". Remote-control
events still exist: ``GET /api/3/events/{id}`` and webhooks serve them.

Times are epoch microseconds internally (milliseconds in the data). An event
is *visible* once it has arrived (its id is assigned then, so ids follow
arrival order); a late event arrives well after its ``created_at``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import math
import random
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from heapq import heappop, heappush
from operator import attrgetter
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from syncd.simulators import data
from syncd.simulators.clock import US, Clock, iso_ms, parse_iso
from syncd.simulators.faults import (
    ALL_KINDS,
    POISON_KINDS,
    Faults,
    kind_indexes,
    poison,
)
from syncd.simulators.index import SortedIndex
from syncd.simulators.server import BaseSimulator, Request, Response, json_response

Flavor = Literal["reference", "guide"]
FLAVORS: tuple[Flavor, ...] = ("reference", "guide")
Order = Literal["created", "id"]
ORDERS: tuple[Order, ...] = ("created", "id")

DEFAULT_SINCE_DAYS = 90
MAX_N = 1000
MAX_PER_PAGE = 500
DEFAULT_PAGE_SIZE = 50
WEBHOOK_BATCH = 100
_EVENT_ID_BASE = 6_455_000
_PERSON_ID_BASE = 455_000
_DOOR_ID_BASE = 1340
_SITES = (("HQ", 0), ("Berlin", 60), ("Manchester", 0))
"""Door controllers at Berlin report local time: ``created_at`` ends ``+01:00``."""

_BAD_TIMES = ("2024-02-30T25:61:00Z", "yesterday", "", "15/01/2024 14:30", "0000-00-00T00:00:00Z")
_CRED_TYPES = {data.CRED_CARD: "Card", data.CRED_PIN: "PIN", data.CRED_MOBILE: "Mobile"}
_REF = (
    b'{"id":%d,"event_id":%d,%b,%b,"person_id":%b,"person_name":%b,'
    b'"credentials_number":%b,"created_at":"%b","updated_at":"%b"}'
)
_GUIDE = (
    b'{"id":%d,"event_code":%d,"person_id":%b,"person_name":%b,%b,"credential_id":%b,'
    b'"occurred_at":"%b","updated_at":"%b","description":%b,"additional_data":%b}'
)
_ADMITS = frozenset([*range(10, 19), 70])
_REJECTS = frozenset([*range(20, 30), 71, 72, 73])


EVENTS_SCOPE = "account.event.access.readonly"
CODE_LIFETIME_S = 600  # DoorFlow's authorization codes live 10 minutes


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(sha256(verifier)), unpadded."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class _Code:
    redirect_uri: str
    challenge: str
    scope: str
    issued: int  # epoch microseconds


@dataclass(frozen=True, slots=True)
class OAuthClient:
    client_id: str
    client_secret: str
    refresh_token: str


@dataclass(frozen=True, slots=True)
class _Door:
    id: int
    name: str
    offset: int  # minutes east of UTC, as the controller reports local time


@dataclass(frozen=True, slots=True)
class _Person:
    id: int
    first: str
    last: str
    old_last: str
    credentials: tuple[str, str, str]  # card number, PIN, mobile credential
    credential_ids: tuple[str, str, str]

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


class _Event:
    __slots__ = (
        "arrived",
        "bad",
        "code",
        "created",
        "cred",
        "ctype",
        "door",
        "guide",
        "id",
        "key",
        "name0",
        "person",
        "ref",
        "update_at",
        "updated",
    )

    def __init__(
        self,
        created: int,
        arrived: int,
        code: int,
        door: int,
        person: int,
        ctype: int,
        cred: str | None,
        name0: str | None,
        update_at: int,
        bad: int,
    ) -> None:
        self.key = (created, 0)
        self.id = 0
        self.created = created
        self.arrived = arrived
        self.code = code
        self.door = door  # index, -1: none
        self.person = person  # index, -1: none
        self.ctype = ctype
        self.cred = cred
        self.name0 = name0  # the name served until update_at
        self.update_at = update_at  # -1: never changes
        self.updated = False
        self.bad = bad  # 0, or 1 + index into ALL_KINDS
        self.ref: bytes | None = None
        self.guide: bytes | None = None


_ALL_CODES = frozenset(data.DOORFLOW_CODES)


@dataclass(frozen=True, slots=True)
class _Filter:
    codes: frozenset[int] | None = None
    doors: frozenset[int] | None = None
    persons: frozenset[int] | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass(slots=True)
class _Notification:
    action: str
    resource_id: int
    ack_token: str
    sent_at: float | None = None
    attempts: int = 0


class _BadRequest(Exception):
    def __init__(self, message: str, error: str = "invalid_request") -> None:
        super().__init__(message)
        self.error = error


INVALID_CODES_MESSAGE = "The following event codes are not valid for this method: "
"""DoorFlow's 400 ``error_description`` for codes the list does not accept."""


class DoorFlowSimulator(BaseSimulator):
    """DoorFlow on loopback. See the module docstring and ``DESIGN.md``.

    ``history`` events spread over the last ``history_days`` (plus
    ``tie_groups`` x ``tie_size`` events sharing one ``created_at`` each);
    ``generate(n)`` adds more at ``clock.now()``. ``late_share`` of events
    arrive ``late_delay`` to 1.25 x ``late_delay`` seconds after their
    ``created_at``; ``name_update_share`` of person events are first served
    with a null or old ``person_name``, corrected ``name_update_delay``
    seconds after arrival (``updated_at`` moves). ``malformed_share`` of
    records are served broken, the same way every time. OAuth access tokens
    last ``token_expiry`` seconds; the static ``token`` and ``api_key`` never
    expire. ``listable_codes`` (default: the documented set, see the module
    docstring) are the codes a list request may name; shrink it (also while
    serving) to play a vendor that stops listing some. With ``webhook_url``
    every new or updated event is announced; the unacknowledged are re-sent
    on each :meth:`deliver_webhooks` call, and every ``webhook_interval``
    seconds by the background thread when that is set. ``order="id"``: the
    reference list is ordered by id (arrival), not ``created_at``, so a late
    upload comes after events of later days. :meth:`delete` plays the vendor
    deleting events.
    """

    vendor = "doorflow"

    def __init__(  # noqa: PLR0915 - one assignment per knob, read top to bottom
        self,
        *,
        seed: int = 1,
        history: int = 10_000,
        history_days: float = 30.0,
        clock: Clock | None = None,
        flavor: Flavor = "reference",
        doors: int = 20,
        people: int = 200,
        faults: Faults | None = None,
        late_share: float = 0.0,
        late_delay: float = 3600.0,
        name_update_share: float = 0.05,
        name_update_delay: float = 300.0,
        tie_groups: int = 0,
        tie_size: int = 0,
        malformed_share: float = 0.0,
        malformed_kinds: Iterable[str] | None = None,
        token_expiry: float = 3600.0,
        oauth_scope: str = "account.event.access.readonly",
        listable_codes: Iterable[int] | None = None,
        order: Order = "created",
        rate: float = 0.0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_interval: float | None = None,
        token: str | None = None,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            seed=seed, clock=clock, faults=faults, host=host, port=port, rate=rate, verbose=verbose
        )
        for name, share in (
            ("late_share", late_share),
            ("name_update_share", name_update_share),
            ("malformed_share", malformed_share),
        ):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {share}")
        if doors < 1 or people < 1:
            raise ValueError("doors and people must be at least 1")
        if history < 0 or tie_groups < 0 or tie_size < 0:
            raise ValueError("history, tie_groups and tie_size must not be negative")
        self.flavor = flavor
        if order not in ORDERS:
            raise ValueError(f"order must be 'created' or 'id', not {order!r}")
        self.order = order
        self._by_id_cache: tuple[Any, list[_Event]] | None = None
        self.late_share = late_share
        self.late_delay = late_delay
        self.name_update_share = name_update_share
        self.name_update_delay = name_update_delay
        self.malformed_share = malformed_share
        self._bad_kinds = kind_indexes(malformed_kinds)
        self.token_expiry = token_expiry
        self.oauth_scope = oauth_scope
        """The scopes (space-separated) an OAuth grant has: what ``/oauth/token/info`` says."""
        self.listable_codes = (
            data.DOORFLOW_LISTABLE_CODES if listable_codes is None else listable_codes
        )
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.webhook_interval = webhook_interval

        creds = random.Random(f"doorflow-credentials-{seed}")
        self.token = token or "dft_" + _hex(creds, 32)
        self.api_key = api_key or "dfk_" + _hex(creds, 24)
        self.oauth = OAuthClient(_hex(creds, 32), _hex(creds, 32), "dfr_" + _hex(creds, 32))
        self.account_id = 1000 + seed % 9000
        self._creds = creds
        self._refresh_tokens = {self.oauth.refresh_token}
        self._access_tokens: dict[str, int] = {}
        # The scope each live token was granted (a token without one: EVENTS_SCOPE).
        self._scopes: dict[str, str] = {}
        # Authorization codes not yet exchanged: code -> _Code.
        self._auth_codes: dict[str, _Code] = {}

        self._rng = random.Random(seed)
        self._doors = self._make_doors(doors)
        self._people = self._make_people(people)
        self._prepare_fragments()
        rng = self._rng
        self._door_cum = data.cumulative([3.0 if i % 7 == 0 else 1.0 for i in range(doors)])
        ranks = list(range(people))
        rng.shuffle(ranks)
        self._person_cum = data.cumulative([1.0 / (1 + r) ** 0.6 for r in ranks])
        self._people_codes = list(data.DOORFLOW_PEOPLE_MIX)
        self._people_cum = data.cumulative(list(data.DOORFLOW_PEOPLE_MIX.values()))
        self._system_codes = list(data.DOORFLOW_SYSTEM_MIX)
        self._system_cum = data.cumulative(list(data.DOORFLOW_SYSTEM_MIX.values()))

        self._all: SortedIndex[_Event] = SortedIndex()
        self._views: OrderedDict[_Filter, tuple[Callable[[_Event], bool], SortedIndex[_Event]]]
        self._views = OrderedDict()
        self._by_id: dict[int, _Event] = {}
        self._next_id = _EVENT_ID_BASE
        self._arrivals: list[tuple[int, int, _Event]] = []  # heap: (arrived, seq, event)
        self._arrival_seq = 0
        self._updates: list[tuple[int, int, _Event]] = []  # heap: (update_at, id, event)
        self._notes: dict[str, _Notification] = {}
        self._acks: list[tuple[int, str, str | None]] = []
        # Tests: called with (event id, ack_token) as each acknowledgement arrives,
        # before it is answered (to check what the client had stored by then).
        self.on_ack: Callable[[int, str], None] | None = None
        self._build_history(history, history_days, tie_groups, tie_size)

    # -- public API ---------------------------------------------------------

    @property
    def flavor(self) -> Flavor:
        return self._flavor

    @flavor.setter
    def flavor(self, flavor: Flavor) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be 'reference' or 'guide', not {flavor!r}")
        self._flavor = flavor

    @property
    def listable_codes(self) -> frozenset[int]:
        return self._listable_codes

    @listable_codes.setter
    def listable_codes(self, codes: Iterable[int]) -> None:
        self._listable_codes = frozenset(codes)

    @property
    def acks(self) -> list[tuple[int, str, str | None]]:
        """Every acknowledgement received: (event id, ack_token, callback)."""
        with self._lock:
            return list(self._acks)

    def generate(self, n: int) -> int:
        """Add ``n`` events created within the last second, plus late ones
        (about ``n * late_share``, created ``late_delay``-ish ago); all visible
        at once, with new ids. Returns how many were added."""
        with self._lock:
            now = self._now()
            self._apply_due(now)
            rng = self._rng
            rand = rng.random
            created = [now - int(rand() * US) for _ in range(n)]
            if self.late_share:
                created += [
                    now - int(self.late_delay * (1.0 + 0.25 * rand()) * US)
                    for _ in range(n)
                    if rand() < self.late_share
                ]
            created = [t - t % 1000 for t in created]
            created.sort()
            codes = self._codes(len(created))
            events = self._make_events(created, [now] * len(created), codes)
            self._insert(events, now, notify=True)
            return len(events)

    def delete(self, ids: Iterable[int]) -> int:
        """The vendor deletes these events: lists omit them, ``GET`` answers 404, and
        with ``webhook_url`` a ``DESTROY`` notification is sent. Returns how many."""
        with self._lock:
            self._apply_due(self._now())
            gone = {i for i in ids if i in self._by_id}
            if not gone:
                return 0
            for event_id in gone:
                del self._by_id[event_id]
            self._all = SortedIndex([e for e in self._all.items if e.id not in gone])
            self._views.clear()
            self._by_id_cache = None
            if self.webhook_url:
                for event_id in sorted(gone):
                    self._note("DESTROY", event_id)
            return len(gone)

    @property
    def event_count(self) -> int:
        """How many records (valid or malformed) are visible now."""
        with self._lock:
            self._apply_due(self._now())
            return len(self._all)

    def truth(self, *, listable: bool = False) -> dict[int, dict[str, Any]]:
        """Every valid visible event in its current version, by id (reference fields).

        ``listable``: only those a list naming every listable code returns
        (what a sync can hold; remote-control events are left out).
        """
        with self._lock:
            self._apply_due(self._now())
            codes = self.listable_codes if listable else _ALL_CODES
            parts = [
                e.ref or self._render_ref(e)
                for e in self._all.items
                if not e.bad and e.code in codes
            ]
        return {event["id"]: event for event in orjson.loads(b"[" + b",".join(parts) + b"]")}

    def malformed(self, *, listable: bool = False) -> list[dict[str, Any]]:
        """The malformed records visible so far, as served in the current flavor
        (``listable``: only those of listable codes, as in :meth:`truth`)."""
        with self._lock:
            self._apply_due(self._now())
            render = self._renderer(self._flavor)
            codes = self.listable_codes if listable else _ALL_CODES
            parts = [render(e) for e in self._all.items if e.bad and e.code in codes]
        # json, not orjson: a lone surrogate (POISON_KINDS) is in there as served.
        result: list[dict[str, Any]] = json.loads(b"[" + b",".join(parts) + b"]")
        return result

    def pending_webhooks(self) -> list[dict[str, Any]]:
        """Notifications not acknowledged yet (as they are posted)."""
        with self._lock:
            self._apply_due(self._now())
            return [self._note_payload(n) for n in self._notes.values()]

    def deliver_webhooks(self, resend_after: float = 0.0) -> int:
        """POST every unacknowledged notification (those last sent at least
        ``resend_after`` seconds ago) to ``webhook_url``, signed, in batches.
        Returns how many notifications were accepted (2xx)."""
        url = self.webhook_url
        if not url:
            return 0
        with self._lock:
            self._apply_due(self._now())
            now = time.monotonic()
            due = [
                n
                for n in self._notes.values()
                if n.sent_at is None or now - n.sent_at >= resend_after
            ]
            for note in due:
                note.sent_at = now
                note.attempts += 1
            payloads = [self._note_payload(n) for n in due]
        delivered = 0
        for start in range(0, len(payloads), WEBHOOK_BATCH):
            batch = payloads[start : start + WEBHOOK_BATCH]
            if self._post_webhook(url, orjson.dumps(batch)):
                delivered += len(batch)
                self._count("webhook_posts")
            else:
                self._count("webhook_failures")
        return delivered

    def sign(self, timestamp: str, body: bytes) -> str:
        """The ``Signature`` header for ``body`` sent at ``timestamp``."""
        secret = (self.webhook_secret or "").encode()
        return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()

    # -- data ----------------------------------------------------------------

    def _make_doors(self, n: int) -> list[_Door]:
        doors = []
        for i in range(n):
            site, offset = _SITES[i % len(_SITES)]
            name = data.DOOR_NAMES[(i // len(_SITES)) % len(data.DOOR_NAMES)]
            round_ = i // (len(_SITES) * len(data.DOOR_NAMES))
            suffix = f" {round_ + 1}" if round_ else ""
            doors.append(_Door(_DOOR_ID_BASE + i, f"{site} {name}{suffix}", offset))
        return doors

    def _make_people(self, n: int) -> list[_Person]:
        rng = self._rng
        people = []
        for i in range(n):
            first = rng.choice(data.FIRST_NAMES)
            last = rng.choice(data.LAST_NAMES)
            old_last = rng.choice([x for x in data.LAST_NAMES[:12] if x != last])
            credentials = (data.digits(rng, 11), data.digits(rng, 4), "mob_" + _hex(rng, 6))
            credential_ids = tuple("cred_" + _hex(rng, 6) for _ in range(3))
            people.append(
                _Person(
                    _PERSON_ID_BASE + i * 7,
                    first,
                    last,
                    old_last,
                    credentials,
                    (credential_ids[0], credential_ids[1], credential_ids[2]),
                )
            )
        return people

    def _codes(self, n: int) -> list[int]:
        rng = self._rng
        codes = rng.choices(self._people_codes, cum_weights=self._people_cum, k=n)
        system = rng.choices(self._system_codes, cum_weights=self._system_cum, k=n)
        rand = rng.random
        return [s if rand() < data.SYSTEM_SHARE else c for c, s in zip(codes, system, strict=True)]

    def _make_events(
        self, created: list[int], arrived: list[int], codes: list[int]
    ) -> list[_Event]:
        rng = self._rng
        rand = rng.random
        n = len(created)
        door_picks = rng.choices(range(len(self._doors)), cum_weights=self._door_cum, k=n)
        person_picks = rng.choices(range(len(self._people)), cum_weights=self._person_cum, k=n)
        people = self._people
        person_codes = data.DOORFLOW_PERSON_CODES
        no_door = data.DOORFLOW_NO_DOOR_CODES
        cred_of = data.DOORFLOW_CREDENTIAL
        update_share = self.name_update_share
        delay = int(self.name_update_delay * US)
        bad_share = self.malformed_share
        kinds = self._bad_kinds
        events = []
        for i in range(n):
            code = codes[i]
            person = -1
            ctype = cred_of.get(code, 0)
            cred = None
            name0 = None
            update_at = -1
            if code in person_codes:
                if code in (20, 27) and rand() < 0.3:  # a card nobody holds
                    cred = data.digits(rng, 11)
                else:
                    person = person_picks[i]
                    if ctype:
                        cred = people[person].credentials[ctype - 1]
                    if update_share and rand() < update_share:
                        name0 = None if rand() < 0.5 else _old_name(people[person])
                        update_at = arrived[i] + delay
            bad = 1 + kinds[int(rand() * len(kinds))] if bad_share and rand() < bad_share else 0
            events.append(
                _Event(
                    created[i],
                    arrived[i],
                    code,
                    -1 if code in no_door else door_picks[i],
                    person,
                    ctype,
                    cred,
                    name0,
                    update_at,
                    bad,
                )
            )
        return events

    def _build_history(self, history: int, days: float, tie_groups: int, tie_size: int) -> None:
        rng = self._rng
        now = self._now()
        start = now - int(days * 86400 * US)
        n_system = round(history * data.SYSTEM_SHARE)
        created = data.business_times(rng, start, now, history - n_system, 1000)
        codes = rng.choices(self._people_codes, cum_weights=self._people_cum, k=len(created))
        created += data.uniform_times(rng, start, now, n_system, 1000)
        codes += rng.choices(self._system_codes, cum_weights=self._system_cum, k=n_system)
        for t in data.business_times(rng, start, now, tie_groups, 1000):
            created += [t] * tie_size
            codes += rng.choices(self._people_codes, cum_weights=self._people_cum, k=tie_size)
        arrived = created
        if self.late_share:
            rand = rng.random
            share, delay = self.late_share, self.late_delay * US
            arrived = [
                t + int(delay * (1.0 + 0.25 * rand())) if rand() < share else t for t in created
            ]
        events = self._make_events(created, arrived, codes)
        events.sort(key=attrgetter("arrived", "created"))
        split = bisect_left([e.arrived for e in events], now + 1)
        self._insert(events[:split], now, notify=False)
        for event in events[split:]:
            self._arrival_seq += 1
            heappush(self._arrivals, (event.arrived, self._arrival_seq, event))

    def _insert(self, events: list[_Event], now: int, *, notify: bool) -> None:
        """Make ``events`` (in arrival order) visible: ids, indexes, notifications."""
        by_id = self._by_id
        for event in events:
            self._next_id += 1
            event.id = self._next_id
            event.key = (event.created, event.id)
            by_id[event.id] = event
            if event.update_at >= 0:
                if event.update_at <= now:
                    event.updated = True
                else:
                    heappush(self._updates, (event.update_at, event.id, event))
        ordered = sorted(events, key=attrgetter("key"))
        self._all.add(ordered)
        for match, index in self._views.values():
            index.add([e for e in ordered if match(e)])
        if notify and self.webhook_url:
            for event in events:
                self._note("CREATE", event.id)

    def _apply_due(self, now: int) -> None:
        """Late arrivals whose time has come; names corrected on schedule."""
        if self._arrivals and self._arrivals[0][0] <= now:
            arrived = []
            while self._arrivals and self._arrivals[0][0] <= now:
                arrived.append(heappop(self._arrivals)[2])
            self._insert(arrived, now, notify=True)
        while self._updates and self._updates[0][0] <= now:
            event = heappop(self._updates)[2]
            event.updated = True
            event.ref = event.guide = None
            if self.webhook_url:
                self._note("UPDATE", event.id)

    def _note(self, action: str, event_id: int) -> None:
        token = _hex(self._creds, 16)
        self._notes[token] = _Notification(action, event_id, token)

    def _note_payload(self, note: _Notification) -> dict[str, Any]:
        base = self.base_url if self.running else ""
        return {
            "action": note.action,
            "resource": f"{base}/api/3/events/{note.resource_id}",
            "resource_type": "Event",
            "resource_id": note.resource_id,
            "account_id": self.account_id,
            "ack_token": note.ack_token,
        }

    def _post_webhook(self, url: str, body: bytes) -> bool:
        parts = urlsplit(url)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "DoorFlow-Webhooks/1 (syncd simulator)",
            "Timestamp": timestamp,
            "Signature": self.sign(timestamp, body),
        }
        conn_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_class(parts.hostname or "127.0.0.1", parts.port, timeout=5)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        return 200 <= response.status < 300

    # -- rendering -----------------------------------------------------------

    def _person_name(self, event: _Event) -> str | None:
        if event.person < 0:
            return None
        if event.update_at >= 0 and not event.updated:
            return event.name0
        return self._people[event.person].name

    def _updated_at(self, event: _Event) -> int:
        return event.update_at if event.updated else event.arrived

    def _prepare_fragments(self) -> None:
        """JSON fragments shared by many events, so rendering one is a ``%``.

        The door and person lists get a last entry for "none", so index -1
        finds it."""
        dumps = orjson.dumps
        self._f_code = {
            code: b'"event_code":%d,"event_label":%b' % (code, dumps(label))
            for code, label in data.DOORFLOW_LABELS.items()
        }
        doors: list[_Door | None] = [*self._doors, None]
        self._f_door_ref = [
            b'"door_controller_id":%b,"door_controller_name":%b,"channel_id":%b,"channel_name":%b'
            % ((dumps(d.id), dumps(d.name)) * 2 if d else (b"null",) * 4)
            for d in doors
        ]
        self._f_door_guide = [
            b'"channel_id":%b,"channel_name":%b'
            % ((dumps(d.id), dumps(d.name)) if d else (b"null",) * 2)
            for d in doors
        ]
        self._f_offset = [d.offset if d else 0 for d in doors]
        self._f_where = [d.name if d else "the account" for d in doors]
        self._f_person_id = [dumps(p.id) for p in self._people] + [b"null"]
        self._f_person_name = [dumps(p.name) for p in self._people] + [b"null"]

    def _name_json(self, event: _Event) -> bytes:
        if event.update_at >= 0 and not event.updated:
            return orjson.dumps(event.name0)
        return self._f_person_name[event.person]

    def _render_ref(self, event: _Event) -> bytes:
        offset = self._f_offset[event.door]
        created = iso_ms(event.created, offset)
        updated_us = event.update_at if event.updated else event.arrived
        updated = created if updated_us == event.created else iso_ms(updated_us, offset)
        rendered = _REF % (
            event.id,
            event.id,
            self._f_code[event.code],
            self._f_door_ref[event.door],
            self._f_person_id[event.person],
            self._name_json(event),
            b'"%b"' % event.cred.encode() if event.cred is not None else b"null",
            created.encode(),
            updated.encode(),
        )
        if event.bad:
            rendered = _spoil(rendered, event, "created_at", ("id", "event_id"))
        event.ref = rendered
        return rendered

    def _render_guide(self, event: _Event) -> bytes:
        person = self._people[event.person] if event.person >= 0 else None
        name = self._person_name(event)
        label = data.DOORFLOW_LABELS[event.code]
        where = self._f_where[event.door]
        if event.code in _ADMITS:
            description = f"{name or 'Unknown person'} accessed {where}"
        elif event.code in _REJECTS:
            description = f"{name or 'Unknown credential'} denied access to {where} - {label}"
        else:
            description = f"{label} ({where})" if event.door >= 0 else label
        extra: dict[str, Any] = {}
        credential_id = None
        if event.ctype:
            extra["credential_type"] = _CRED_TYPES[event.ctype]
            if event.ctype == data.CRED_CARD:
                extra["card_number"] = event.cred
            if person:
                credential_id = person.credential_ids[event.ctype - 1]
        created = iso_ms(event.created)
        updated_us = event.update_at if event.updated else event.arrived
        rendered = _GUIDE % (
            event.id,
            event.code,
            self._f_person_id[event.person],
            self._name_json(event),
            self._f_door_guide[event.door],
            b'"%b"' % credential_id.encode() if credential_id else b"null",
            created.encode(),
            (created if updated_us == event.created else iso_ms(updated_us)).encode(),
            orjson.dumps(description),
            orjson.dumps(extra),
        )
        if event.bad:
            rendered = _spoil(rendered, event, "occurred_at", ("id",))
        event.guide = rendered
        return rendered

    def _renderer(self, flavor: Flavor) -> Callable[[_Event], bytes]:
        if flavor == "reference":
            return lambda e: e.ref or self._render_ref(e)
        return lambda e: e.guide or self._render_guide(e)

    # -- HTTP ------------------------------------------------------------------

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if path == "/api/3/events":
            method, handler = "GET", self._list
        elif path.startswith("/api/3/events/"):
            method, handler = "GET", self._one
        elif path == "/oauth/token":
            method, handler = "POST", self._token
        elif path == "/oauth/authorize":
            return self._authorize(request)
        elif path == "/oauth/token/info":
            method, handler = "GET", self._token_info
        else:
            self._count("not_found")
            return self._error(404, "not_found", "The requested resource was not found")
        if request.method != method:
            return self._error(405, "method_not_allowed", f"Use {method}")
        if handler in (self._token, self._token_info):  # OAuth endpoints: no faults, own auth
            return handler(request)
        return self._guarded(request, handler)

    def _guarded(self, request: Request, handler: Callable[[Request], Response]) -> Response:
        fault = self._inject()
        if fault is not None:
            return fault
        if not self._authorized(request):
            self._count("unauthorized")
            response = self._error(401, "unauthorized", "The access token is invalid")
            response.headers = (("WWW-Authenticate", 'Bearer realm="DoorFlow"'),)
            return response
        try:
            return handler(request)
        except _BadRequest as exc:
            self._count("bad_requests")
            return self._error(400, exc.error, str(exc))

    def _authorized(self, request: Request) -> bool:
        scheme, _, credentials = (request.headers.get("Authorization") or "").partition(" ")
        credentials = credentials.strip()
        scheme = scheme.lower()
        if scheme == "bearer":
            if _same(credentials, self.token):
                return True
            with self._lock:
                expiry = self._access_tokens.get(credentials)
            return expiry is not None and self._now() < expiry
        if scheme == "basic":
            try:
                user = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
            except ValueError:
                return False
            return _same(user, self.api_key)
        return False

    def _list(self, request: Request) -> Response:
        if self._flavor == "reference":
            return self._list_reference(request)
        return self._list_guide(request)

    def _filter(
        self, request: Request, codes_from: tuple[str, ...], doors_from: tuple[str, ...]
    ) -> _Filter:
        codes = _ints(request.args(*codes_from), "event code")
        unlisted = sorted(set(codes) - self.listable_codes)
        if unlisted:
            # The vendor's own answer, word for word (FACTS.md): the whole
            # request fails, nothing is served.
            self._count("unlistable_code_requests")
            raise _BadRequest(INVALID_CODES_MESSAGE + ", ".join(map(str, unlisted)), "bad_request")
        doors = _ints(request.args(*doors_from), "channel id")
        persons = _ints(request.args("person_id"), "person id")
        code_set = frozenset(codes) if codes else data.DOORFLOW_DEFAULT_CODES
        return _Filter(
            None if code_set >= _ALL_CODES else code_set,
            frozenset(doors) if doors else None,
            frozenset(persons) if persons else None,
            (request.arg("first_name") or "").lower() or None,
            (request.arg("last_name") or "").lower() or None,
        )

    def _list_reference(self, request: Request) -> Response:
        now = self._now()
        since = _time(request.arg("since", "since_utc"), now - DEFAULT_SINCE_DAYS * 86400 * US)
        n = min(_int(request.arg("n", "per_page"), DEFAULT_PAGE_SIZE, "n", 1), MAX_N)
        page = _int(request.arg("page"), 1, "page", 1)
        sort = (request.arg("sort") or "DESC").upper()
        if sort not in ("ASC", "DESC"):
            raise _BadRequest("sort must be ASC or DESC")
        flt = self._filter(
            request, ("event_codes", "event_code"), ("channels", "door_controllers", "channel_id")
        )
        with self._lock:
            self._apply_due(now)
            index = self._view(flt)
            lo, hi = bisect_left(index.keys, (since,)), len(index.items)
            listed = index.items
            if self.order == "id":  # late uploads (old created_at, new id) come last
                listed, lo, hi = self._id_ordered(index, lo), 0, hi - lo
            if sort == "ASC":
                a = lo + (page - 1) * n
                items = listed[a : min(hi, a + n)]
            else:
                b = hi - (page - 1) * n
                items = listed[max(lo, b - n) : b][::-1] if b > lo else []
            parts = [e.ref or self._render_ref(e) for e in items]
        self._count("pages")
        self._count("events_served", len(parts))
        return Response(
            200,
            b"[" + b",".join(parts) + b"]",
            (("Total", str(hi - lo)), ("Per-Page", str(n))),
        )

    def _id_ordered(self, index: SortedIndex[_Event], lo: int) -> list[_Event]:
        """``index.items[lo:]`` by id (cached until the index or ``lo`` changes)."""
        key = (id(index), len(index.items), lo, self._next_id)
        if self._by_id_cache is None or self._by_id_cache[0] != key:
            self._by_id_cache = (key, sorted(index.items[lo:], key=attrgetter("id")))
        return self._by_id_cache[1]

    def _list_guide(self, request: Request) -> Response:
        now = self._now()
        since = _time(request.arg("since_utc"), now - DEFAULT_SINCE_DAYS * 86400 * US)
        until_arg = request.arg("until_utc")
        per_page = min(
            _int(request.arg("per_page"), DEFAULT_PAGE_SIZE, "per_page", 1), MAX_PER_PAGE
        )
        page = _int(request.arg("page"), 1, "page", 1)
        skip = (request.arg("skip_pagination") or "").lower() in ("true", "1", "yes")
        flt = self._filter(request, ("event_code",), ("channel_id",))
        with self._lock:
            self._apply_due(now)
            index = self._view(flt)
            lo = bisect_left(index.keys, (since,))
            hi = len(index.items)
            if until_arg is not None:
                hi = max(lo, bisect_left(index.keys, (_time(until_arg, 0),)))
            total = hi - lo
            if skip:
                page, per_page = 1, total
                items = index.items[lo:hi][::-1]
            else:
                b = hi - (page - 1) * per_page
                items = index.items[max(lo, b - per_page) : b][::-1] if b > lo else []
            parts = [e.guide or self._render_guide(e) for e in items]
        pagination = {
            "page": page,
            "per_page": per_page,
            "total_pages": (1 if total else 0) if skip else math.ceil(total / per_page),
            "total_count": total,
        }
        self._count("pages")
        self._count("events_served", len(parts))
        tail = b'],"pagination":' + orjson.dumps(pagination) + b"}"
        return Response(200, b'{"events":[' + b",".join(parts) + tail)

    def _view(self, flt: _Filter) -> SortedIndex[_Event]:
        if flt == _Filter():
            return self._all
        entry = self._views.get(flt)
        if entry is not None:
            self._views.move_to_end(flt)
            return entry[1]
        match = self._matcher(flt)
        index = SortedIndex([e for e in self._all.items if match(e)])
        self._views[flt] = (match, index)
        if len(self._views) > 64:
            self._views.popitem(last=False)
        return index

    def _matcher(self, flt: _Filter) -> Callable[[_Event], bool]:
        tests: list[Callable[[_Event], bool]] = []
        if flt.codes is not None:
            codes = flt.codes
            tests.append(lambda e: e.code in codes)
        if flt.doors is not None:
            doors = {i for i, door in enumerate(self._doors) if door.id in flt.doors}
            tests.append(lambda e: e.door in doors)
        if flt.persons is not None or flt.first_name or flt.last_name:
            people = {
                i
                for i, p in enumerate(self._people)
                if (flt.persons is None or p.id in flt.persons)
                and (not flt.first_name or p.first.lower() == flt.first_name)
                and (not flt.last_name or p.last.lower() == flt.last_name)
            }
            tests.append(lambda e: e.person in people)
        if len(tests) == 1:
            return tests[0]
        return lambda e: all(test(e) for test in tests)

    def _one(self, request: Request) -> Response:
        raw_id = request.path.rstrip("/").rsplit("/", 1)[1]
        ack_token = request.arg("ack_token")
        callback = request.arg("callback")
        with self._lock:
            self._apply_due(self._now())
            event = self._by_id.get(int(raw_id)) if raw_id.isdigit() else None
            if event is None:
                self._count("not_found")
                return self._error(404, "not_found", "The requested resource was not found")
            body = self._renderer(self._flavor)(event)
            if ack_token is not None:
                self._acks.append((event.id, ack_token, callback))
                note = self._notes.get(ack_token)
                if note is not None and note.resource_id == event.id:
                    del self._notes[ack_token]
                    self._count("acks")
        if ack_token is not None and self.on_ack is not None:
            self.on_ack(event.id, ack_token)
        self._count("events_served")
        return Response(200, body)

    def _token(self, request: Request) -> Response:
        self._count("token_requests")
        content_type = request.headers.get("Content-Type") or ""
        form: dict[str, str] = {}
        if "json" in content_type:
            try:
                loaded = orjson.loads(request.body or b"{}")
            except orjson.JSONDecodeError:
                loaded = None
            if not isinstance(loaded, dict):
                return self._error(400, "invalid_request", "The request body is not valid")
            form = {k: str(v) for k, v in loaded.items()}
        else:
            parsed = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
            form = {k: v[0] for k, v in parsed.items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, basic = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic" and client_id is None:
            try:
                client_id, _, client_secret = base64.b64decode(basic).decode().partition(":")
            except ValueError:
                client_id = None
        if client_id != self.oauth.client_id or client_secret != self.oauth.client_secret:
            return self._error(
                401,
                "invalid_client",
                "Client authentication failed due to unknown client, no client authentication "
                "included, or unsupported authentication method.",
            )
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._code_grant(form)
        if grant != "refresh_token":
            return self._error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            )
        old = form.get("refresh_token") or ""
        with self._lock:
            if old not in self._refresh_tokens:
                return self._invalid_grant()
            self._refresh_tokens.discard(old)
            scope = self._scopes.pop(old, self.oauth_scope)
            answer = self._issue(scope)
        self._count("token_refreshes")
        return answer

    def _invalid_grant(self) -> Response:
        self._count("invalid_grant")
        return self._error(
            400,
            "invalid_grant",
            "The provided authorization grant is invalid, expired, revoked, does not "
            "match the redirection URI used in the authorization request, or was issued "
            "to another client.",
        )

    def _issue(self, scope: str) -> Response:
        """A new access and refresh token for ``scope`` (the caller holds ``_lock``)."""
        now = self._now()
        refresh = "dfr_" + _hex(self._creds, 32)
        access = "dfa_" + _hex(self._creds, 32)
        self._refresh_tokens.add(refresh)
        self._access_tokens = {t: x for t, x in self._access_tokens.items() if x > now}
        self._scopes = {
            t: v for t, v in self._scopes.items() if t in self._access_tokens or t in
            self._refresh_tokens
        }  # fmt: skip
        self._access_tokens[access] = now + int(self.token_expiry * US)
        self._scopes[access] = self._scopes[refresh] = scope
        return json_response(
            200,
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": math.ceil(self.token_expiry),
                "refresh_token": refresh,
                "scope": scope,
                "created_at": now // US,
            },
            (("Cache-Control", "no-store"),),
        )

    def _authorize(self, request: Request) -> Response:
        """``GET /oauth/authorize``: approved at once; a redirect with ``code`` and ``state``.

        Errors a client can make before a redirect is safe (unknown client, no
        redirect URI, no PKCE S256 challenge) answer 400 without redirecting.
        """
        if request.method != "GET":
            return self._error(405, "method_not_allowed", "Use GET")
        self._count("authorizations")
        redirect = request.arg("redirect_uri")
        challenge = request.arg("code_challenge")
        if request.arg("client_id") != self.oauth.client_id:
            return self._error(400, "invalid_client", "Unknown client_id")
        if not redirect or urlsplit(redirect).scheme not in ("http", "https"):
            return self._error(400, "invalid_redirect_uri", "A redirect_uri is required")
        if request.arg("response_type") != "code":
            return self._error(400, "unsupported_response_type", "response_type must be code")
        if not challenge or request.arg("code_challenge_method") != "S256":
            return self._error(400, "invalid_request", "PKCE with code_challenge_method=S256")
        code = "dfc_" + _hex(self._creds, 24)
        with self._lock:
            self._auth_codes[code] = _Code(
                redirect, challenge, request.arg("scope") or EVENTS_SCOPE, self._now()
            )
        query = {"code": code}
        state = request.arg("state")
        if state is not None:
            query["state"] = state
        separator = "&" if urlsplit(redirect).query else "?"
        location = redirect + separator + urlencode(query)
        return Response(302, b"", (("Location", location),), "text/plain")

    def _code_grant(self, form: dict[str, str]) -> Response:
        """The ``authorization_code`` grant: one use, same redirect URI, PKCE S256 verified."""
        code = form.get("code") or ""
        verifier = form.get("code_verifier") or ""
        with self._lock:
            held = self._auth_codes.pop(code, None)  # spent whatever happens next
            if held is None or self._now() - held.issued > CODE_LIFETIME_S * US:
                return self._invalid_grant()
            if form.get("redirect_uri") != held.redirect_uri:
                return self._invalid_grant()
            if not hmac.compare_digest(pkce_challenge(verifier), held.challenge):
                return self._invalid_grant()
            answer = self._issue(held.scope)
        self._count("code_grants")
        return answer

    def _token_info(self, request: Request) -> Response:
        """``GET /oauth/token/info``: the bearer token's ``scope[]``, ``expires_in``, account."""
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        token = token.strip()
        with self._lock:
            expiry = self._access_tokens.get(token)
            scope = self._scopes.get(token, self.oauth_scope)
        now = self._now()
        if scheme.lower() != "bearer" or expiry is None or now >= expiry:
            self._count("unauthorized")
            return self._error(401, "invalid_token", "The access token is invalid")
        return json_response(
            200,
            {
                "resource_owner_id": self.account_id,
                "account_id": self.account_id,
                "scope": scope.split(),
                "expires_in": max(0, (expiry - now) // US),
                "application": {"uid": self.oauth.client_id},
                "created_at": now // US,
            },
        )

    def _tick(self, elapsed: float, carry: float) -> float:
        carry = super()._tick(elapsed, carry)
        with self._lock:
            self._apply_due(self._now())
        if self.webhook_url and self.webhook_interval is not None:
            self.deliver_webhooks(resend_after=self.webhook_interval)
        return carry


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison that any header text can go through (not only ASCII)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _hex(rng: random.Random, nbytes: int) -> str:
    return rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()


def _old_name(person: _Person) -> str:
    return f"{person.first} {person.old_last}"


def _spoil(rendered: bytes, event: _Event, time_field: str, id_fields: Iterable[str]) -> bytes:
    record = orjson.loads(rendered)
    kind = ALL_KINDS[event.bad - 1]
    if kind in POISON_KINDS:
        return poison(record, kind, "event_code", 2**32 + event.code, time_field)
    if kind == "missing_id":
        for field in id_fields:
            del record[field]
    elif kind == "missing_time":
        del record[time_field]
    elif kind == "bad_time":
        record[time_field] = _BAD_TIMES[event.id % len(_BAD_TIMES)]
    elif kind == "bad_code":
        record["event_code"] = data.DOORFLOW_LABELS[event.code].split(" ")[0].upper()
    else:  # wrong_types
        record["id"] = f"#{event.id}"
        record["event_code"] = [event.code]
    return orjson.dumps(record)


def _ints(values: list[str], what: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise _BadRequest(f"invalid {what}: {', '.join(values)}") from None


def _int(value: str | None, default: int, name: str, minimum: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None
    return max(minimum, number)


def _time(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return parse_iso(value)
    except ValueError:
        raise _BadRequest(f"invalid ISO 8601 time: {value!r}") from None
