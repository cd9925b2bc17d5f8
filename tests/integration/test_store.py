"""The store against real PostgreSQL and SQLite: upsert semantics, atomic pages, locks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.db.schema import events, rejected_events, sync_state
from syncd.db.store import Store, WriteResult, dedupe_newest
from syncd.records import EventRecord, RejectedRecord
from tests.factories import T0, event

NOW = T0 + timedelta(days=1)


def rows(store: Store, source: str = "hq") -> dict[str, Any]:
    with store.engine.connect() as conn:
        result = conn.execute(sa.select(events).where(events.c.source == source))
        return {row.event_key: row for row in result}


def test_new_rows_are_inserted_with_every_column(store: Store) -> None:
    record = event(7, door_id="12", door_name="Front", person_id="5", credential="4455")
    result = store.write_page("hq", [record], [], {"watermark": "x"}, NOW)
    assert result == WriteResult(inserted=1)
    row = rows(store)["7"]
    assert (row.vendor, row.event_code, row.category) == ("doorflow", 10, "access_granted")
    assert (row.door_id, row.door_name, row.person_id, row.credential) == (
        "12",
        "Front",
        "5",
        "4455",
    )
    assert row.occurred_at == record.occurred_at
    assert row.occurred_at.tzinfo is not None
    assert row.payload == {"id": 7, "person_name": "Person 7 v0", "version": 0}
    assert row.first_seen_at == row.last_seen_at == NOW


def test_unchanged_rows_are_not_rewritten(store: Store) -> None:
    batch = [event(i) for i in range(50)]
    store.write_page("hq", batch, [], None, NOW)
    later = NOW + timedelta(hours=1)
    assert store.write_page("hq", batch, [], None, later) == WriteResult(unchanged=50)
    assert {row.last_seen_at for row in rows(store).values()} == {NOW}


def test_changed_rows_are_updated_and_last_seen_moves(store: Store) -> None:
    store.write_page("hq", [event(1), event(2)], [], None, NOW)
    later = NOW + timedelta(hours=1)
    result = store.write_page("hq", [event(1, version=1), event(2)], [], None, later)
    assert result == WriteResult(updated=1, unchanged=1)
    stored = rows(store)
    assert stored["1"].person_name == "Person 1 v1"
    assert stored["1"].last_seen_at == later
    assert stored["1"].first_seen_at == NOW
    assert stored["2"].last_seen_at == NOW


def test_an_older_version_never_overwrites_a_newer_one(store: Store) -> None:
    store.write_page("hq", [event(1, version=2)], [], None, NOW)
    result = store.write_page("hq", [event(1, version=1)], [], None, NOW)
    assert result == WriteResult(unchanged=1)
    assert rows(store)["1"].person_name == "Person 1 v2"


def test_one_key_twice_in_a_page_keeps_the_newest(store: Store) -> None:
    page = [event(1, version=3), event(1, version=1), event(2)]
    result = store.write_page("hq", page, [], None, NOW)
    assert result.inserted == 2
    assert rows(store)["1"].person_name == "Person 1 v3"


def test_sources_are_separate_keyspaces(store: Store) -> None:
    store.write_page("hq", [event(1)], [], None, NOW)
    assert store.write_page("branch", [event(1)], [], None, NOW) == WriteResult(inserted=1)
    assert len(rows(store, "hq")) == len(rows(store, "branch")) == 1


def test_rejected_records_are_kept_once_with_reason_and_raw(store: Store) -> None:
    bad = RejectedRecord("id missing", {"event_code": 10}, T0)
    store.write_page("hq", [], [bad], None, NOW)
    store.write_page("hq", [], [bad], None, NOW + timedelta(minutes=1))
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(rejected_events)).all()
    assert len(found) == 1
    assert found[0].reason == "id missing"
    assert found[0].raw == {"event_code": 10}
    assert found[0].last_seen_at == NOW + timedelta(minutes=1)


def test_cursor_is_saved_with_its_page(store: Store) -> None:
    store.write_page("hq", [event(1)], [], {"watermark": "a", "n": 1}, NOW)
    assert store.load_state("hq").cursor == {"watermark": "a", "n": 1}
    store.write_page("hq", [], [], None, NOW)  # None leaves it alone
    assert store.load_state("hq").cursor == {"watermark": "a", "n": 1}


def test_a_failing_page_leaves_nothing_behind(store: Store) -> None:
    store.write_page("hq", [event(1)], [], {"page": 1}, NOW)
    poisoned = event(3, category=None)  # violates NOT NULL inside the merge
    with pytest.raises(sa.exc.IntegrityError):
        store.write_page("hq", [event(2), poisoned], [RejectedRecord("x", {})], {"page": 2}, NOW)
    assert set(rows(store)) == {"1"}
    assert store.load_state("hq").cursor == {"page": 1}
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rejected_events)).scalar() == 0


def test_success_and_failure_bookkeeping(store: Store) -> None:
    store.record_failure("hq", "AuthError: HTTP 401", NOW)
    store.record_failure("hq", "AuthError: HTTP 401", NOW)
    state = store.load_state("hq")
    assert (state.consecutive_failures, state.last_error) == (2, "AuthError: HTTP 401")
    store.record_success("hq", NOW)
    state = store.load_state("hq")
    assert (state.consecutive_failures, state.last_success_at) == (0, NOW)
    assert state.last_error == "AuthError: HTTP 401"  # kept for `syncd status`


def test_refresh_token_is_persisted_without_touching_the_cursor(store: Store) -> None:
    store.write_page("hq", [], [], {"w": 1}, NOW)
    store.save_refresh_token("hq", "rotated-1", NOW)
    state = store.load_state("hq")
    assert (state.refresh_token, state.cursor) == ("rotated-1", {"w": 1})


def test_count_span_counts_like_the_vendor(store: Store) -> None:
    """Events of the listed codes, plus placed rejects whose vendor id is not stored too."""
    store.write_page(
        "hq",
        [event(i, occurred_at=T0 + timedelta(minutes=i)) for i in range(10)]
        + [event(50, occurred_at=T0 + timedelta(minutes=1), event_code=55)],
        [
            RejectedRecord("bad", {"n": 1}, T0 + timedelta(minutes=5)),
            RejectedRecord("bad", {}),  # no readable time: in no span
            RejectedRecord("fixed later", {"id": 3}, T0 + timedelta(minutes=3), event_key="3"),
        ],
        None,
        NOW,
    )
    codes = frozenset({10})
    end = T0 + timedelta(days=1)
    assert store.count_span("hq", T0 + timedelta(minutes=5), end, codes) == 6
    assert store.count_span("hq", T0, T0 + timedelta(minutes=6), codes) == 7
    assert store.count_span("hq", T0, end) == 12  # every code: the remote-control one too
    assert store.count_span("other", T0, end) == 0


def test_event_codes_are_loaded_for_a_vendor(store: Store) -> None:
    codes = store.load_codes("doorflow")
    assert codes[10].category == "access_granted"
    assert codes[32].category == "door_state"
    assert codes[90].category == "tamper"
    assert store.load_codes("intserv")[201].category == "access_denied"


def test_the_source_lock_is_exclusive_and_released(store: Store) -> None:
    other = Store(store.engine)
    with store.source_lock("hq") as first:
        assert first
        with other.source_lock("hq") as second:
            assert not second
        with other.source_lock("branch") as unrelated:
            assert unrelated
    with other.source_lock("hq") as again:
        assert again


def test_the_postgres_lock_excludes_another_engine(pg_url: str) -> None:
    from syncd.db.engine import create_engine

    a, b = create_engine(pg_url), create_engine(pg_url)
    try:
        with Store(a).source_lock("hq") as first, Store(b).source_lock("hq") as second:
            assert (first, second) == (True, False)
    finally:
        a.dispose()
        b.dispose()


# -- the property ---------------------------------------------------------------

keys = st.integers(min_value=0, max_value=30)
versions = st.integers(min_value=0, max_value=5)
batches = st.lists(st.lists(st.tuples(keys, versions), max_size=25), min_size=1, max_size=6)


def expected_newest(history: list[list[tuple[int, int]]]) -> dict[str, int]:
    newest: dict[str, int] = {}
    for batch in history:
        for key, version in batch:
            newest[str(key)] = max(version, newest.get(str(key), -1))
    return newest


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=batches, fail_at=st.integers(min_value=-1, max_value=5))
def test_any_batches_end_with_one_row_per_key_holding_the_newest(
    store: Store, history: list[list[tuple[int, int]]], fail_at: int
) -> None:
    """Repeats, reorderings and new versions in any order; one batch fails midway.

    The table ends with exactly one row per key, holding the newest version,
    and the cursor is the one of the last batch that committed.
    """
    with store.engine.begin() as conn:
        conn.execute(sa.delete(events))
        conn.execute(sa.delete(sync_state))
    committed: list[list[tuple[int, int]]] = []
    for index, batch in enumerate(history):
        records: list[EventRecord] = [event(k, version=v) for k, v in batch]
        if index == fail_at:
            with pytest.raises(sa.exc.IntegrityError):
                store.write_page("hq", [*records, event(999, category=None)], [], {"b": index}, NOW)
            continue
        store.write_page("hq", records, [], {"b": index}, NOW)
        committed.append(batch)
    stored = rows(store)
    newest = expected_newest(committed)
    assert {k: row.person_name for k, row in stored.items()} == {
        k: f"Person {k} v{v}" for k, v in newest.items()
    }
    last_ok = max((i for i in range(len(history)) if i != fail_at), default=None)
    expected_cursor = {} if last_ok is None else {"b": last_ok}
    assert store.load_state("hq").cursor == expected_cursor


def test_dedupe_newest_prefers_updated_at_then_last() -> None:
    a1, a2 = event(1, version=2), event(1, version=1)
    assert dedupe_newest([a1, a2]) == [a1]
    b1 = event(2, updated_at=T0, name="first")
    b2 = event(2, updated_at=T0, name="second")
    assert dedupe_newest([b1, b2]) == [b2]


# -- rows that are probably new: a plain COPY first (PostgreSQL) -------------------


def _columns(store: Store, source: str) -> dict[str, tuple[Any, ...]]:
    skip = {"id", "source"}
    return {
        key: tuple(v for k, v in row._mapping.items() if k not in skip)
        for key, row in rows(store, source).items()
    }


def test_a_likely_new_page_is_stored_exactly_as_a_merged_one(store: Store) -> None:
    page = [
        event(i, door_id="3", door_name="Gate", person_id=str(i), credential="99")
        for i in range(20)
    ]
    assert store.write_page("direct", page, [], None, NOW, likely_new=True) == WriteResult(
        inserted=20
    )
    store.write_page("merged", page, [], None, NOW)
    assert _columns(store, "direct") == _columns(store, "merged")
    # The payload is the JSON object itself, not a JSON string holding it.
    assert rows(store, "direct")["7"].payload == {
        "id": 7,
        "person_name": "Person 7 v0",
        "version": 0,
    }


def test_a_wrong_guess_costs_no_row(store: Store) -> None:
    store.write_page("hq", [event(1), event(2)], [], None, NOW)
    later = NOW + timedelta(hours=1)
    page = [event(2, version=1), event(3), event(3)]  # one stored, one new twice
    result = store.write_page("hq", page, [], {"at": 3}, later, likely_new=True)
    assert result == WriteResult(inserted=1, updated=1, unchanged=1)
    stored = rows(store)
    assert sorted(stored) == ["1", "2", "3"]
    assert stored["2"].person_name == "Person 2 v1"
    assert stored["3"].first_seen_at == later
    assert store.load_state("hq").cursor == {"at": 3}


@pytest.mark.postgres
def test_likely_new_takes_the_plain_copy_and_falls_back_on_a_stored_key(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.db import store as store_module

    outcomes: list[bool] = []
    copy_new = store_module._copy_new

    def spy(*args: Any) -> bool:
        outcomes.append(copy_new(*args))
        return outcomes[-1]

    monkeypatch.setattr(store_module, "_copy_new", spy)
    pg_store.write_page("hq", [event(1), event(2)], [], None, NOW, likely_new=True)
    pg_store.write_page("hq", [event(2), event(3)], [], None, NOW, likely_new=True)
    pg_store.write_page("hq", [event(4)], [], None, NOW)  # not a guess: no COPY attempt
    assert outcomes == [True, False]
    assert sorted(rows(pg_store)) == ["1", "2", "3", "4"]
