"""The status overview (``GET /``, ``/api/v1/sources``) on real databases.

The query: right counts per hour at the edges of the 24 hours, backfills in
progress only, every state; the 24-hour range served by the ``occurred_at``
index on PostgreSQL and SQLite; 1,000 sources answered over real HTTP within
a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import sqlalchemy as sa

from syncd.api import StatusRoutes
from syncd.db import pauses
from syncd.db.overview import hourly_query, load_overview
from syncd.db.schema import backfill_windows, sources, sync_state
from syncd.db.store import Store
from syncd.metrics import Metrics
from syncd.web import App, Routes, make_server
from tests.factories import event
from tests.integration.daemonhelpers import free_port, http

NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
CONTRACT_FIELDS = {
    "source",
    "kind",
    "state",
    "paused_reason",
    "last_success_at",
    "last_error",
    "last_error_at",
    "consecutive_failures",
    "newest_event_at",
    "events",
    "rejected",
    "events_last_24h",
    "backfills",
}


def _seed(store: Store) -> None:
    hour = NOW.replace(minute=0)
    records = [
        event(1, occurred_at=hour - timedelta(hours=23)),  # first bucket, its first instant
        event(2, occurred_at=hour - timedelta(hours=23, microseconds=1)),  # just before: out
        event(3, occurred_at=hour + timedelta(minutes=29)),  # current hour
        event(4, occurred_at=hour + timedelta(minutes=5)),
        event(5, occurred_at=hour - timedelta(hours=5, minutes=-59, seconds=-59)),
    ]
    store.write_page("hq", records, [], {"watermark": "x"}, NOW)
    store.record_success("hq", NOW - timedelta(minutes=2))
    store.write_page("branch", [event(9, occurred_at=NOW - timedelta(days=3))], [], None, NOW)
    store.record_failure("branch", "AuthError: <script>alert(1)</script>", NOW)
    pauses.pause(store, "quiet", reason="vendor asked", by="ops@box", now=NOW)
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(sources),
            [
                {
                    "source": "fresh",
                    "kind": "intserv",
                    "timezone": "UTC",
                    "business_hours_start": datetime(2000, 1, 1, 6).time(),
                    "business_hours_end": datetime(2000, 1, 1, 21).time(),
                    "updated_at": NOW,
                }
            ],
        )
        since, until = NOW - timedelta(days=10), NOW - timedelta(days=5)
        rows = []
        for i in range(5):
            rows.append(
                {
                    "source": "hq",
                    "since": since,
                    "until": until,
                    "window_start": since + timedelta(days=i),
                    "window_end": since + timedelta(days=i + 1),
                    "position": {},
                    "events": 10 * i,
                    "created_at": NOW,
                    "updated_at": NOW,
                    "done_at": NOW if i < 2 else None,
                }
            )
        # A finished backfill is not "in progress".
        rows.append({**rows[0], "since": since - timedelta(days=1), "done_at": NOW})
        conn.execute(sa.insert(backfill_windows), rows)


def test_the_overview_of_every_source(store: Store) -> None:
    _seed(store)
    overview = load_overview(store.engine, NOW, {"hq": "doorflow", "quiet": "doorflow"})
    by_name = {s.source: s for s in overview.sources}
    assert list(by_name) == ["branch", "fresh", "hq", "quiet"]
    assert {n: s.state for n, s in by_name.items()} == {
        "branch": "failing",
        "fresh": "never_run",
        "hq": "ok",
        "quiet": "paused",
    }
    hq = by_name["hq"]
    assert hq.kind == "doorflow"
    assert by_name["fresh"].kind == "intserv"  # from the sources table
    assert hq.events == 5
    assert len(hq.events_last_24h) == 24
    assert hq.events_last_24h[0] == 1
    assert hq.events_last_24h[-1] == 2
    assert hq.events_last_24h[18] == 1  # 04:59:59 before the current hour
    assert sum(hq.events_last_24h) == 4
    assert overview.hours[0] == NOW.replace(minute=0) - timedelta(hours=23)
    (load,) = hq.backfills
    assert (load.windows_done, load.windows_total, load.events) == (2, 5, 100)
    assert by_name["quiet"].paused_reason == "vendor asked"
    assert by_name["branch"].consecutive_failures == 1
    assert sum(by_name["branch"].events_last_24h) == 0


def test_the_24_hour_counts_use_the_occurred_at_index(store: Store) -> None:
    _seed(store)
    query = hourly_query(store.engine.dialect.name, NOW - timedelta(hours=24), NOW)
    compiled = query.compile(dialect=store.engine.dialect)
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            # Tiny tables make a sequential scan cheapest: forbid it to see
            # whether an index can serve the range at all.
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).all()
        else:
            naive = [
                v.replace(tzinfo=None) if isinstance(v, datetime) else v
                for v in (compiled.params[k] for k in compiled.positiontup or ())
            ]
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(naive)).all()
    plan = "\n".join(str(row[-1]) for row in rows)
    # Any index path will do (the BRIN on occurred_at, a b-tree leading with
    # it, or one on (source, ..., occurred_at)): never a scan of the whole table.
    assert "Seq Scan" not in plan, plan
    assert "SCAN events" not in plan.replace("USING", ""), plan
    assert "ix_events_" in plan, plan


def _serve(engine: sa.Engine, now: datetime | None = None) -> Iterator[str]:
    routes = Routes(
        healthy=lambda: True,
        not_ready=lambda: None,
        webhook_secret=lambda _name: None,
        is_source=lambda _name: False,
        on_webhook=lambda _name, _answer: None,
        metrics=Metrics(),
        status=StatusRoutes(lambda: load_overview(engine, now or datetime.now(UTC))),
    )
    port = free_port()
    server = make_server(App(routes), "127.0.0.1", port)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(timeout=5)


@pytest.fixture
def served(store: Store) -> Iterator[str]:
    _seed(store)
    yield from _serve(store.engine, NOW)


def test_the_api_has_exactly_the_contract_fields(served: str) -> None:
    status, body = http(served + "/api/v1/sources")
    assert status == 200
    document = orjson.loads(body)
    assert list(document) == ["sources"]
    for row in document["sources"]:
        assert set(row) == CONTRACT_FIELDS
    status, body = http(served + "/api/v1/sources/hq")
    assert status == 200
    hq = orjson.loads(body)
    assert hq["state"] == "ok"
    assert hq["events"] == 5
    assert hq["last_success_at"] == "2026-12-07T12:28:00Z"
    assert hq["backfills"] == [
        {
            "since": "2026-11-27T12:30:00Z",
            "until": "2026-12-02T12:30:00Z",
            "windows_done": 2,
            "windows_total": 5,
            "events": 100,
        }
    ]
    quiet = orjson.loads(http(served + "/api/v1/sources/quiet")[1])
    assert (quiet["state"], quiet["paused_reason"]) == ("paused", "vendor asked")
    status, body = http(served + "/api/v1/sources/nowhere")
    assert status == 404
    assert orjson.loads(body) == {"error": "unknown_source"}
    assert http(served + "/api/v1/sources/hq", method="POST")[0] == 405


def test_the_page_escapes_what_the_database_holds(served: str) -> None:
    response = httpx_get(served + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]
    page = response.text
    assert "<script" not in page
    assert "AuthError: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    for name in ("hq", "branch", "quiet", "fresh"):
        assert f'id="source-{name}"' in page
    assert page.count("<svg") == 4
    assert "40%" in page  # the backfill's share done


def httpx_get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5)


def test_the_database_down_is_a_503_not_a_hang() -> None:
    engine = sa.create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:9/none", connect_args={"connect_timeout": 2}
    )
    for url in _serve(engine):
        started = time.monotonic()
        status, body = http(url + "/api/v1/sources")
        assert status == 503
        assert b"database unavailable" in body
        assert http(url + "/")[0] == 503
        assert time.monotonic() - started < 6


def test_a_thousand_sources_within_a_second(pg_engine: sa.Engine) -> None:
    store = Store(pg_engine)
    now = datetime.now(UTC)
    names = [f"site{i:04d}" for i in range(1000)]
    with pg_engine.begin() as conn:
        conn.execute(
            sa.insert(sync_state),
            [
                {
                    "source": name,
                    "cursor": {"watermark": "2026-12-07T00:00:00Z"},
                    "last_success_at": now - timedelta(seconds=i % 120),
                    "consecutive_failures": 1 if i % 10 == 0 else 0,
                    "last_error": "TransientError: HTTP 503" if i % 10 == 0 else None,
                    "last_error_at": now if i % 10 == 0 else None,
                    "paused_at": now if i % 50 == 0 else None,
                    "updated_at": now,
                }
                for i, name in enumerate(names)
            ],
        )
    # 20 events per source in the last day: 20,000 rows for the counts to scan.
    for chunk in range(0, 1000, 100):
        for name in names[chunk : chunk + 100]:
            records = [event(k, occurred_at=now - timedelta(minutes=70 * k)) for k in range(20)]
            store.write_page(name, records, [], None, now)
    for url in _serve(pg_engine):
        http(url + "/api/v1/sources")  # warm: connection pool, imports
        timings = []
        for path in ("/api/v1/sources", "/", "/api/v1/sources/site0500"):
            started = time.perf_counter()
            status, _body = http(url + path)
            timings.append((path, time.perf_counter() - started))
            assert status == 200
        document = orjson.loads(http(url + "/api/v1/sources")[1])
        assert len(document["sources"]) == 1000
        assert sum(document["sources"][1]["events_last_24h"]) == 20
        print("\n1,000 sources (busy machine):", ", ".join(f"{p} {t:.3f}s" for p, t in timings))
        for path, seconds in timings:
            assert seconds < 1.0, (path, seconds)


def test_events_the_vendor_deleted_are_not_counted(store: Store) -> None:
    """Like `syncd status` and the BI views: a row with deleted_at set is not an event."""
    _seed(store)
    store.mark_deleted("hq", ["3"], NOW)  # in the current hour
    overview = load_overview(store.engine, NOW, {"hq": "doorflow"})
    hq = next(s for s in overview.sources if s.source == "hq")
    assert hq.events == 4
    assert hq.events_last_24h[-1] == 1
