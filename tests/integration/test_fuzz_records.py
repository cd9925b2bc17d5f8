"""Fuzz: any JSON in any field, through both connectors' parsing and normalization
into both stores. No exception escapes; every record served ends up exactly once,
in ``events`` or in ``rejected_events``.

Records are generated as vendor records whose fields are each, at random, kept
valid or replaced by an arbitrary JSON value, a poison string (NUL, a lone
surrogate, ``"²"``, ``"--5"``, times out of range) or a huge integer. They are
served as a JSON body (``\\u0000`` and ``\\ud800`` escapes included) and read
back through :func:`syncd.sources.http.parse_json`, as a pass would. A record's
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
from syncd.sources.http import parse_json

EXAMPLES = 60
POISON = [
    "\x00", "a\x00b", "\ud800", "x\udfffy", "²", "--5", "-", "", " 7 ", "1e3", "٣",
    "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2026-02-30T00:00:00Z",
    "2026-03-02T08:00:00Z", "2026-03-02T08:00:00+14:00", "2026-03-02",
]  # fmt: skip
HUGE = st.sampled_from([2**31 - 1, 2**31, 2**32 + 10, 2**63 - 1, 2**63, -(2**63) - 1, 2**70])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    HUGE,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
    st.sampled_from(POISON),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5) | st.sampled_from(POISON), inner, max_size=3)
    ),
    max_leaves=4,
)
# Never a readable id (so no two records can share one): vendor ids are
# either the record's own serial or one of these.
UNREADABLE_IDS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["²", "--5", "", "x", "\x00", "\ud800", 2**63, 2**70, -(2**64)]),
    st.lists(SCALARS, max_size=2),
)

DOORFLOW_FIELDS = {
    "created_at": "2026-03-02T08:00:00Z",
    "event_code": 10,
    "event_label": "Admitted (Card/fob)",
    "channel_id": 1566,
    "channel_name": "Front Entrance",
    "credentials_number": "44455661215",
    "person_id": 455165,
    "person_name": "Joe Bloggs",
    "updated_at": "2026-03-02T08:00:01Z",
    "additional_data": {"card_number": "1"},
}
INTSERV_FIELDS = {
    "system_id": "abc123-001",
    "event_time": "2026-03-02T08:00:00Z",
    "type": 100,
    "category": "AccessGranted",
    "door_name": "entrance",
    "key": {"identification": "0001234567890", "type": "proximity"},
    "person": {"id": "81bd", "first_name": "first", "last_name": "last"},
    "subject": None,
}


@st.composite
def vendor_record(draw: st.DrawFn, id_field: str, fields: dict[str, Any], serial: int) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return [serial, draw(JSON_VALUES)]  # not an object at all
    record: dict[str, Any] = {"fuzz_serial": serial}
    record[id_field] = serial if draw(st.booleans()) else draw(UNREADABLE_IDS)
    for name, valid in fields.items():
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # missing
        record[name] = draw(JSON_VALUES) if choice == 1 else valid
    record.update(draw(st.dictionaries(st.sampled_from(["x", "y", "\x00"]), JSON_VALUES)))
    return record


@st.composite
def pages(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    size = draw(st.integers(1, 8))
    serials = range(1_000_000, 1_000_000 + size)
    return (
        [draw(vendor_record("id", DOORFLOW_FIELDS, n)) for n in serials],
        [draw(vendor_record("sequence_id", INTSERV_FIELDS, n)) for n in serials],
    )


def served(payload: Any) -> Any:
    """The body a vendor would send (escapes and all), read back as a pass reads it."""
    body = json.dumps(payload, ensure_ascii=True).encode()
    request = httpx.Request("GET", "http://vendor.test/")
    return parse_json(httpx.Response(200, content=body, request=request))


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
    body = served(doorflow_items)
    response = doorflow.read_list_response(body, httpx.Headers())
    records, rejected = doorflow.normalize_page(response.items, {})
    store.write_page(f"df{n}", records, rejected, {"n": n}, now)
    body = served({"least_sync_time": None, "has_more": False, "events": intserv_items})
    listed = intserv.read_list_response(body)
    records, rejected = intserv.normalize_page(listed.events, {})
    store.write_page(f"is{n}", records, rejected, {"n": n}, now)

    for source, items in ((f"df{n}", doorflow_items), (f"is{n}", intserv_items)):
        stored, kept, keys = counts(store, source)
        assert stored + kept == len(items), (source, stored, kept, items)
        serials = {str(1_000_000 + i) for i in range(len(items))}
        assert all(key.rsplit("|", 1)[-1] in serials for key in keys)
