"""DoorFlow whole passes through the real engine loop and the real store rules.

The store is syncd's own :class:`~syncd.db.store.Store` on a SQLite file
(migrated once per module, emptied per example), so the upsert, the
rejected-record and the counting rules under test are the ones production
runs, not a re-implementation. The vendor is :class:`FakeDoorFlow` behind
``httpx.MockTransport``.

The central property checks the pass contract after **every** pass that
exits 0, not only at the end: every event the vendor listed when that pass
began, from the watermark minus the lookback, is stored (no older than it
was then) or rejected; and a pass that resumed an interrupted listing also
holds every event listed when that listing began, from its ``since`` —
whatever crashes, arrivals during the pass, ties, flavor switches, caps,
oversized pages and lying totals came before. (An event uploaded later than
the lookback is reconciliation's, checked at the end.)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.config import Secret, SourceConfig
from syncd.db import migrate
from syncd.db.engine import create_engine
from syncd.db.schema import events, rejected_events
from syncd.db.store import Store
from syncd.engine import (
    LiveCursor,
    NoCursor,
    PassResult,
    SourceRuntime,
    build_source,
    drive,
    run_pass,
)
from syncd.reconcile import reconcile
from syncd.sources.doorflow import LISTABLE_EVENT_CODES
from tests.unit.doorflow_fake import T0, FakeDoorFlow, iso

EXAMPLES = int(os.environ.get("SYNCD_PASS_EXAMPLES", "60"))
CONFIG = SourceConfig(
    name="hq",
    kind="doorflow",
    base_url="http://doorflow.test",
    token=Secret("t0ken"),
    start=T0,
    lookback=600,
    page_size=4,
    reconcile_days=30,
    reconcile_every=10**9,  # reconciliation only where a test asks for it
    max_retries=1,
)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("pass") / "syncd.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    yield Store(engine)
    engine.dispose()


def empty(store: Store) -> Store:
    with store.engine.begin() as conn:
        for table in ("events", "rejected_events", "sync_state"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    return store


def runtime(store: Store, fake: FakeDoorFlow, config: SourceConfig) -> SourceRuntime:
    client = httpx.Client(base_url=config.base_url, transport=httpx.MockTransport(fake.handler))
    return SourceRuntime(
        config, client, build_source(config, client, store, store.load_state("hq"))
    )


def sync(
    store: Store,
    fake: FakeDoorFlow,
    now: datetime,
    config: SourceConfig = CONFIG,
    crash_after: int | None = None,
) -> PassResult | None:
    """One pass; ``crash_after`` k: the process dies right after its k-th commit."""
    with runtime(store, fake, config) as rt:
        if crash_after is None:
            return run_pass(store, config, clock=lambda: now, runtime=rt)
        cursor = store.load_state("hq").cursor
        pages = itertools.islice(rt.source.pages(cursor, now), crash_after)
        drive(store, "hq", pages, LiveCursor(store, "hq"), clock=lambda: now)
        return None


def stored(store: Store) -> dict[int, dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.event_key, events.c.payload)).all()
    return {int(key): payload for key, payload in rows}


def rejected_ids(store: Store) -> set[int]:
    with store.engine.connect() as conn:
        raws = conn.execute(sa.select(rejected_events.c.raw)).scalars().all()
    return {raw["id"] for raw in raws if isinstance(raw, dict) and "id" in raw}


def fresh_since(cursor: dict[str, Any], config: SourceConfig) -> datetime:
    """Where a pass starting at ``cursor`` begins its fresh listing: watermark - lookback."""
    assert config.start is not None
    origin = datetime.fromisoformat(cursor["origin"]) if cursor else config.start
    watermark = cursor.get("watermark") if cursor else None
    if not watermark:
        return origin
    return max(origin, datetime.fromisoformat(watermark) - timedelta(seconds=config.lookback))


def missing_from(store: Store, listed: dict[int, dict[str, Any]]) -> list[int]:
    """Events of ``listed`` that are neither stored (as new as listed) nor rejected."""
    held, rejected = stored(store), rejected_ids(store)
    missing = []
    for event_id, event in listed.items():
        if isinstance(event.get("event_code"), int):
            row = held.get(event_id)
            if row is None or row["updated_at"] < event["updated_at"]:
                missing.append(event_id)
        elif event_id not in rejected:
            missing.append(event_id)
    return missing


# -- the completeness property ------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    rounds = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "on_time": st.integers(0, 12),
                    "late": st.integers(0, 3),  # within the lookback
                    "very_late": st.integers(0, 2),  # older than the lookback
                    "ties": st.integers(0, 9),
                    "renames": st.integers(0, 3),
                    "malformed": st.integers(0, 2),
                    "during_pass": st.integers(0, 3),  # arrive while the pass pages
                    "switch_mid_pass": st.booleans(),  # the flavor flips under the pass
                    "crash_after": st.none() | st.integers(1, 4),
                    "shape": st.sampled_from(["array", "object"]),
                    "max_per_page": st.sampled_from([3, 5, 1000]),
                    "state_size": st.booleans(),
                    "fixed_page_size": st.sampled_from([None, None, 6]),
                    "total_bias": st.sampled_from([0, 0, -3, 5]),
                }
            ),
            min_size=1,
            max_size=8,
        )
    )
    return {
        "rounds": rounds,
        "page_size": draw(st.integers(1, 8)),
        "reference_sorts": draw(st.booleans()),
    }


QUIET: dict[str, Any] = {
    "on_time": 0,
    "late": 0,
    "very_late": 0,
    "ties": 0,
    "renames": 0,
    "malformed": 0,
    "during_pass": 0,
    "switch_mid_pass": False,
    "crash_after": None,
    "shape": "array",
    "max_per_page": 3,
    "state_size": False,
    "fixed_page_size": None,
    "total_bias": 0,
}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(history=histories())
@example(
    # Found by Hypothesis: a crash interrupts a newest-first listing whose
    # unread tail holds a reject; the resumed pass, served bigger pages
    # than asked, must still read that tail.
    history={
        "rounds": [
            QUIET,
            QUIET,
            {**QUIET, "malformed": 2, "during_pass": 1, "crash_after": 1},
            {**QUIET, "fixed_page_size": 6},
        ],
        "page_size": 1,
        "reference_sorts": False,
    }
)
def test_every_exit_0_pass_holds_what_was_listed_when_it_began(
    db: Store, history: dict[str, Any]
) -> None:
    play(empty(db), history)


def play(store: Store, history: dict[str, Any]) -> None:
    """Run ``history`` round by round, checking each exit-0 pass, then the end state."""
    config = replace(CONFIG, page_size=history["page_size"])
    lookback = timedelta(seconds=config.lookback)
    fake = FakeDoorFlow()
    now = T0 + timedelta(hours=1)
    during: dict[str, Any] = {}

    def flavor(server: FakeDoorFlow, shape: str) -> None:
        # Each flavor keeps its own order: the guide's list is newest first
        # whatever is asked; the reference honours sort=ASC or not, for good.
        server.shape = shape
        server.honour_sort = shape == "array" and history["reference_sorts"]

    def arrive_during_pass(server: FakeDoorFlow) -> None:
        if during.get("arrivals", 0) > 0:
            during["arrivals"] -= 1
            server.add(now - timedelta(seconds=30))  # late, inside the lookback
            server.add(now - lookback * 2)  # late, beyond it
            server.add(now)
        if len(server.requests) > 1 and during.pop("switch", False):
            flavor(server, "object" if server.shape == "array" else "array")

    fake.on_request = arrive_during_pass
    interrupted: dict[int, dict[str, Any]] = {}
    for index, round_ in enumerate(history["rounds"]):
        now += timedelta(minutes=5)
        fresh = [fake.add(now - timedelta(seconds=s)) for s in range(round_["on_time"])]
        for s in range(round_["late"]):
            fake.add(now - lookback + timedelta(minutes=2, seconds=s))
        for s in range(round_["very_late"]):
            fake.add(now - lookback * 3 - timedelta(seconds=s))
        for _ in range(round_["ties"]):
            fake.add(now - timedelta(minutes=1))
        for s in range(round_["malformed"]):
            fake.add_malformed(now - timedelta(seconds=40 + s) if s % 2 == 0 else None)
        for n, event_id in enumerate(fresh[: round_["renames"]]):
            fake.rename(event_id, f"renamed {index}.{n}", now)
        flavor(fake, round_["shape"])
        fake.max_per_page, fake.state_size = round_["max_per_page"], round_["state_size"]
        fake.fixed_page_size, fake.total_bias = round_["fixed_page_size"], round_["total_bias"]
        during.update(arrivals=round_["during_pass"], switch=round_["switch_mid_pass"])

        # What this pass owes: everything listed now from its fresh listing's
        # since, plus, if it resumes a listing, what was listed when that
        # listing began (from that listing's since).
        cursor = store.load_state("hq").cursor
        since = fresh_since(cursor, config)
        listed = {e["id"]: dict(e) for e in fake.listed(since)}
        owed = {**interrupted, **listed}
        fake.requests.clear()
        result = sync(store, fake, now, config, crash_after=round_["crash_after"])
        if result is not None:
            assert result.ok, result.error
            assert missing_from(store, owed) == [], f"round {index}: an exit-0 pass missed"
            interrupted = {}
        else:
            left = store.load_state("hq").cursor.get("pass")
            resumed_still = cursor.get("pass") and left and left["since"] == cursor["pass"]["since"]
            if left and not resumed_still:
                interrupted = listed  # the crash interrupted this pass's own fresh listing

    # Whatever happened, a quiet pass and one reconciliation later everything
    # the vendor has is there, in its newest version (renames happen inside
    # the lookback: older changes are invisible to any poll). Reconciliation
    # trusts the vendor's counts: this part needs a Total that tells the truth.
    during.clear()
    fake.total_bias = 0
    now += timedelta(minutes=1)
    result = sync(store, fake, now, config)
    assert result is not None
    assert result.ok
    with runtime(store, fake, config) as rt:
        reconcile(store, config, since=T0, until=now + timedelta(seconds=1), runtime=rt)
    assert missing_from(store, {e["id"]: e for e in fake.events.values()}) == []
    assert "pass" not in store.load_state("hq").cursor


def test_a_resumed_newest_first_pass_reads_what_arrived_at_the_head(db: Store) -> None:
    # The reproduction from the issue: guide shape, newest first, killed after
    # its first page, events arrive, the rerun must hold them when it exits 0.
    store = empty(db)
    fake = FakeDoorFlow(honour_sort=False, shape="object")
    now = T0 + timedelta(hours=2)
    for minute in range(30):
        fake.add(T0 + timedelta(minutes=minute))
    sync(store, fake, now, crash_after=1)
    head = [fake.add(now - timedelta(seconds=s)) for s in range(4)]
    listed = {e["id"]: dict(e) for e in fake.listed(T0)}
    result = sync(store, fake, now + timedelta(seconds=5))
    assert result is not None
    assert result.ok
    assert missing_from(store, listed) == []
    assert set(head) <= set(stored(store))


def test_a_resumed_pass_whose_server_now_pages_bigger_unstated_skips_nothing(db: Store) -> None:
    # Newest first, one row a page (stated), killed after the first page: the
    # watermark is the newest event, so the older rows are the interrupted
    # listing's alone (beyond the lookback). The server then pages by 6
    # without saying so: "page 2 of 1" would be its rows 6-11.
    store = empty(db)
    fake = FakeDoorFlow(honour_sort=False)
    for hour in range(20):
        fake.add(T0 + timedelta(hours=hour))
    now = T0 + timedelta(days=1)
    config = replace(CONFIG, page_size=1)
    sync(store, fake, now, config, crash_after=1)
    listed = {e["id"]: dict(e) for e in fake.listed(T0)}
    fake.fixed_page_size, fake.state_size = 6, False
    result = sync(store, fake, now + timedelta(minutes=5), config)
    assert result is not None
    assert result.ok
    assert missing_from(store, listed) == []


def test_a_pass_asks_for_every_listable_code_oldest_first_with_both_parameter_families(
    db: Store,
) -> None:
    fake = FakeDoorFlow()
    fake.add(T0)
    sync(empty(db), fake, T0 + timedelta(hours=1), replace(CONFIG, page_size=100))
    params = fake.requests[0].url.params
    assert params["sort"] == "ASC"
    assert params["since"] == params["since_utc"] == iso(T0)
    assert params["event_codes"] == ",".join(map(str, LISTABLE_EVENT_CODES))
    assert [int(c) for c in params.get_list("event_code")] == list(LISTABLE_EVENT_CODES)
    assert (params["n"], params["per_page"]) == ("100", "100")
    assert fake.requests[0].headers["Authorization"] == "Bearer t0ken"


def test_more_ties_than_a_page_are_all_read(db: Store) -> None:
    store = empty(db)
    fake = FakeDoorFlow()
    for _ in range(25):
        fake.add(T0 + timedelta(minutes=5))
    config = replace(CONFIG, lookback=0)
    assert (sync(store, fake, T0 + timedelta(hours=1), config) or pytest.fail("no result")).ok
    assert len(stored(store)) == 25
    for _ in range(7):
        fake.add(T0 + timedelta(minutes=5))  # more ties at the watermark itself
    assert (sync(store, fake, T0 + timedelta(hours=1), config) or pytest.fail("no result")).ok
    assert len(stored(store)) == 32


# -- vendor numbers that lie ----------------------------------------------------------------


@pytest.mark.parametrize(
    "quirks",
    [
        {"fixed_page_size": 7, "state_size": False},  # bigger pages than asked, unstated
        {"max_per_page": 3, "state_size": False},  # a silent cap below what was asked
        {"total_bias": -20},  # a Total that runs low
        {"total_bias": -20, "honour_sort": False},
        {"total_bias": 50},
    ],
)
def test_the_listing_is_the_truth_not_its_metadata(db: Store, quirks: dict[str, Any]) -> None:
    store = empty(db)
    fake = FakeDoorFlow(**quirks)
    for second in range(0, 3600, 60):
        fake.add(T0 + timedelta(seconds=second))
    result = sync(store, fake, T0 + timedelta(hours=2))
    assert result is not None
    assert result.ok
    assert set(stored(store)) == set(fake.events)


def test_a_listing_that_keeps_changing_shape_fails_instead_of_looping(db: Store) -> None:
    store = empty(db)
    fake = FakeDoorFlow()
    for second in range(40):
        fake.add(T0 + timedelta(seconds=second))

    def alternate(server: FakeDoorFlow) -> None:
        server.shape = "object" if server.shape == "array" else "array"

    fake.on_request = alternate
    result = sync(store, fake, T0 + timedelta(hours=1))
    assert result is not None
    assert not result.ok
    assert "changed shape" in (result.error or "")
    assert len(fake.requests) < 20


def test_an_id_ordered_listing_with_a_late_upload_at_a_page_edge_converges(db: Store) -> None:
    # Ordered by id, not time: a late upload (old created_at, new id) sits at
    # the end of the list, so pages look out of order. That is no reason to
    # start over, let alone forever.
    store = empty(db)
    fake = FakeDoorFlow(order_by_id=True)
    for second in range(10):
        fake.add(T0 + timedelta(minutes=10 + second))
    fake.add(T0 + timedelta(minutes=1))  # late upload: newest id, oldest time
    fake.add(T0 + timedelta(minutes=30))
    result = sync(store, fake, T0 + timedelta(hours=1))
    assert result is not None
    assert result.ok
    assert len(stored(store)) == 12
    assert len(fake.requests) <= 6


# -- what a pass costs -----------------------------------------------------------------------


def _history(fake: FakeDoorFlow, days: int, per_hour: int) -> None:
    for hour in range(days * 24):
        for n in range(per_hour):
            fake.add(T0 + timedelta(hours=hour, minutes=n * 60 // per_hour))


@pytest.mark.parametrize(("shape", "honour_sort"), [("array", True), ("object", False)])
def test_a_quiet_pass_costs_one_request_whatever_the_history_and_the_rejects(
    db: Store, shape: str, honour_sort: bool
) -> None:
    store = empty(db)
    fake = FakeDoorFlow(shape=shape, honour_sort=honour_sort)
    _history(fake, days=3, per_hour=20)
    for n in range(5):
        fake.add_malformed(T0 + timedelta(hours=n) if n % 2 else None)
    config = replace(CONFIG, page_size=100, reconcile_every=3600, reconcile_days=7)
    now = T0 + timedelta(days=3)
    first = sync(store, fake, now, config)
    assert first is not None
    assert first.ok
    assert first.reconciled is None  # the first reconciliation is due an hour later
    for minute in range(1, 6):
        fake.requests.clear()
        quiet = sync(store, fake, now + timedelta(minutes=minute), config)
        assert quiet is not None
        assert quiet.ok
        assert quiet.written.inserted == 0
        assert len(fake.requests) <= 2, [str(r.url) for r in fake.requests]
        assert len(fake.requests) == 1


def test_sync_reconciles_when_due_and_finds_an_upload_beyond_the_lookback(db: Store) -> None:
    store = empty(db)
    fake = FakeDoorFlow()
    _history(fake, days=2, per_hour=10)
    config = replace(CONFIG, page_size=100, reconcile_every=3600, reconcile_days=7)
    now = T0 + timedelta(days=2)
    assert (sync(store, fake, now, config) or pytest.fail("no result")).ok
    late = fake.add(T0 + timedelta(hours=20))  # an offline controller, a day late
    soon = sync(store, fake, now + timedelta(minutes=30), config)
    assert soon is not None
    assert soon.reconciled is None
    assert late not in stored(store)
    due = sync(store, fake, now + timedelta(minutes=61), config)
    assert due is not None
    assert due.ok
    assert due.reconciled is not None
    assert due.reconciled.found == 1
    assert late in stored(store)
    # ... and the next one is due reconcile_every later, not at once.
    again = sync(store, fake, now + timedelta(minutes=62), config)
    assert again is not None
    assert again.reconciled is None


# -- reconciliation ----------------------------------------------------------------------------


def _reconcile(store: Store, fake: FakeDoorFlow, config: SourceConfig, since: datetime,
               until: datetime) -> Any:  # fmt: skip
    fake.requests.clear()
    with runtime(store, fake, config) as rt:
        return reconcile(store, config, since=since, until=until, runtime=rt)


def test_reconcile_on_a_clean_history_costs_two_requests(db: Store) -> None:
    store = empty(db)
    fake = FakeDoorFlow()
    _history(fake, days=10, per_hour=40)
    config = replace(CONFIG, page_size=1000)
    now = T0 + timedelta(days=10)
    assert (sync(store, fake, now, config) or pytest.fail("no result")).ok
    report = _reconcile(store, fake, config, T0, now)
    assert (report.found, report.spans_checked, report.spans_reread) == (0, 1, 0)
    assert report.requests == len(fake.requests) == 2


def test_reconcile_finds_late_clusters_with_few_requests(db: Store) -> None:
    store = empty(db)
    fake = FakeDoorFlow()
    _history(fake, days=10, per_hour=40)  # 9,600 events
    config = replace(CONFIG, page_size=1000)
    now = T0 + timedelta(days=10)
    assert (sync(store, fake, now, config) or pytest.fail("no result")).ok
    late = []
    for cluster, days_back in enumerate([1, 2.5, 4, 6, 8]):
        at = now - timedelta(days=days_back)
        late += [fake.add(at + timedelta(seconds=13 * n + cluster)) for n in range(6)]
    report = _reconcile(store, fake, config, T0, now)
    assert report.found == 30
    assert set(late) <= set(stored(store))
    assert report.requests <= 80, report
    assert set(stored(store)) == set(fake.events)


def test_rejects_never_count_as_missing_nor_mask_a_missing_event(db: Store) -> None:
    store = empty(db)
    fake = FakeDoorFlow()
    _history(fake, days=4, per_hour=20)
    bad_with_time = fake.add_malformed(T0 + timedelta(days=1, hours=3))
    bad_without = fake.add_malformed(None)
    config = replace(CONFIG, page_size=200)
    now = T0 + timedelta(days=4)
    assert (sync(store, fake, now, config) or pytest.fail("no result")).ok
    assert {bad_with_time, bad_without} <= rejected_ids(store)

    # Re-served with a changed body (a name filled in later): still one record.
    fake.events[bad_with_time]["person_name"] = "filled in later"
    fake.events[bad_without]["person_name"] = "filled in later"
    clean = _reconcile(store, fake, config, T0, now)
    assert clean.found == 0

    late = fake.add(T0 + timedelta(days=1, hours=3, seconds=1))  # beside the reject
    found = _reconcile(store, fake, config, T0, now)
    assert found.found == 1
    assert late in stored(store)
    assert found.requests < 40, found


def test_a_reject_later_stored_valid_counts_once_and_masks_nothing(db: Store) -> None:
    store = empty(db)
    fake = FakeDoorFlow()
    _history(fake, days=2, per_hour=10)
    at = T0 + timedelta(hours=30)
    fixed_later = fake.add_malformed(at)
    config = replace(CONFIG, page_size=100)
    now = T0 + timedelta(days=2)
    assert (sync(store, fake, now, config) or pytest.fail("no result")).ok
    assert fixed_later in rejected_ids(store)
    # The vendor fixes the record; a webhook (or any re-read) stores it valid.
    fake.events[fixed_later] = {**fake.events[fixed_later], "event_code": 10}
    fake.events[fixed_later].pop("_sort_at")
    with runtime(store, fake, config) as rt:
        pages = rt.source.window_pages(at, at + timedelta(seconds=1), {}, now)
        drive(store, "hq", pages, NoCursor())
    assert fixed_later in stored(store)
    # An event next to it goes missing locally: the stale reject must not hide it.
    late = fake.add(at + timedelta(seconds=30))
    report = _reconcile(store, fake, config, T0, now)
    assert report.found == 1
    assert late in stored(store)


def test_a_pass_stopped_during_a_retry_wait_is_no_failure(db: Store) -> None:
    import threading

    from syncd.sources.http import RetryHooks

    store = empty(db)
    stop = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        stop.set()  # the daemon is asked to stop while the vendor says "wait a minute"
        return httpx.Response(429, headers={"Retry-After": "60"}, json={"error": "slow down"})

    config = replace(CONFIG, max_retries=3, max_retry_wait=60)
    with SourceRuntime.open(
        store, config, transport=httpx.MockTransport(handler), retry_hooks=RetryHooks(stop=stop)
    ) as rt:
        result = run_pass(store, config, clock=lambda: T0, runtime=rt, stop=stop)
    assert result.ok
    state = store.load_state("hq")
    assert (state.last_error, state.consecutive_failures, state.last_success_at) == (None, 0, None)
