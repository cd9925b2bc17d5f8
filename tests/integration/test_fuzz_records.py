"""Fuzz: any JSON in any field, through both connectors' parsing and normalization
into both stores. No exception escapes; every record served ends up exactly once,
in ``events`` or in ``rejected_events``.

Records come from :mod:`tests.fuzzing` (any JSON in any field, poison strings,
huge integers). They are served as a JSON body (``\\u0000`` and ``\\ud800``
escapes included) and read back through :func:`syncd.sources.http.parse_page`,
as a pass would (a screened page skips the per-record walk). A record's
vendor id (``id``, ``sequence_id``) is unique per record or unreadable, so
"exactly once" is a count: rows in ``events`` plus rows in ``rejected_events``.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.db.schema import events, rejected_events
from syncd.db.store import Store
from syncd.sources import doorflow, intserv
from syncd.sources.http import JsonPage, parse_page
from tests.fuzzing import doorflow_record, intserv_record

EXAMPLES = 60


@st.composite
def pages(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    size = draw(st.integers(1, 8))
    serials = range(1_000_000, 1_000_000 + size)
    return (
        [draw(doorflow_record(n)) for n in serials],
        [draw(intserv_record(n)) for n in serials],
    )


def served(payload: Any) -> JsonPage:
    """The body a vendor would send (escapes and all), read back as a pass reads it."""
    body = json.dumps(payload, ensure_ascii=True).encode()
    request = httpx.Request("GET", "http://vendor.test/")
    return parse_page(httpx.Response(200, content=body, request=request))


def counts(store: Store, source: str) -> tuple[int, int, set[str]]:
    with store.engine.connect() as conn:
        keys = set(conn.execute(sa.select(events.c.event_key).where(events.c.source == source)))
        rejected = conn.execute(
            sa.select(sa.func.count()).where(rejected_events.c.source == source)
        ).scalar_one()
    return len(keys), int(rejected), {k for (k,) in keys}


SOURCES = itertools.count()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pages())
def test_every_record_ends_up_exactly_once(store: Store, page: tuple[list[Any], list[Any]]) -> None:
    doorflow_items, intserv_items = page
    n = next(SOURCES)
    now = datetime(2026, 3, 3, tzinfo=UTC)
    page_df = served(doorflow_items)
    response = doorflow.read_list_response(page_df.body, httpx.Headers(), screened=page_df.storable)
    records, rejected = doorflow.normalize_page(response.items, {}, screened=response.screened)
    store.write_page(f"df{n}", records, rejected, {"n": n}, now)
    page_is = served({"least_sync_time": None, "has_more": False, "events": intserv_items})
    listed = intserv.read_list_response(page_is.body, screened=page_is.storable)
    records, rejected = intserv.normalize_page(listed.events, {}, screened=listed.screened)
    store.write_page(f"is{n}", records, rejected, {"n": n}, now)

    for source, items in ((f"df{n}", doorflow_items), (f"is{n}", intserv_items)):
        stored, kept, keys = counts(store, source)
        assert stored + kept == len(items), (source, stored, kept, items)
        serials = {str(1_000_000 + i) for i in range(len(items))}
        assert all(key.rsplit("|", 1)[-1] in serials for key in keys)
