"""DoorFlow webhooks: verify, answer, then fetch the notified events in the background.

The contract (DESIGN.md "Webhooks"): the signature is checked before the body
is parsed (hex HMAC-SHA256 over ``"{Timestamp}.{raw body}"``, constant-time
compare), the timestamp must be within :data:`TOLERANCE_S` of now either
way, and nothing the sender controls can cause a 5xx. Notifications carry
no event data: each ``Event`` ``CREATE``/``UPDATE`` is fetched from the
source's *configured* base URL (only the integer id comes from the payload)
with its ``ack_token``, through the source's runtime client (same auth,
retries and interruptible waits as polling), normalized like a polled page
and written with no cursor (the live cursor is untouched). An event not
visible yet, or a fetch that fails, is retried a few times, then left to the
next poll.

:func:`answer` is pure (headers, body and ``now`` in, status and body out);
:class:`WebhookFetcher` is the I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from syncd.config import SourceConfig
from syncd.db.store import Store
from syncd.engine import SourceRuntime, describe_error, utcnow
from syncd.errors import SourceError
from syncd.metrics import Metrics
from syncd.records import EventRecord, RejectedRecord
from syncd.sources.base import CodeInfo
from syncd.sources.doorflow import EVENTS_PATH, normalize_page
from syncd.sources.http import RetryHooks, RetryPolicy, send

log = structlog.get_logger(__name__)

MAX_BODY = 1024 * 1024
TOLERANCE_S = 300.0
FETCHED_ACTIONS = frozenset({"CREATE", "UPDATE"})
# Waits between rounds of fetching what is not visible yet (seconds).
REFETCH_DELAYS = (0.2, 0.5, 1.0, 2.0)


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


class WebhookFetcher:
    """Fetches and stores notified events on a small thread pool of its own.

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
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.configs = configs
        self.metrics = metrics
        self.hooks = hooks
        self.stop = stop
        self.clock = clock
        self.delays = tuple(delays)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="syncd-webhook")
        self._codes: dict[str, Mapping[int, CodeInfo]] = {}

    def submit(self, source: str, notifications: Sequence[Notification]) -> None:
        fetch = [n for n in notifications if n.fetchable]
        destroyed = [n for n in notifications if n.destroys_event]
        if destroyed and not self.stop.is_set():
            self._pool.submit(self._mark_deleted, source, destroyed)
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
            self._pool.submit(self._work, source, fetch)

    def close(self) -> None:
        """Stop taking work; what is in flight ends at its next wait (``stop`` is set)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

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

    def _work(self, source: str, notes: list[Notification]) -> None:
        try:
            self._fetch_all(source, notes)
        except Exception as exc:  # a worker never dies; the next poll catches up
            log.warning("webhook_fetch_failed", source=source, error=describe_error(exc))

    def _fetch_all(self, source: str, notes: list[Notification]) -> None:
        config = self.configs[source]
        runtime = self.runtime(source)
        policy = replace(RetryPolicy.for_source(config), hooks=self.hooks(source))
        pending = notes
        for delay in (*self.delays, None):
            raws: list[Any] = []
            missed: list[Notification] = []
            for note in pending:
                raw = self._fetch_one(runtime, policy, source, note)
                if raw is None:
                    missed.append(note)
                else:
                    raws.append(raw)
            if raws:
                self._store(source, config.kind, raws)
            pending = missed
            if not pending or self.stop.is_set():
                break
            if delay is None or self.stop.wait(delay):
                break
        if pending:
            self.metrics.webhook_notifications.labels(source, "abandoned").inc(len(pending))
            log.info("webhook_fetch_abandoned", source=source, events=len(pending))

    def _fetch_one(
        self, runtime: SourceRuntime, policy: RetryPolicy, source: str, note: Notification
    ) -> Any:
        params = {"ack_token": note.ack_token} if note.ack_token else {}
        path = f"{EVENTS_PATH}/{note.resource_id}"
        try:
            _, body = send(
                runtime.client, lambda c: c.get(path, params=params), policy=policy, source=source
            )
        except SourceError as exc:
            # 404: not visible yet; anything else: retried in the next round.
            log.info(
                "webhook_fetch_retry",
                source=source,
                resource_id=note.resource_id,
                error=describe_error(exc),
            )
            return None
        if isinstance(body, dict) and isinstance(body.get("event"), dict):
            body = body["event"]  # an enveloped single event
        self.metrics.webhook_notifications.labels(source, "fetched").inc()
        return body

    def _store(self, source: str, kind: str, raws: list[Any]) -> None:
        codes = self._codes.get(kind)
        if codes is None:
            codes = self._codes[kind] = self.store.load_codes(kind)
        records: list[EventRecord]
        rejected: list[RejectedRecord]
        records, rejected = normalize_page(raws, codes)
        written = self.store.write_page(source, records, rejected, None, self.clock())
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
