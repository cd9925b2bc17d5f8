"""The msgspec fast path of ``from_api`` decides exactly as the field-by-field checks.

``from_api`` reads a record of the expected types through a ``msgspec``
struct and hands every other record to ``from_api_checked``. Whatever the
record (Hypothesis' fuzzed vendor records, both DoorFlow field namings,
poison strings, huge integers, wrong types), both must give the same
``EventRecord`` or the same ``MalformedRecord`` reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.records import EventRecord, MalformedRecord
from syncd.sources import doorflow, intserv
from syncd.sources.base import CodeInfo
from tests.fuzzing import doorflow_record, intserv_record

DOORFLOW_CODES = {
    10: CodeInfo("Admitted", "access_granted"),
    20: CodeInfo("Rejected", "access_denied"),
}
INTSERV_CODES = {100: CodeInfo("Access granted", "access_granted")}
# The guide's names for the reference's fields (FACTS.md): both are read.
GUIDE_NAMES = {
    "id": "event_id",
    "created_at": "occurred_at",
    "event_label": "description",
    "channel_id": "door_controller_id",
    "channel_name": "door_controller_name",
    "credentials_number": "credential_id",
}


def outcome(normalize: Callable[[], EventRecord]) -> object:
    try:
        return normalize()
    except MalformedRecord as exc:
        return ("malformed", str(exc))
    except Exception as exc:  # split_page turns these into rejects too: same type, same text
        return (type(exc).__name__, str(exc))


def guide_named(record: Any, rename: list[bool]) -> Any:
    if not isinstance(record, dict):
        return record
    renamed = dict(record)
    for (old, new), do in zip(GUIDE_NAMES.items(), rename, strict=False):
        if do and old in renamed:
            renamed[new] = renamed.pop(old)
    return renamed


@settings(max_examples=1500, deadline=None)
@given(
    st.integers(1, 2**40).flatmap(
        lambda n: st.one_of(doorflow_record(n, 10), doorflow_record(n, 100))
    ),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_doorflow_fast_path_agrees_with_the_checks(record: Any, rename: list[bool]) -> None:
    record = guide_named(record, rename)
    fast = outcome(lambda: doorflow.from_api(record, DOORFLOW_CODES))
    checked = outcome(lambda: doorflow.from_api_checked(record, DOORFLOW_CODES))
    assert fast == checked


@settings(max_examples=1500, deadline=None)
@given(
    st.integers(1, 2**40).flatmap(
        lambda n: st.one_of(intserv_record(n, 10), intserv_record(n, 100))
    )
)
def test_intserv_fast_path_agrees_with_the_checks(record: Any) -> None:
    fast = outcome(lambda: intserv.from_api(record, INTSERV_CODES))
    checked = outcome(lambda: intserv.from_api_checked(record, INTSERV_CODES))
    assert fast == checked


DOORFLOW_EVENT = {
    "id": 6455001, "event_id": 6455001, "event_code": 10, "event_label": None,
    "door_controller_id": 1344, "door_controller_name": "Berlin Reception",
    "channel_id": 1344, "channel_name": "Berlin Reception", "person_id": 7,
    "person_name": "Ann", "credentials_number": None,
    "created_at": "2026-01-02T01:04:04.057+01:00",
    "updated_at": "2026-01-02T01:04:04.057+01:00",
}  # fmt: skip
INTSERV_EVENT = {
    "system_id": "abc123-001", "event_time": "2026-03-02T08:00:00Z", "sequence_id": 5,
    "type": 100, "category": "AccessGranted", "door_name": "entrance",
    "key": {"identification": "0001234567890", "type": "proximity"},
    "person": {"id": "81bd", "first_name": "first", "last_name": "last"}, "subject": None,
}  # fmt: skip


@pytest.mark.parametrize(
    ("module", "record", "codes"),
    [(doorflow, DOORFLOW_EVENT, DOORFLOW_CODES), (intserv, INTSERV_EVENT, INTSERV_CODES)],
)
def test_a_well_formed_event_takes_the_fast_path(
    module: Any, record: dict[str, Any], codes: dict[int, CodeInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = module.from_api_checked(record, codes)

    def refuse(*_args: object) -> EventRecord:
        raise AssertionError("the field-by-field path was taken")

    monkeypatch.setattr(module, "from_api_checked", refuse)
    assert module.from_api(record, codes) == expected
