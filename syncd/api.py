"""``GET /``, ``GET /api/v1/sources`` and ``GET /api/v1/sources/{source}``.

The page and the API answer from the same :func:`~syncd.db.overview.load_overview`
(six queries whatever the number of sources). The JSON has exactly the fields
of the contract (DESIGN.md, "Daemon"): nothing from a cursor, a token or a
payload. A database that does not answer is a 503 with the reason, like
``/readyz``; an unknown source a 404.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
import sqlalchemy as sa
import structlog

from syncd.db.overview import BackfillProgress, Overview, SourceOverview
from syncd.status_page import render

log = structlog.get_logger(__name__)

StartResponse = Callable[..., Any]
LoadOverview = Callable[[], Overview]
SOURCES_PATH = "/api/v1/sources"
# The page needs nothing but itself: no script, no external asset.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def backfill_json(load: BackfillProgress) -> dict[str, Any]:
    return {
        "since": _iso(load.since),
        "until": _iso(load.until),
        "windows_done": load.windows_done,
        "windows_total": load.windows_total,
        "events": load.events,
    }


def source_json(s: SourceOverview) -> dict[str, Any]:
    """One source, with exactly the contract's fields."""
    return {
        "source": s.source,
        "kind": s.kind,
        "state": s.state,
        "paused_reason": s.paused_reason,
        "last_success_at": _iso(s.last_success_at),
        "last_error": s.last_error,
        "last_error_at": _iso(s.last_error_at),
        "consecutive_failures": s.consecutive_failures,
        "newest_event_at": _iso(s.newest_event_at),
        "events": s.events,
        "rejected": s.rejected,
        "events_last_24h": list(s.events_last_24h),
        "backfills": [backfill_json(b) for b in s.backfills],
    }


def _answer(
    start: StartResponse, status: str, body: bytes, content_type: str, *extra: tuple[str, str]
) -> list[bytes]:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        *extra,
    ]
    start(status, headers)
    return [body]


def _json(start: StartResponse, status: str, document: Any) -> list[bytes]:
    return _answer(start, status, orjson.dumps(document), "application/json")


def _loaded(load: LoadOverview) -> Overview | str:
    """The overview, or why the database did not give it (one line)."""
    try:
        return load()
    except sa.exc.SQLAlchemyError as exc:
        from syncd.db.engine import first_line

        reason = f"database unavailable: {first_line(exc)}"
        log.warning("status_not_loaded", error=reason)
        return reason


class StatusRoutes:
    """The three GET routes, for :class:`syncd.web.App`."""

    def __init__(self, load: LoadOverview) -> None:
        self.load = load

    def page(self, _environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        overview = _loaded(self.load)
        csp = ("Content-Security-Policy", PAGE_CSP)
        if isinstance(overview, str):
            body = (
                '<!doctype html><html lang="en"><head><meta charset="utf-8">'
                "<title>syncd status</title></head><body><h1>syncd status</h1>"
                f"<p>{_escape(overview)}</p></body></html>"
            ).encode()
            return _answer(start, "503 Service Unavailable", body, "text/html; charset=utf-8", csp)
        return _answer(start, "200 OK", render(overview).encode(), "text/html; charset=utf-8", csp)

    def sources(self, _environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        overview = _loaded(self.load)
        if isinstance(overview, str):
            return _json(
                start, "503 Service Unavailable", {"error": "unavailable", "reason": overview}
            )
        return _json(start, "200 OK", {"sources": [source_json(s) for s in overview.sources]})

    def source(self, name: str, start: StartResponse) -> Iterable[bytes]:
        overview = _loaded(self.load)
        if isinstance(overview, str):
            return _json(
                start, "503 Service Unavailable", {"error": "unavailable", "reason": overview}
            )
        found = overview.find(name)
        if found is None:
            return _json(start, "404 Not Found", {"error": "unknown_source"})
        return _json(start, "200 OK", source_json(found))


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)
