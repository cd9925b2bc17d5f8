"""DoorFlow webhooks: verify, answer, then fetch the notified events in the background.

The contract (DESIGN.md "Webhooks"): the signature is checked before the body
is parsed (hex HMAC-SHA256 over ``"{Timestamp}.{raw body}"``, constant-time
compare), the timestamp must be within :data:`TOLERANCE_S` of now either
way, and nothing the sender controls can cause a 5xx. Notifications carry
no event data: each ``Event`` ``CREATE``/``UPDATE`` is fetched from the
source's *configured* base URL (only the integer id comes from the payload)
through the source's runtime client (same auth, retries and interruptible
waits as polling), normalized like a polled page and written with no cursor
(the live cursor is untouched) in a synchronous commit; only then is it
fetched again with its ``ack_token``, which acknowledges it. A write that
fails is retried until the database takes it; an event not visible yet, or
a fetch that fails, is retried a few times, then left unacknowledged to the
vendor's redelivery and the next poll (see :class:`WebhookFetcher`).

:func:`answer` is pure (headers, body and ``now`` in, status and body out);
:class:`WebhookFetcher` is the I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
import structlog

from syncd.config import SourceConfig
from syncd.db.store import Store
from syncd.engine import SourceRuntime, describe_error, utcnow
from syncd.errors import DatabaseUnavailable, SourceError
from syncd.metrics import Metrics
from syncd.records import EventRecord, RejectedRecord
from syncd.sources.base import CodeInfo
from syncd.sources.doorflow import EVENTS_PATH, normalize_page
from syncd.sources.http import RetryHooks, RetryPolicy, send
from syncd.threads import run_in_thread

log = structlog.get_logger(__name__)

MAX_BODY = 1024 * 1024
TOLERANCE_S = 300.0
FETCHED_ACTIONS = frozenset({"CREATE", "UPDATE"})
# Waits between rounds of fetching what is not visible yet, and of acknowledging (seconds).
REFETCH_DELAYS = (0.2, 0.5, 1.0, 2.0)
# After a failed write: waits double from the first to the cap, for as long as it takes.
STORE_BACKOFF_INITIAL = 0.5
STORE_BACKOFF_MAX = 30.0
# Notifications in hand at most (about 2 KB each with the fetched event): the
# memory bound during a long outage; what overflows is left to redelivery.
MAX_QUEUED = 10_000
# Events of one source stored in one transaction (and so one synchronous commit).
BATCH = 100
# What a write (or reading a source's state) raises when the database fails.
DATABASE_ERRORS = (sa.exc.SQLAlchemyError, DatabaseUnavailable)
# Longest idle wait of a worker: how soon it notices the daemon's stop.
IDLE_WAKE = 0.5


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification of a webhook body; ``resource_id`` None when not usable."""

    action: str | None
    resource_type: str | None
    resource_id: int | None
    ack_token: str | None

    @property
    def fetchable(self) -> bool:
        return (
            self.resource_type == "Event"
            and self.action in FETCHED_ACTIONS
            and self.resource_id is not None
        )

    @property
    def destroys_event(self) -> bool:
        """A ``DESTROY`` of an event: marked deleted (``events.deleted_at``), never fetched."""
        return (
            self.resource_type == "Event"
            and self.action == "DESTROY"
            and self.resource_id is not None
        )


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    notifications: tuple[Notification, ...] = ()


# -- verification and parsing (pure) --------------------------------------------------


def parse_timestamp(value: str) -> float | None:
    """Unix seconds (``"1733000000"``, ``"1733000000.5"``) or ISO 8601; None if neither."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a sender puts in ``Signature``."""
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verified(
    secret: bytes, timestamp: str | None, given: str | None, body: bytes, now: float
) -> bool:
    """Signature valid (constant-time) and timestamp within the window, either way."""
    if not timestamp or not given:
        return False
    expected = signature(secret, timestamp, body).encode()
    # WSGI headers are latin-1 strings; bytes compare in constant time whatever they hold.
    if not hmac.compare_digest(expected, given.strip().lower().encode("latin-1", "replace")):
        return False
    sent = parse_timestamp(timestamp)
    return sent is not None and abs(now - sent) <= TOLERANCE_S


def _resource_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
        return number if number > 0 else None
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_notifications(body: bytes) -> list[Notification] | None:
    """The notifications of a body, or None when it is not a JSON array of objects.

    A single object is a list of one. Items with an unusable ``resource_id``
    are kept (counted as ignored), not an error.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        return None
    return [
        Notification(
            action=_text(item.get("action")),
            resource_type=_text(item.get("resource_type")),
            resource_id=_resource_id(item.get("resource_id")),
            ack_token=_text(item.get("ack_token")),
        )
        for item in items
    ]


def answer(
    secret: bytes | None,
    headers: Mapping[str, str],
    body: bytes | None,
    now: float,
) -> Answer:
    """The answer to a POST for a source: ``secret`` None means unknown or no secret.

    ``body`` None means it was larger than :data:`MAX_BODY` (not read).
    ``headers`` are looked up by their canonical names (``Signature``, ``Timestamp``).
    """
    if secret is None:
        return Answer(404, {"error": "not_found"})
    if body is None or len(body) > MAX_BODY:
        return Answer(413, {"error": "body_too_large", "limit_bytes": MAX_BODY})
    if not verified(secret, headers.get("Timestamp"), headers.get("Signature"), body, now):
        return Answer(401, {"error": "bad_signature_or_stale_timestamp"})
    notifications = parse_notifications(body)
    if notifications is None:
        return Answer(400, {"error": "body is not a JSON array of notifications"})
    return Answer(200, {"accepted": len(notifications)}, tuple(notifications))


# -- the background fetch ----------------------------------------------------------


@dataclass(slots=True)
class _Held:
    """One notification in hand, and how far it got (guarded by the fetcher's lock)."""

    source: str
    note: Notification
    due: float  # monotonic time of its next step
    body: Any = None  # the event as fetched without acknowledging it
    stored: bool = False  # its row (or reject) committed durably
    done: bool = False  # acknowledged (or nothing to acknowledge): let go
    attempts: int = 0  # failed rounds of the current step (fetch, then acknowledge)
    claimed: bool = False  # a worker has it


def _key(source: str, note: Notification) -> tuple[str, str | int | None]:
    """A redelivery carries the same ``ack_token``: one entry per token (or id without one)."""
    return (source, note.ack_token if note.ack_token else note.resource_id)


def retry_delay(attempts: int, delays: Sequence[float]) -> float | None:
    """The wait after ``attempts`` failed rounds of a fetch or an acknowledgement;
    None once every delay is spent (the notification is let go unacknowledged)."""
    return delays[attempts - 1] if 0 < attempts <= len(delays) else None


def store_backoff(failures: int, initial: float, cap: float) -> float:
    """The wait before writing again after ``failures`` failed writes in a row.

    There is no last attempt: an event fetched but not stored is never
    acknowledged, so giving up would leave it to a redelivery the vendor may
    not make (remote-control events, codes 50-63, cannot be polled). The
    bounded queue keeps the waiting finite in memory.
    """
    return min(cap, initial * 2.0 ** min(max(0, failures - 1), 64))  # 2.0**1024 overflows


class WebhookFetcher:
    """Fetches, stores, then acknowledges notified events, on worker threads of its own.

    Each notification goes through three steps, each retried on its own:

    1. ``GET /api/3/events/{id}`` *without* its ``ack_token`` (404 or a failed
       fetch: retried after each of ``delays``, then let go unacknowledged:
       the vendor redelivers it, and a listable event comes with the next poll);
    2. the events of a batch written in one transaction with a synchronous
       commit (``Store.write_page(durable=True)``); a failed write is retried
       with backoff (``store_backoff``) for as long as the daemon runs, the
       body kept in hand, so a database outage of minutes loses nothing;
    3. ``GET`` again *with* the ``ack_token``: the vendor is told only now.
       That answer is the vendor's current version; when it differs from the
       stored one (updated in between) it is stored too.

    So a notified event costs two vendor requests instead of one: the price
    of never acknowledging what is not on disk without a table of its own.
    (A durable inbox, each notification committed before one fetch with its
    token, would cost one request and a migration, and two more writes per
    notification.) At most ``max_queued`` notifications are in hand; what
    overflows is counted (``syncd_webhook_dropped_total``) and left
    unacknowledged. A redelivery of a notification in hand is not taken twice.

    Whatever is let go, dropped or in hand when the process dies was never
    acknowledged: the vendor redelivers it (for how long, DoorFlow does not
    say), and a listable event also comes with the next poll. A
    remote-control event (codes 50-63, which no list returns) has only the
    redelivery.

    A pass can run for the same source at the same time: both upsert, so
    whichever writes last writes the same (or a newer) version of the event.
    """

    def __init__(
        self,
        store: Store,
        runtime: Callable[[str], SourceRuntime],
        configs: Mapping[str, SourceConfig],
        metrics: Metrics,
        hooks: Callable[[str], RetryHooks],
        *,
        stop: threading.Event,
        workers: int = 2,
        clock: Callable[[], datetime] = utcnow,
        delays: Sequence[float] = REFETCH_DELAYS,
        max_queued: int = MAX_QUEUED,
        store_backoff_initial: float = STORE_BACKOFF_INITIAL,
        store_backoff_max: float = STORE_BACKOFF_MAX,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.configs = configs
        self.metrics = metrics
        self.hooks = hooks
        self.stop = stop
        self.clock = clock
        self.delays = tuple(delays)
        self.max_queued = max_queued
        self.store_backoff_initial = store_backoff_initial
        self.store_backoff_max = store_backoff_max
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._held: dict[tuple[str, str | int | None], _Held] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._store_failures = 0
        self._store_retry_at = 0.0  # monotonic; no write before it after a failure
        self._codes: dict[str, Mapping[int, CodeInfo]] = {}

    def submit(self, source: str, notifications: Sequence[Notification]) -> None:
        fetch = [n for n in notifications if n.fetchable]
        destroyed = [n for n in notifications if n.destroys_event]
        if destroyed and not self.stop.is_set():
            # A database write only, off the request's thread (the 200 never waits on it).
            run_in_thread(
                lambda: self._mark_deleted(source, destroyed), name="syncd-webhook-delete"
            )
        for note in notifications:
            if not note.fetchable and not note.destroys_event:
                outcome = "ignored" if note.resource_id is None else "not_an_event_change"
                self.metrics.webhook_notifications.labels(source, outcome).inc()
                log.info(
                    "webhook_notification_skipped",
                    source=source,
                    outcome=outcome,
                    action=note.action,
                    resource_type=note.resource_type,
                    resource_id=note.resource_id,
                )
        if fetch and not self.stop.is_set():
            self._take_in(source, fetch)

    @property
    def queued(self) -> int:
        """Notifications in hand (to fetch, to store, to acknowledge)."""
        with self._cond:
            return len(self._held)

    def close(self) -> None:
        """Stop taking work; what is in flight ends at its next wait (``stop`` is set).

        What is still in hand is not acknowledged: the vendor redelivers it.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _mark_deleted(self, source: str, notes: list[Notification]) -> None:
        """DESTROY: the vendor deleted the event; its row stays, ``deleted_at`` is set."""
        keys = [str(n.resource_id) for n in notes]
        try:
            marked = self.store.mark_deleted(source, keys, self.clock())
        except Exception as exc:  # a worker never dies; a complete re-read marks it later
            log.warning("webhook_delete_failed", source=source, error=describe_error(exc))
            return
        self.metrics.webhook_notifications.labels(source, "deleted").inc(len(notes))
        log.info("webhook_events_deleted", source=source, events=len(keys), marked=marked)

    # -- the queue -------------------------------------------------------------------

    def _take_in(self, source: str, notes: Sequence[Notification]) -> None:
        now = time.monotonic()
        dropped = again = 0
        with self._cond:
            if self._closed:
                return
            for note in notes:
                key = _key(source, note)
                if key in self._held:
                    again += 1
                elif len(self._held) >= self.max_queued:
                    dropped += 1
                else:
                    self._held[key] = _Held(source, note, due=now)
            queued = len(self._held)
            self._start_workers()
            self._cond.notify_all()
        self.metrics.webhook_queued.set(queued)
        if again:
            self.metrics.webhook_notifications.labels(source, "already_queued").inc(again)
        if dropped:
            self.metrics.webhook_dropped.labels(source).inc(dropped)
            log.warning("webhook_queue_full", source=source, dropped=dropped, queued=queued)

    def _start_workers(self) -> None:
        while len(self._threads) < self._workers:
            thread = threading.Thread(
                target=self._serve, name=f"syncd-webhook-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._work(batch)
            except Exception as exc:  # a worker never dies; what it held is tried again
                log.warning(
                    "webhook_fetch_failed", source=batch[0].source, error=describe_error(exc)
                )
                for held in batch:
                    held.attempts += 1  # later, and given up in the end like a failed fetch
            finally:
                self._settle(batch)

    def _next_batch(self) -> list[_Held] | None:
        """The due notifications of one source (the one waiting longest); None to stop."""
        with self._cond:
            while not (self._closed or self.stop.is_set()):
                now = time.monotonic()
                waiting = [h for h in self._held.values() if not h.claimed]
                due = [h for h in waiting if h.due <= now]
                if due:
                    source = min(due, key=lambda h: h.due).source
                    batch = [h for h in due if h.source == source][:BATCH]
                    for held in batch:
                        held.claimed = True
                    return batch
                soonest = min((h.due for h in waiting), default=now + IDLE_WAKE)
                # Woken early by new work or close(); the stop event is polled.
                self._cond.wait(min(IDLE_WAKE, max(0.0, soonest - now)))
        return None

    def _settle(self, batch: list[_Held]) -> None:
        """Let go what is done or given up; schedule the next step of the rest."""
        now = time.monotonic()
        with self._cond:
            for held in batch:
                held.claimed = False
                # Rounds count failures of the vendor (or of syncd itself), never of
                # the database: that one is waited out however long it takes.
                wait = retry_delay(held.attempts, self.delays) if held.attempts else 0.0
                if held.done:
                    self._drop(held)
                elif wait is None:
                    self._drop(held)
                    self._given_up(held)
                elif held.attempts == 0 or (held.body is not None and not held.stored):
                    # Not tried (stopping, or no runtime without the database), or
                    # fetched and waiting for the database.
                    held.due = max(now + wait, self._store_retry_at)
                else:
                    held.due = now + wait
            queued = len(self._held)
            self._cond.notify_all()
        self.metrics.webhook_queued.set(queued)

    def _drop(self, held: _Held) -> None:
        self._held.pop(_key(held.source, held.note), None)

    def _given_up(self, held: _Held) -> None:
        # Either way nothing was acknowledged: the vendor redelivers the notification.
        outcome = "unacknowledged" if held.stored else "abandoned"
        self.metrics.webhook_notifications.labels(held.source, outcome).inc()
        log.info(
            "webhook_fetch_abandoned",
            source=held.source,
            resource_id=held.note.resource_id,
            stored=held.stored,
        )

    # -- one batch: fetch, store, acknowledge ----------------------------------------

    def _work(self, batch: list[_Held]) -> None:
        source = batch[0].source
        config = self.configs[source]
        policy = replace(RetryPolicy.for_source(config), hooks=self.hooks(source))
        try:
            # The runtime reads the source's state when it opens; an OAuth client
            # reads (and saves) its tokens in the database before a refresh.
            runtime = self.runtime(source)
            self._fetch(runtime, policy, source, [h for h in batch if h.body is None])
        except DATABASE_ERRORS as exc:
            self._database_failed(source, len(batch), exc)
            return
        fetched = [h for h in batch if h.body is not None and not h.stored]
        if fetched and not self.stop.is_set() and self._store_all(source, config.kind, fetched):
            for held in fetched:
                held.stored = True
                held.attempts = 0
        self._acknowledge(runtime, policy, source, config.kind, [h for h in batch if h.stored])

    def _fetch(
        self, runtime: SourceRuntime, policy: RetryPolicy, source: str, batch: list[_Held]
    ) -> None:
        """Step 1: read each event without acknowledging it (one GET per event id)."""
        bodies: dict[int | None, Any] = {}
        for held in batch:
            if self.stop.is_set():
                return
            rid = held.note.resource_id
            if rid not in bodies:
                bodies[rid] = self._get(runtime, policy, source, rid, None)
                if bodies[rid] is not None:
                    self.metrics.webhook_notifications.labels(source, "fetched").inc()
            held.body = bodies[rid]
            held.attempts = 0 if held.body is not None else held.attempts + 1

    def _store_all(self, source: str, kind: str, batch: list[_Held]) -> bool:
        """Step 2: one durable transaction; False (and a backoff for every batch) if it failed."""
        if time.monotonic() < self._store_retry_at:
            return False  # the database failed a moment ago: wait with the others
        try:
            self._store(source, kind, [h.body for h in batch])
        except DATABASE_ERRORS as exc:
            self._database_failed(source, len(batch), exc)
            return False
        with self._cond:
            self._store_failures = 0
            self._store_retry_at = 0.0
        return True

    def _database_failed(self, source: str, events: int, exc: Exception) -> None:
        """Every worker waits out the backoff before its next write: one database."""
        with self._cond:
            self._store_failures += 1
            wait = store_backoff(
                self._store_failures, self.store_backoff_initial, self.store_backoff_max
            )
            self._store_retry_at = time.monotonic() + wait
        log.warning(
            "webhook_store_failed",
            source=source,
            events=events,
            retry_in_s=round(wait, 1),
            error=describe_error(exc),
        )

    def _acknowledge(
        self,
        runtime: SourceRuntime,
        policy: RetryPolicy,
        source: str,
        kind: str,
        batch: list[_Held],
    ) -> None:
        """Step 3: tell the vendor, now that the rows are on disk; keep any newer version."""
        newer: list[Any] = []
        for held in batch:
            if self.stop.is_set():
                return
            token = held.note.ack_token
            if not token:
                held.done = True
                continue
            current = self._get(runtime, policy, source, held.note.resource_id, token)
            if current is None:
                held.attempts += 1
                continue
            held.done = True
            self.metrics.webhook_notifications.labels(source, "acknowledged").inc()
            if current != held.body:
                newer.append(current)
        if newer:
            try:
                self._store(source, kind, newer)
            except Exception as exc:  # its own notification (UPDATE) brings it again
                log.warning(
                    "webhook_update_not_stored",
                    source=source,
                    events=len(newer),
                    error=describe_error(exc),
                )

    def _get(
        self,
        runtime: SourceRuntime,
        policy: RetryPolicy,
        source: str,
        resource_id: int | None,
        ack_token: str | None,
    ) -> Any:
        """The event as the vendor serves it now, or None (404: not visible yet; or failed)."""
        params = {"ack_token": ack_token} if ack_token else {}
        path = f"{EVENTS_PATH}/{resource_id}"
        try:
            _, body = send(
                runtime.client, lambda c: c.get(path, params=params), policy=policy, source=source
            )
        except SourceError as exc:
            log.info(
                "webhook_fetch_retry",
                source=source,
                resource_id=resource_id,
                acknowledging=ack_token is not None,
                error=describe_error(exc),
            )
            return None
        if isinstance(body, dict) and isinstance(body.get("event"), dict):
            body = body["event"]  # an enveloped single event
        return body

    def _store(self, source: str, kind: str, raws: list[Any]) -> None:
        codes = self._codes.get(kind)
        if codes is None:
            codes = self._codes[kind] = self.store.load_codes(kind)
        records: list[EventRecord]
        rejected: list[RejectedRecord]
        records, rejected = normalize_page(raws, codes)
        written = self.store.write_page(source, records, rejected, None, self.clock(), durable=True)
        self.metrics.wrote(source, written.inserted, written.updated)
        self.metrics.events_rejected.labels(source).inc(written.rejected)
        if records:
            self.metrics.observe_newest(source, max(r.occurred_at for r in records))
        log.info(
            "webhook_events_stored",
            source=source,
            rows=len(records),
            inserted=written.inserted,
            updated=written.updated,
            rejected=written.rejected,
        )
