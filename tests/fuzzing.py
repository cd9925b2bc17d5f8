"""Hypothesis strategies for fuzzed vendor records, shared by every fuzz test.

A record is a vendor record (DoorFlow or IntServ field names) whose fields are
each, at random, kept valid, dropped, or replaced by an arbitrary JSON value, a
poison string (NUL, a lone surrogate, ``"²"``, ``"--5"``, times out of range)
or a huge integer; now and then it is not an object at all. Its vendor id is
the ``serial`` it is built with or one of :data:`UNREADABLE_IDS`, so no two
records of one batch share a readable id, and ``fuzz_serial`` makes each one's
content unique: "every record exactly once" is then a count of rows in
``events`` plus rows in ``rejected_events``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

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
def vendor_record(
    draw: st.DrawFn, id_field: str, fields: dict[str, Any], serial: int, spoil: int = 10
) -> Any:
    """A record of ``fields`` (valid values) whose parts are each spoilt at odds ``1/spoil``.

    ``spoil=10``: most records end up rejected; ``spoil=100``: most are stored,
    so the storing path gets its share of the fuzz too.
    """
    if draw(st.integers(0, 3 * spoil)) == 0:
        return [serial, draw(JSON_VALUES)]  # not an object at all
    record: dict[str, Any] = {"fuzz_serial": serial}
    readable = draw(st.integers(1, spoil)) > 5  # half the time at spoil=10
    record[id_field] = serial if readable else draw(UNREADABLE_IDS)
    for name, valid in fields.items():
        choice = draw(st.integers(0, spoil - 1))
        if choice == 0:
            continue  # missing
        record[name] = draw(JSON_VALUES) if choice == 1 else valid
    if draw(st.integers(0, spoil // 10 - 1)) == 0:  # always at spoil=10
        record.update(draw(st.dictionaries(st.sampled_from(["x", "y", "\x00"]), JSON_VALUES)))
    return record


def doorflow_record(serial: int, spoil: int = 10) -> st.SearchStrategy[Any]:
    return vendor_record("id", DOORFLOW_FIELDS, serial, spoil)


def intserv_record(serial: int, spoil: int = 10) -> st.SearchStrategy[Any]:
    return vendor_record("sequence_id", INTSERV_FIELDS, serial, spoil)
