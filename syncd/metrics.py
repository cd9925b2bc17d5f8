"""The daemon's Prometheus metrics: the contract names (DESIGN.md), one registry.

Every series a configured source has is created at 0 when the source is
added, so a dashboard never shows a gap and ``rate()`` works from the first
scrape. The series count stays bounded: labels are config source names, a
fixed set of results and reasons, and HTTP status codes (a bounded set);
a webhook to an unknown source is counted under ``UNKNOWN_SOURCE``, never
under the name in its path. ``*_created`` series are off (they would double
the count and say nothing a restart time does not).

The registry is prometheus_client's (thread-safe); :meth:`Metrics.wsgi_app`
is its exposition app, mounted at ``/metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime

import httpx
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from syncd.engine import PassResult
from syncd.sources.http import RETRY_REASONS

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# Not a valid source name ([a-z0-9_-]+), so it can never collide with one.
UNKNOWN_SOURCE = "(unknown)"

PASS_RESULTS = ("ok", "failed", "skipped")
WRITE_RESULTS = ("inserted", "updated")
RETRY_REASON_LABELS = tuple(reason for _, reason in RETRY_REASONS)
# Seconds: quiet passes take milliseconds, a first sync of a large account hours.
PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """The metric objects, and one method per thing that happened."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._newest: dict[str, float] = {}
        self._newest_guard = threading.Lock()
        r = self.registry
        self.events_written = Counter(
            "syncd_events_written", "Events written.", ["source", "result"], registry=r
        )
        self.events_rejected = Counter(
            "syncd_events_rejected", "Vendor records rejected as malformed.", ["source"], registry=r
        )
        self.passes = Counter(
            "syncd_passes", "Passes run, by outcome.", ["source", "result"], registry=r
        )
        self.pass_duration = Histogram(
            "syncd_pass_duration_seconds",
            "Duration of passes that ran (not skipped).",
            ["kind"],
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.vendor_requests = Counter(
            "syncd_vendor_requests",
            "Vendor HTTP requests by answer (HTTP code, or error).",
            ["source", "status"],
            registry=r,
        )
        self.retries = Counter(
            "syncd_retries", "Vendor requests retried, by reason.", ["source", "reason"], registry=r
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "Unix time of the source's last successful pass.",
            ["source"],
            registry=r,
        )
        self.newest_event = Gauge(
            "syncd_newest_event_timestamp_seconds",
            "Unix time of the newest occurred_at stored for the source.",
            ["source"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "syncd_consecutive_failures",
            "Failed passes in a row (0 after a success).",
            ["source"],
            registry=r,
        )
        self.source_paused = Gauge(
            "syncd_source_paused",
            "1 while the source is paused (syncd pause), else 0; as this process last saw it.",
            ["source"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "syncd_webhook_requests",
            "Webhook requests by HTTP status answered.",
            ["source", "status"],
            registry=r,
        )
        self.webhook_dropped = Counter(
            "syncd_webhook_dropped",
            "Webhook notifications not taken because the fetch queue was full "
            "(left unacknowledged: the vendor's redelivery and the next poll bring them).",
            ["source"],
            registry=r,
        )
        self.webhook_queued = Gauge(
            "syncd_webhook_queued",
            "Webhook notifications in hand: to fetch, waiting for the database, or to acknowledge.",
            registry=r,
        )
        # Beyond the contract (created when first used, so not part of the
        # per-source baseline):
        self.passes_cancelled = Counter(
            "syncd_passes_cancelled",
            "Passes stopped for running past max_pass_duration.",
            ["source"],
            registry=r,
        )
        self.webhook_notifications = Counter(
            "syncd_webhook_notifications",
            "Webhook notifications by outcome (fetched, acknowledged, already_queued, deleted, "
            "ignored, not_an_event_change, abandoned, unacknowledged, paused).",
            ["source", "outcome"],
            registry=r,
        )

    def add_source(self, name: str, kind: str, webhooks: bool = False) -> None:
        """Create every series of a configured source at 0."""
        for result in WRITE_RESULTS:
            self.events_written.labels(name, result)
        self.events_rejected.labels(name)
        for result in PASS_RESULTS:
            self.passes.labels(name, result)
        self.vendor_requests.labels(name, "200")
        for reason in RETRY_REASON_LABELS:
            self.retries.labels(name, reason)
        self.last_success.labels(name)
        self.newest_event.labels(name)
        self.consecutive_failures.labels(name)
        self.source_paused.labels(name)
        if webhooks:
            self.webhook_requests.labels(name, "200")
            self.webhook_dropped.labels(name)
        self.pass_duration.labels(kind)

    # -- what happened ---------------------------------------------------------------

    def pass_finished(self, result: PassResult, failures: int, now: datetime) -> None:
        source = result.source
        outcome = "skipped" if result.skipped else "ok" if result.ok else "failed"
        self.passes.labels(source, outcome).inc()
        self.consecutive_failures.labels(source).set(failures)
        # Every pass reads the pause first (engine.run_pass): each result says it.
        self.source_paused.labels(source).set(1 if result.paused else 0)
        if result.skipped:
            return
        self.pass_duration.labels(result.kind).observe(result.duration_s)
        self.wrote(source, result.written.inserted, result.written.updated)
        self.events_rejected.labels(source).inc(result.written.rejected)
        if result.reconciled is not None:  # the pass's scheduled reconciliation wrote too
            done = result.reconciled.written
            self.wrote(source, done.inserted, done.updated)
            self.events_rejected.labels(source).inc(done.rejected)
        if result.ok:
            self.last_success.labels(source).set(now.timestamp())

    def wrote(self, source: str, inserted: int, updated: int) -> None:
        self.events_written.labels(source, "inserted").inc(inserted)
        self.events_written.labels(source, "updated").inc(updated)

    def retried(self, source: str, reason: str) -> None:
        self.retries.labels(source, reason).inc()

    def vendor_answered(self, source: str, status: str) -> None:
        self.vendor_requests.labels(source, status).inc()

    def webhook_answered(self, source: str, status: int) -> None:
        self.webhook_requests.labels(source, str(status)).inc()

    def observe_newest(self, source: str, newest: datetime | None) -> None:
        """Raise the newest-event gauge to ``newest`` (it never goes back)."""
        if newest is None:
            return
        stamp = newest.timestamp()
        with self._newest_guard:
            if stamp > self._newest.get(source, 0.0):
                self._newest[source] = stamp
                self.newest_event.labels(source).set(stamp)

    def set_state(self, source: str, last_success: datetime | None, failures: int) -> None:
        """Start-up values from ``sync_state`` (what earlier processes achieved)."""
        if last_success is not None:
            self.last_success.labels(source).set(last_success.timestamp())
        self.consecutive_failures.labels(source).set(failures)

    def set_paused(self, source: str, paused: bool) -> None:
        self.source_paused.labels(source).set(1 if paused else 0)

    def wsgi_app(self) -> Callable[..., Iterable[bytes]]:
        app: Callable[..., Iterable[bytes]] = prometheus_client.make_wsgi_app(self.registry)
        return app


class CountingTransport(httpx.BaseTransport):
    """Counts every vendor answer by status (``error`` when none came back).

    Wraps the real transport instead of using response hooks so that
    requests that never got an answer (timeouts, refused connections) are
    counted too.
    """

    def __init__(self, inner: httpx.BaseTransport, count: Callable[[str], None]) -> None:
        self.inner = inner
        self.count = count

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError:
            self.count("error")
            raise
        self.count(str(response.status_code))
        return response

    def close(self) -> None:
        self.inner.close()
