"""Webhook verification and answers (pure): every hostile request of the contract."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from syncd.webhooks import (
    MAX_BODY,
    TOLERANCE_S,
    answer,
    parse_notifications,
    parse_timestamp,
    retry_delay,
    signature,
    store_backoff,
)

SECRET = b"whsec_unit"
NOW = 1_800_000_000.0
BODY = orjson.dumps(
    [
        {"action": "CREATE", "resource_type": "Event", "resource_id": 7, "ack_token": "a1"},
        {"action": "UPDATE", "resource_type": "Event", "resource_id": "8", "ack_token": "a2"},
    ]
)


def signed(body: bytes, timestamp: str, secret: bytes = SECRET) -> dict[str, str]:
    return {"Timestamp": timestamp, "Signature": signature(secret, timestamp, body)}


def test_a_verified_body_is_accepted_with_its_notification_count() -> None:
    result = answer(SECRET, signed(BODY, str(int(NOW))), BODY, NOW)
    assert (result.status, result.body) == (200, {"accepted": 2})
    assert [n.resource_id for n in result.notifications] == [7, 8]
    assert all(n.fetchable for n in result.notifications)


def test_an_iso_timestamp_and_an_uppercase_signature_are_accepted() -> None:
    stamp = datetime.fromtimestamp(NOW - 10, UTC).isoformat().replace("+00:00", "Z")
    headers = signed(BODY, stamp)
    headers["Signature"] = headers["Signature"].upper()
    assert answer(SECRET, headers, BODY, NOW).status == 200


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no headers"),
        ({"Timestamp": str(int(NOW))}, "no signature"),
        ({"Signature": signature(SECRET, str(int(NOW)), BODY)}, "no timestamp"),
        (signed(BODY, str(int(NOW)), b"another secret"), "wrong secret"),
        (signed(BODY + b" ", str(int(NOW))), "signature of another body"),
        ({"Timestamp": str(int(NOW)), "Signature": "zz\u00e9"}, "not hex"),
        (signed(BODY, str(int(NOW - TOLERANCE_S - 1))), "stale"),
        (signed(BODY, str(int(NOW + TOLERANCE_S + 1))), "from the future"),
        (signed(BODY, "yesterday"), "timestamp unreadable"),
        (signed(BODY, "nan"), "timestamp not finite"),
    ],
)
def test_bad_signatures_and_timestamps_get_401(headers: dict[str, str], why: str) -> None:
    assert answer(SECRET, headers, BODY, NOW).status == 401, why


def test_the_window_holds_either_way_at_its_edge() -> None:
    for offset in (-TOLERANCE_S, TOLERANCE_S):
        stamp = str(int(NOW + offset))
        assert answer(SECRET, signed(BODY, stamp), BODY, NOW).status == 200


@pytest.mark.parametrize(
    "body",
    [b"not json", b'"a string"', b"42", b"[1, 2]", b'[{"ok": 1}, "x"]', b"", b"\xff\xfe"],
)
def test_a_body_that_is_not_an_array_of_notifications_gets_400(body: bytes) -> None:
    assert answer(SECRET, signed(body, str(int(NOW))), body, NOW).status == 400


def test_a_single_object_is_a_list_of_one() -> None:
    body = orjson.dumps({"action": "CREATE", "resource_type": "Event", "resource_id": 3})
    result = answer(SECRET, signed(body, str(int(NOW))), body, NOW)
    assert (result.status, result.body) == (200, {"accepted": 1})


def test_unknown_source_or_no_secret_gets_404_and_a_too_large_body_413() -> None:
    assert answer(None, signed(BODY, str(int(NOW))), BODY, NOW).status == 404
    assert answer(SECRET, {}, None, NOW).status == 413
    big = b" " * (MAX_BODY + 1)
    assert answer(SECRET, signed(big, str(int(NOW))), big, NOW).status == 413


def test_only_positive_integer_resource_ids_are_fetched() -> None:
    items = [
        {"action": "CREATE", "resource_type": "Event", "resource_id": rid}
        for rid in (0, -1, True, 1.5, "../../admin", "12a", "http://evil/1", None, "٣")
    ]
    items += [
        {"action": "DESTROY", "resource_type": "Event", "resource_id": 5},
        {"action": "CREATE", "resource_type": "PersonCredential", "resource_id": 6},
        {"action": "CREATE", "resource_type": "Event", "resource_id": 9, "resource": "http://x"},
    ]
    notes = parse_notifications(orjson.dumps(items))
    assert notes is not None
    assert [n.resource_id for n in notes if n.fetchable] == [9]
    assert [n.resource_id for n in notes[-3:]] == [5, 6, 9]


def test_timestamps_parse_as_unix_seconds_or_iso_8601() -> None:
    assert parse_timestamp("1800000000") == NOW
    assert parse_timestamp(" 1800000000.5 ") == NOW + 0.5
    assert (
        parse_timestamp("2027-01-15T08:00:00Z") == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    )
    assert parse_timestamp("2027-01-15T09:00:00+01:00") == parse_timestamp("2027-01-15T08:00:00")
    assert parse_timestamp("soon") is None
    assert parse_timestamp("inf") is None


def test_fetch_and_ack_rounds_end_after_the_last_delay() -> None:
    delays = (0.2, 0.5, 1.0)
    assert [retry_delay(n, delays) for n in range(1, 5)] == [0.2, 0.5, 1.0, None]
    assert retry_delay(0, delays) is None  # nothing failed: no round to wait for


def test_the_write_backoff_doubles_to_its_cap_and_never_gives_up() -> None:
    waits = [store_backoff(n, 0.5, 30.0) for n in range(1, 10)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert store_backoff(10_000, 0.5, 30.0) == 30.0
