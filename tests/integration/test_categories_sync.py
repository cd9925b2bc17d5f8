"""Categories end to end: both simulators over real HTTP into PostgreSQL and SQLite.

What a BI user counts (``category = 'access_granted'``) must follow the
vendors' own grouping: DoorFlow 13 "Admitted (Request Exit)" and IntServ 104
(exit button, served as ``accessgranted``) are admits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from syncd.config import Secret, SourceConfig
from syncd.db.schema import event_codes, events
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.simulators import DoorFlowSimulator, IntServSimulator, SimClock
from syncd.sources import doorflow

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
VENDOR_CATEGORY = {"accessgranted": "access_granted", "accessdenied": "access_denied"}


def test_stored_categories_follow_the_vendors_grouping(store: Store) -> None:
    clock = SimClock(start=START)
    with (
        DoorFlowSimulator(seed=3, history=3000, history_days=2, clock=clock) as df,
        IntServSimulator(seed=3, history=3000, history_days=2, clock=clock) as its,
    ):
        configs = [
            SourceConfig(
                name="hq", kind="doorflow", base_url=df.base_url, token=Secret(df.token),
                start=START - timedelta(days=3), page_size=1000,
            ),
            SourceConfig(
                name="sto", kind="intserv", base_url=its.base_url, api_key=Secret(its.api_key),
                start=START - timedelta(days=3), page_size=1000,
            ),
        ]  # fmt: skip
        for config in configs:
            assert run_pass(store, config, clock=clock.now).ok
    query = sa.select(events.c.vendor, events.c.event_code, events.c.category, events.c.payload)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
        table = {
            (vendor, code): category
            for vendor, code, category in conn.execute(
                sa.select(event_codes.c.vendor, event_codes.c.code, event_codes.c.category)
            )
        }
    doorflow_rows = [(code, category) for vendor, code, category, _ in rows if vendor == "doorflow"]
    intserv_rows = [(r.event_code, r.category, r.payload) for r in rows if r.vendor == "intserv"]
    assert len(doorflow_rows) > 2000
    assert len(intserv_rows) > 2000
    assert all(category == doorflow.category(code) for code, category in doorflow_rows)
    assert {category for code, category in doorflow_rows if code == 13} == {"access_granted"}
    # The code table BI tools join on agrees with every stored DoorFlow row.
    assert all(table[("doorflow", code)] == category for code, category in doorflow_rows)
    for code, category, payload in intserv_rows:
        assert category == VENDOR_CATEGORY[payload["category"]], (code, payload)
    assert {category for code, category, _ in intserv_rows if code == 104} == {"access_granted"}
