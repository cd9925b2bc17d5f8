"""Categories exactly as the contract states them (DESIGN.md "Categories")."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.records import CATEGORIES
from syncd.simulators.data import DOORFLOW_LISTABLE_CODES
from syncd.sources import doorflow, intserv
from syncd.sources.base import CodeInfo

# The contract's DoorFlow table, written out code by code so it is checked
# independently of the connector's range table.
DOORFLOW_CONTRACT: dict[str, set[int]] = {
    "access_granted": {10, 11, 12, 13, 14, 15, 16, 17, 18, 70},
    "access_denied": {20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 71, 72, 73},
    "exit_request": {30},
    "door_state": {31, 32, 33, 34, 35, 36, 37, 40, 41, 42},
    "remote_control": {50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63},
    "tamper": {90, 91},
    "device_status": {1, 2, 3},
    "sync": {100, 101, 102, 103, 104, 105, 106, 107, 220, 221, 222, 223, 224, 225},
}


def _contract(code: int) -> str:
    named = [name for name, codes in DOORFLOW_CONTRACT.items() if code in codes]
    assert len(named) <= 1
    return named[0] if named else "other"


@pytest.mark.parametrize("code", range(301))
def test_every_doorflow_code_has_the_contract_category(code: int) -> None:
    assert doorflow.category(code) == _contract(code)


def test_doorflow_13_request_exit_is_an_admit_and_only_30_is_an_exit_request() -> None:
    assert doorflow.category(13) == "access_granted"
    assert [c for c in range(-5, 1000) if doorflow.category(c) == "exit_request"] == [30]
    assert doorflow.category(-1) == doorflow.category(999) == "other"


def test_from_api_uses_the_rule_not_the_code_table() -> None:
    # A stale code table (0001 said exit_request for 13) cannot override the rule;
    # it still gives the label when the event has none.
    stale = {13: CodeInfo("Admitted (Request Exit)", "exit_request")}
    raw = {"id": 1, "event_code": 13, "created_at": "2024-01-01T00:00:00Z"}
    record = doorflow.from_api(raw, stale)
    assert (record.category, record.label) == ("access_granted", "Admitted (Request Exit)")
    for code in (30, 55, 90, 225, 4, 300):
        raw = {"id": code, "event_code": code, "created_at": "2024-01-01T00:00:00Z"}
        assert doorflow.from_api(raw, {}).category == doorflow.category(code)


def test_every_doorflow_category_is_a_contract_category() -> None:
    assert {doorflow.category(c) for c in range(301)} == set(CATEGORIES)


def test_listable_codes_are_the_documented_ones() -> None:
    documented = {
        *range(10, 19), 70, *range(20, 30), 71, 72, 73, 1, 2, 3, 40, 41, 42, 90, 91,
        *range(31, 38), 30, *range(100, 108), 220, 223, 224, 225,
    }  # fmt: skip
    assert set(doorflow.LISTABLE_EVENT_CODES) == documented
    assert len(doorflow.LISTABLE_EVENT_CODES) == len(documented)
    assert not set(range(50, 64)) & set(doorflow.LISTABLE_EVENT_CODES)
    assert set(doorflow.LISTABLE_EVENT_CODES) == DOORFLOW_LISTABLE_CODES  # the simulator's


# -- IntServ --------------------------------------------------------------------

CODES: dict[int, CodeInfo] = {
    **{c: CodeInfo(f"Access granted ({c})", "access_granted") for c in range(100, 106)},
    **{c: CodeInfo(f"Access denied ({c})", "access_denied") for c in range(200, 208)},
}


@pytest.mark.parametrize(
    ("raw_category", "code", "expected"),
    [
        ("accessgranted", 104, "access_granted"),  # the exit button is a grant
        ("accessgranted", 203, "access_granted"),  # the event's field wins over the table
        ("accessdenied", 101, "access_denied"),
        ("AccessDenied", 150, "access_denied"),  # not in the table
        ("ACCESSGRANTED", 999, "access_granted"),
        ("Access Granted", 999, "access_granted"),  # case and spaces do not matter
        (" access denied ", 999, "access_denied"),
        ("access_granted", 999, "access_granted"),
        ("access-denied", 999, "access_denied"),
        (None, 104, "access_granted"),  # no field: the code table
        (None, 206, "access_denied"),
        ("", 101, "access_granted"),
        ("somethingelse", 201, "access_denied"),  # not a usable category
        ("accessgrantedx", 999, "other"),
        ("somethingelse", 999, "other"),
        (None, 999, "other"),
        (5, 100, "access_granted"),  # not text
        (["accessgranted"], 999, "other"),
        (True, 999, "other"),
        ({"name": "accessgranted"}, 200, "access_denied"),
    ],
)
def test_intserv_category(raw_category: Any, code: int, expected: str) -> None:
    assert intserv.category(raw_category, code, CODES) == expected


def test_intserv_from_api_takes_the_events_category_and_the_tables_label() -> None:
    raw = {
        "event_time": "2024-03-04T08:00:05Z",
        "sequence_id": 1,
        "type": 104,
        "system_id": "s",
        "category": "accessgranted",
    }
    stale = {104: CodeInfo("Access granted (exit button)", "exit_request")}
    record = intserv.from_api(raw, stale)
    assert (record.category, record.label) == ("access_granted", "Access granted (exit button)")
    assert intserv.from_api({**raw, "category": ["x"]}, stale).category == "exit_request"
