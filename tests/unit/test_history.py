"""History and repair against vendors that behave as the contract allows (issue 21).

Window reads complete in any listing order, counts that add up, rejects
without a readable time, deletions, and a reconciliation never costlier than
a re-read. The vendor is :class:`~tests.unit.doorflow_fake.FakeDoorFlow`
over ``httpx.MockTransport``; the store is the real SQLite store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.backfill import parse_window, run_backfill
from syncd.db import backfills, migrate
from syncd.db.engine import create_engine
from syncd.db.schema import events
from syncd.db.store import Store, WriteResult
from syncd.engine import PassResult, SourceRuntime, build_source, run_pass
from syncd.metrics import Metrics
from syncd.reconcile import ReconcileReport, reconcile
from syncd.records import EventRecord
from syncd.sources.doorflow import DoorFlowSource, Tally, accounted, in_window, window_count
from syncd.webhooks import Notification, WebhookFetcher
from tests.unit.doorflow_fake import T0, FakeDoorFlow, iso
from tests.unit.test_doorflow_pass import CONFIG

DAY = timedelta(days=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'syncd.db'}")
    migrate.upgrade(engine)
    yield Store(engine)
    engine.dispose()


def _runtime(store: Store, fake: FakeDoorFlow, config: Any) -> SourceRuntime:
    client = httpx.Client(base_url=config.base_url, transport=httpx.MockTransport(fake.handler))
    return SourceRuntime(
        config, client, build_source(config, client, store, store.load_state("hq"))
    )


def _sync(store: Store, fake: FakeDoorFlow, now: datetime, config: Any) -> PassResult:
    with _runtime(store, fake, config) as rt:
        return run_pass(store, config, clock=lambda: now, runtime=rt)


def _reconcile(
    store: Store, fake: FakeDoorFlow, config: Any, since: datetime, until: datetime, now: datetime
) -> ReconcileReport:
    fake.requests.clear()
    with _runtime(store, fake, config) as rt:
        return reconcile(store, config, since=since, until=until, runtime=rt, clock=lambda: now)


def _backfill(
    store: Store, fake: FakeDoorFlow, config: Any, since: datetime, until: datetime, **kw: Any
) -> Any:
    fake.requests.clear()
    return run_backfill(
        store,
        config,
        since,
        until,
        parse_window(kw.pop("window", "1d")),
        transport=httpx.MockTransport(fake.handler),
        **kw,
    )


def _history(fake: FakeDoorFlow, days: int, per_hour: int) -> None:
    for hour in range(days * 24):
        for n in range(per_hour):
            fake.add(T0 + timedelta(hours=hour, minutes=n * 60 // per_hour))


def _rows(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        return {r.event_key: r for r in conn.execute(sa.select(events))}


def _present(store: Store) -> set[int]:
    return {int(k) for k, r in _rows(store).items() if r.deleted_at is None}


# -- 1. window reads complete in any listing order -------------------------------------------


def test_backfill_of_an_id_ordered_listing_holds_every_event_of_its_windows(store: Store) -> None:
    fake = FakeDoorFlow(order_by_id=True)
    _history(fake, days=3, per_hour=4)
    late = fake.add(T0 + timedelta(hours=5, minutes=7))  # day 1's, uploaded last: newest id
    config = replace(CONFIG, page_size=10)
    report = _backfill(store, fake, config, T0, T0 + 3 * DAY)
    assert report.complete
    assert late in _present(store)  # the first window used to stop at its first page past day 1
    assert _present(store) == set(fake.events)


def test_reconcile_of_an_id_ordered_listing_loads_the_late_upload_it_finds(store: Store) -> None:
    fake = FakeDoorFlow(order_by_id=True)
    _history(fake, days=10, per_hour=10)
    config = replace(CONFIG, page_size=100, lookback=600)
    now = T0 + 10 * DAY
    assert _sync(store, fake, now, config).ok
    late = fake.add(T0 + timedelta(hours=30, minutes=1))
    report = _reconcile(store, fake, config, T0, now, now + timedelta(minutes=1))
    assert not report.capped  # bisected down to the late upload's span, re-read to the end
    assert late in _present(store)
    assert (report.found, report.late, report.new) == (1, 1, 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    offsets=st.lists(st.integers(0, 3 * 24 * 60), min_size=0, max_size=60),
    arrival=st.randoms(use_true_random=False),
    by_id=st.booleans(),
    page=st.integers(1, 7),
    window=st.tuples(st.integers(0, 3 * 24 * 60), st.integers(1, 2 * 24 * 60)),
)
def test_a_window_read_stops_only_when_its_count_is_accounted_for(
    offsets: list[int], arrival: Any, by_id: bool, page: int, window: tuple[int, int]
) -> None:
    """Whatever the order (ids in random arrival order), a window read yields the whole window."""
    fake = FakeDoorFlow(order_by_id=by_id)
    times = [T0 + timedelta(minutes=m) for m in offsets]
    arrival.shuffle(times)  # ids follow arrival: an id-ordered list is out of time order
    for at in times:
        fake.add(at)
    since = T0 + timedelta(minutes=window[0])
    until = since + timedelta(minutes=window[1])
    config = replace(CONFIG, page_size=page)
    client = httpx.Client(base_url=config.base_url, transport=httpx.MockTransport(fake.handler))
    source = DoorFlowSource(config, client, build_context())
    read: list[str] = []
    last: dict[str, Any] = {}
    for out in source.window_pages(since, until, {}, T0 + 10 * DAY):
        assert all(since <= r.occurred_at < until for r in out.records)
        read += [r.event_key for r in out.records]
        last = out.cursor
    assert last == {"done": True}
    wanted = {str(e["id"]) for e in fake.listed(since, until)}
    assert set(read) == wanted


def build_context() -> Any:
    from syncd.sources.base import SourceContext

    return SourceContext()


def _record(key: str, at: datetime) -> EventRecord:
    return EventRecord(key, "doorflow", at, 10, "access_granted", None, b"{}")


def test_the_tally_counts_a_row_served_twice_at_a_page_edge_once() -> None:
    since, until = T0, T0 + DAY
    first, second = _record("1", T0), _record("2", T0 + timedelta(hours=1))
    tally, inside, _ = in_window(Tally(), [first, second], [], since, until)
    assert tally.seen == 2
    tally, inside, _ = in_window(tally, [second, _record("3", until)], [], since, until)
    assert tally.seen == 2  # "2" again (the list shifted), "3" outside
    assert [r.event_key for r in inside] == ["2"]
    assert not accounted(tally, window_count("array", 10, 7))  # 3 in the window, 2 read
    assert accounted(Tally(3), window_count("array", 10, 7))
    assert window_count("object", 3, None) == 3  # the guide's total honours until_utc
    assert window_count("array", 10, None) is None  # no count: read to the end


# -- 4. rejects without a readable time, and the cost cap -------------------------------------


def test_a_clean_history_with_timeless_rejects_compares_equal_in_two_requests(
    store: Store,
) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=10, per_hour=20)
    for n in range(12):  # records whose time cannot be read, spread over the history
        bad = fake.add_malformed(None)
        fake.events[bad]["_sort_at"] = iso(T0 + timedelta(hours=17 * n + 3, minutes=30))
    config = replace(CONFIG, page_size=500)
    now = T0 + 10 * DAY
    assert _sync(store, fake, now, config).ok
    report = _reconcile(store, fake, config, T0, now, now + timedelta(minutes=1))
    assert report.found == 0
    assert report.requests == len(fake.requests) == 2, report  # was a bisection down to each


def test_reconcile_never_costs_more_than_re_reading_the_span(store: Store) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=10, per_hour=20)  # 4,800 events: a re-read is 10 pages of 500
    config = replace(CONFIG, page_size=500)
    now = T0 + 10 * DAY
    assert _sync(store, fake, now, config).ok
    late = [fake.add(T0 + timedelta(hours=7 * n + 1, minutes=13)) for n in range(34)]
    report = _reconcile(store, fake, config, T0, now, now + timedelta(minutes=1))
    assert set(late) <= _present(store)
    reread = 2 + -(-len(fake.listed(T0)) // 500)  # the count that decides, and the pages
    assert report.requests <= reread, report
    assert report.late == 34


# -- 5. late uploads and new events ----------------------------------------------------------


def test_reconcile_tells_late_uploads_from_events_new_since_the_last_pass(store: Store) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=2, per_hour=10)
    config = replace(CONFIG, page_size=100, lookback=900)
    now = T0 + 2 * DAY
    assert _sync(store, fake, now, config).ok
    fake.add(now + timedelta(seconds=30))  # after the pass: the next pass reads it
    fake.add(now - timedelta(hours=20))  # an offline controller, far beyond the lookback
    report = _reconcile(store, fake, config, T0, now + timedelta(minutes=1), now)
    assert (report.found, report.late, report.new) == (2, 1, 1)
    assert "1 missing event found (late uploads), 1 new since the last pass" in report.summary()
    assert report.to_json()["late_uploads"] == 1
    assert report.to_json()["new_since_last_pass"] == 1


def test_a_scheduled_reconciliation_is_counted_in_events_written() -> None:
    metrics = Metrics()
    metrics.add_source("hq", "doorflow")
    found = ReconcileReport("hq", T0, T0, written=WriteResult(inserted=3, updated=1))
    metrics.pass_finished(
        PassResult(
            "hq", ok=True, written=WriteResult(inserted=2), kind="doorflow", reconciled=found
        ),
        0,
        T0,
    )
    inserted = metrics.registry.get_sample_value(
        "syncd_events_written_total", {"source": "hq", "result": "inserted"}
    )
    updated = metrics.registry.get_sample_value(
        "syncd_events_written_total", {"source": "hq", "result": "updated"}
    )
    assert (inserted, updated) == (5, 1)


# -- 5. backfill counts ----------------------------------------------------------------------


def test_backfill_counts_add_up_and_count_only_the_windows(store: Store) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=4, per_hour=12)
    for n in range(5):
        fake.add_malformed(T0 + timedelta(hours=10 * n + 2))
    config = replace(CONFIG, page_size=7)  # many pages per commit unit
    since, until = T0 + timedelta(hours=6), T0 + 3 * DAY
    report = _backfill(store, fake, config, since, until, window="12h")
    w = report.written
    truth = len(fake.listed(since, until))
    assert report.events == w.inserted + w.updated + w.unchanged + w.rejected == truth
    rows = backfills.windows_of(store, "hq", since, until)
    assert sum(r.events for r in rows) == truth
    for row in rows:
        assert row.events == len(fake.listed(row.start, row.end))
    assert all(since <= r.occurred_at < until for r in _rows(store).values())


def test_an_empty_window_costs_one_request(store: Store) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=1, per_hour=10)
    config = replace(CONFIG, page_size=1000)
    since = T0 + 2 * DAY  # five days the vendor has nothing for
    report = _backfill(store, fake, config, since, since + 5 * DAY)
    assert report.complete
    assert len(fake.requests) == 6  # the six bounds' counts, shared by neighbours
    assert all(r.url.params["n"] == "1" for r in fake.requests)


# -- 3. deletions ----------------------------------------------------------------------------


def test_a_complete_re_read_marks_what_the_vendor_deleted_and_unmarks_it_when_listed_again(
    store: Store,
) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=2, per_hour=10)
    config = replace(CONFIG, page_size=100)
    now = T0 + 2 * DAY
    assert _sync(store, fake, now, config).ok
    remote = _record("999999", T0 + timedelta(hours=3))._replace(event_code=52)
    store.write_page("hq", [remote], [], None, now)  # webhook-only: no listing returns it
    gone = next(iter(fake.events))
    kept = fake.events.pop(gone)
    later = now + timedelta(minutes=5)
    report = _reconcile(store, fake, config, T0, now, later)
    assert report.deleted == 1
    rows = _rows(store)
    assert rows[str(gone)].deleted_at is not None  # the row stays
    assert rows["999999"].deleted_at is None
    assert store.count_span("hq", T0, now, frozenset(range(300))) == len(fake.events) + 1
    again = _reconcile(store, fake, config, T0, now, later + timedelta(minutes=1))
    assert again.requests == 2  # equal now: the deleted row counts nowhere
    fake.events[gone] = kept  # listed again
    _reconcile(store, fake, config, T0, now, later + timedelta(minutes=2))
    assert _rows(store)[str(gone)].deleted_at is None


def test_a_deleted_event_no_longer_hides_a_missing_late_upload(store: Store) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=2, per_hour=10)
    config = replace(CONFIG, page_size=100)
    now = T0 + 2 * DAY
    assert _sync(store, fake, now, config).ok
    gone = sorted(fake.events)[30]
    del fake.events[gone]
    late = fake.add(T0 + timedelta(hours=4))  # same span: the counts would be equal
    metrics = Metrics()
    fetcher = WebhookFetcher(
        store,
        lambda _: pytest.fail("a DESTROY is not fetched"),
        {"hq": config},
        metrics,
        lambda _: pytest.fail("no retries"),
        stop=threading.Event(),
        clock=lambda: now,
    )
    fetcher.submit("hq", [Notification("DESTROY", "Event", gone, "tok")])
    deadline = time.monotonic() + 10  # marked off the request's thread
    while _rows(store)[str(gone)].deleted_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _rows(store)[str(gone)].deleted_at is not None
    report = _reconcile(store, fake, config, T0, now, now + timedelta(minutes=1))
    assert late in _present(store)
    assert report.late == 1


def test_status_shows_unfinished_backfills_and_the_last_finished_one_per_source(
    store: Store,
) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=3, per_hour=2)
    config = replace(CONFIG, page_size=100)
    for day in range(3):
        assert _backfill(store, fake, config, T0 + day * DAY, T0 + (day + 1) * DAY).complete
    stop = threading.Event()
    stop.set()
    _backfill(store, fake, config, T0, T0 + 4 * DAY, window="6h", stop=stop)  # day 4 is new
    shown = backfills.summaries(store)
    assert [(s.since, s.done) for s in shown] == [(T0, False), (T0 + 2 * DAY, True)]


def test_a_reject_placed_across_a_split_never_masks_a_missing_event(store: Store) -> None:
    fake = FakeDoorFlow()
    _history(fake, days=10, per_hour=10)  # an event every 6 minutes
    middle = T0 + 5 * DAY  # where bisection of [T0, T0 + 10 d) splits first
    # The reject sits inside a page of the pass, between events at middle - 6m and middle + 6m.
    for at in (T0, T0 + timedelta(minutes=6), middle):
        del fake.events[next(i for i, e in fake.events.items() if e["created_at"] == iso(at))]
    bad = fake.add_malformed(None)
    fake.events[bad]["_sort_at"] = iso(middle + timedelta(seconds=1))  # true time: upper half
    config = replace(CONFIG, page_size=100)
    now = T0 + 10 * DAY
    assert _sync(store, fake, now, config).ok  # placed at its neighbour's time: lower half
    late = fake.add(T0 + 2 * DAY + timedelta(seconds=30))  # missing, in the lower half
    with store.engine.connect() as conn:
        placed = conn.execute(sa.text("SELECT placed_at FROM rejected_events")).scalars().all()
    assert [p[:19] for p in placed] == [str(middle - timedelta(minutes=6))[:19]]
    report = _reconcile(store, fake, config, T0, now, now + timedelta(minutes=1))
    assert not report.capped
    assert late in _present(store)  # the reject's +1 in the lower half no longer cancels it
