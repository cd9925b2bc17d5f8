"""The local calendar behind the BI views: pure, from zoneinfo, checked by hand and by property."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from syncd.bi import CALENDAR_END, CALENDAR_START, LocalDay, local_days, transitions


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def days_on(zone: str, *wanted: str) -> list[LocalDay]:
    start, end = utc("2026-01-01 00:00:00"), utc("2027-01-01 00:00:00")
    return [d for d in local_days(zone, start, end) if d.day.isoformat() in wanted]


def test_stockholm_has_two_stretches_on_each_change_day() -> None:
    assert days_on("Europe/Stockholm", "2026-03-29", "2026-10-25") == [
        LocalDay(date(2026, 3, 29), utc("2026-03-28 23:00"), utc("2026-03-29 01:00"), 3600),
        LocalDay(date(2026, 3, 29), utc("2026-03-29 01:00"), utc("2026-03-29 22:00"), 7200),
        LocalDay(date(2026, 10, 25), utc("2026-10-24 22:00"), utc("2026-10-25 01:00"), 7200),
        LocalDay(date(2026, 10, 25), utc("2026-10-25 01:00"), utc("2026-10-25 23:00"), 3600),
    ]


def test_new_york_changes_at_two_local() -> None:
    assert days_on("America/New_York", "2026-03-08", "2026-11-01") == [
        LocalDay(date(2026, 3, 8), utc("2026-03-08 05:00"), utc("2026-03-08 07:00"), -18000),
        LocalDay(date(2026, 3, 8), utc("2026-03-08 07:00"), utc("2026-03-09 04:00"), -14400),
        LocalDay(date(2026, 11, 1), utc("2026-11-01 04:00"), utc("2026-11-01 06:00"), -14400),
        LocalDay(date(2026, 11, 1), utc("2026-11-01 06:00"), utc("2026-11-02 05:00"), -18000),
    ]


def test_a_zone_without_changes_is_one_stretch_a_day() -> None:
    days = list(local_days("Asia/Kolkata", utc("2026-01-01 00:00"), utc("2026-01-03 00:00")))
    assert days == [
        # 00:00Z is 05:30 local; local midnight is 18:30Z the day before
        LocalDay(date(2026, 1, 1), utc("2026-01-01 00:00"), utc("2026-01-01 18:30"), 19800),
        LocalDay(date(2026, 1, 2), utc("2026-01-01 18:30"), utc("2026-01-02 18:30"), 19800),
        LocalDay(date(2026, 1, 3), utc("2026-01-02 18:30"), utc("2026-01-03 00:00"), 19800),
    ]


@pytest.mark.parametrize(
    "zone",
    ["UTC", "Europe/Stockholm", "America/New_York", "Australia/Lord_Howe", "America/Havana"],
)
def test_the_calendar_tiles_the_span_and_agrees_with_zoneinfo(zone: str) -> None:
    from zoneinfo import ZoneInfo

    days = list(local_days(zone))
    assert days[0].valid_from == CALENDAR_START
    assert days[-1].valid_until == CALENDAR_END
    for before, after in itertools.pairwise(days):
        assert before.valid_until == after.valid_from  # no gap, no overlap
    tz = ZoneInfo(zone)
    for d in days[::97]:  # spot checks across 130 years, both ends of each stretch
        for instant in (d.valid_from, d.valid_until - timedelta(seconds=1)):
            local = instant.astimezone(tz)
            assert local.date() == d.day
            assert local.utcoffset() == timedelta(seconds=d.utc_offset_seconds)


def test_transitions_are_found_to_the_second() -> None:
    changes = transitions("Europe/Stockholm", utc("2026-01-01 00:00"), utc("2027-01-01 00:00"))
    assert changes == [
        (utc("2026-01-01 00:00"), 3600),
        (utc("2026-03-29 01:00"), 7200),
        (utc("2026-10-25 01:00"), 3600),
    ]
