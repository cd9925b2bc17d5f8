"""Rejected records on both databases: one row per vendor record, whatever it holds."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from syncd.db.schema import rejected_events, sync_state
from syncd.db.store import Store
from syncd.records import RejectedRecord
from syncd.sources import doorflow, intserv
from tests.factories import T0

NOW = T0 + timedelta(days=1)


def rejected_rows(store: Store, source: str = "hq") -> list[Any]:
    query = sa.select(rejected_events).where(rejected_events.c.source == source)
    with store.engine.connect() as conn:
        return list(conn.execute(query.order_by(rejected_events.c.id)).all())


def df(event_id: Any, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "created_at": "2026-01-05T09:00:00Z", "event_code": "x", **fields}


def test_the_same_id_re_served_with_a_changed_body_is_one_row(store: Store) -> None:
    _, first = doorflow.normalize_page([df(7, person_name=None)], {})
    _, later = doorflow.normalize_page([df(7, person_name="Filled In Later")], {})
    store.write_page("hq", [], first, None, NOW)
    store.write_page("hq", [], later, None, NOW + timedelta(minutes=1))
    (row,) = rejected_rows(store)
    assert row.event_key == "7"
    assert row.raw["person_name"] == "Filled In Later"  # the latest body seen
    assert row.rejected_at == NOW
    assert row.last_seen_at == NOW + timedelta(minutes=1)


def test_intserv_keys_and_content_keyed_records_stay_apart(store: Store) -> None:
    base = {"system_id": "s1", "event_time": "2026-01-05T09:00:00+01:00", "sequence_id": 3}
    _, one = intserv.normalize_page([{**base, "type": "?"}, {"type": 1}], {})
    _, two = intserv.normalize_page([{**base, "type": "??"}, {"type": 1}, {"type": 2}], {})
    store.write_page("sto", [], one, None, NOW)
    store.write_page("sto", [], two, None, NOW)
    rows = rejected_rows(store, "sto")
    assert sorted((r.event_key or "-") for r in rows) == ["-", "-", "s1|2026-01-05T08:00:00Z|3"]


def test_one_page_holding_the_same_id_twice(store: Store) -> None:
    _, rejected = doorflow.normalize_page([df(9, n=1), df(9, n=2)], {})
    store.write_page("hq", [], rejected, None, NOW)
    (row,) = rejected_rows(store)
    assert row.raw["n"] == 2


def test_nul_and_surrogates_are_stored_escaped_on_both_databases(store: Store) -> None:
    page = [df(1, person_name="a\x00b"), df(2, door="\ud800"), {"event_code": "\x00"}]
    records, rejected = doorflow.normalize_page(page, {})
    assert not records
    store.write_page("hq", [], rejected, {"page": 1}, NOW)
    rows = rejected_rows(store)
    assert len(rows) == 3
    assert rows[0].raw["person_name"] == "a\\u0000b"
    assert rows[1].raw["door"] == "\\ud800"
    assert all("written as \\uXXXX text" in r.reason for r in rows)
    assert store.load_state("hq").cursor == {"page": 1}


def test_huge_integers_in_a_rejected_raw_are_kept_exactly(store: Store) -> None:
    _, rejected = doorflow.normalize_page([df(3, big=2**80)], {})
    store.write_page("hq", [], rejected, None, NOW)
    (row,) = rejected_rows(store)
    raw = row.raw if isinstance(row.raw, dict) else json.loads(row.raw)
    assert raw["big"] == 2**80


def test_a_row_stored_before_event_key_existed_is_adopted_not_duplicated(store: Store) -> None:
    _, (keyed,) = doorflow.normalize_page([df(5)], {})
    legacy = RejectedRecord(keyed.reason, keyed.raw, keyed.occurred_at)  # as 0001 stored it
    store.write_page("hq", [], [legacy, RejectedRecord("x", {"other": 1})], None, NOW)
    store.write_page("hq", [], [keyed], None, NOW + timedelta(minutes=1))
    rows = rejected_rows(store)
    assert sorted((r.event_key or "-") for r in rows) == ["-", "5"]


def test_refresh_token_origin_is_saved_with_the_token(store: Store) -> None:
    store.save_refresh_token("hq", "rotated-1", NOW, origin="ab" * 32)
    store.save_refresh_token("hq", "rotated-2", NOW)  # no origin given: kept
    state = store.load_state("hq")
    assert (state.refresh_token, state.refresh_token_origin) == ("rotated-2", "ab" * 32)
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(sync_state.c.refresh_token_origin)).scalar_one()
    assert stored == "ab" * 32
