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


def day(text: str) -> date:
    return date.fromisoformat(text)


def test_stockholm_change_days_are_cut_at_the_change_and_at_utc_midnight() -> None:
    assert days_on("Europe/Stockholm", "2026-03-29", "2026-10-25") == [
        # local 00:00-01:00 is the 28th in UTC; 02:00 CET becomes 03:00 CEST at 01:00Z
        LocalDay(
            day("2026-03-29"),
            day("2026-03-28"),
            utc("2026-03-28 23:00"),
            utc("2026-03-29 00:00"),
            3600,
        ),
        LocalDay(
            day("2026-03-29"),
            day("2026-03-29"),
            utc("2026-03-29 00:00"),
            utc("2026-03-29 01:00"),
            3600,
        ),
        LocalDay(
            day("2026-03-29"),
            day("2026-03-29"),
            utc("2026-03-29 01:00"),
            utc("2026-03-29 22:00"),
            7200,
        ),
        # 03:00 CEST becomes 02:00 CET at 01:00Z: a 25-hour local day
        LocalDay(
            day("2026-10-25"),
            day("2026-10-24"),
            utc("2026-10-24 22:00"),
            utc("2026-10-25 00:00"),
            7200,
        ),
        LocalDay(
            day("2026-10-25"),
            day("2026-10-25"),
            utc("2026-10-25 00:00"),
            utc("2026-10-25 01:00"),
            7200,
        ),
        LocalDay(
            day("2026-10-25"),
            day("2026-10-25"),
            utc("2026-10-25 01:00"),
            utc("2026-10-25 23:00"),
            3600,
        ),
    ]


def test_new_york_changes_at_two_local() -> None:
    assert days_on("America/New_York", "2026-03-08", "2026-11-01") == [
        LocalDay(
            day("2026-03-08"),
            day("2026-03-08"),
            utc("2026-03-08 05:00"),
            utc("2026-03-08 07:00"),
            -18000,
        ),
        LocalDay(
            day("2026-03-08"),
            day("2026-03-08"),
            utc("2026-03-08 07:00"),
            utc("2026-03-09 00:00"),
            -14400,
        ),
        LocalDay(
            day("2026-03-08"),
            day("2026-03-09"),
            utc("2026-03-09 00:00"),
            utc("2026-03-09 04:00"),
            -14400,
        ),
        LocalDay(
            day("2026-11-01"),
            day("2026-11-01"),
            utc("2026-11-01 04:00"),
            utc("2026-11-01 06:00"),
            -14400,
        ),
        LocalDay(
            day("2026-11-01"),
            day("2026-11-01"),
            utc("2026-11-01 06:00"),
            utc("2026-11-02 00:00"),
            -18000,
        ),
        LocalDay(
            day("2026-11-01"),
            day("2026-11-02"),
            utc("2026-11-02 00:00"),
            utc("2026-11-02 05:00"),
            -18000,
        ),
    ]


def test_a_zone_without_changes_is_cut_at_both_midnights() -> None:
    days = list(local_days("Asia/Kolkata", utc("2026-01-01 00:00"), utc("2026-01-02 00:00")))
    assert days == [
        # 00:00Z is 05:30 local; local midnight is 18:30Z the day before
        LocalDay(
            day("2026-01-01"),
            day("2026-01-01"),
            utc("2026-01-01 00:00"),
            utc("2026-01-01 18:30"),
            19800,
        ),
        LocalDay(
            day("2026-01-02"),
            day("2026-01-01"),
            utc("2026-01-01 18:30"),
            utc("2026-01-02 00:00"),
            19800,
        ),
    ]


def test_utc_is_one_row_a_day() -> None:
    days = list(local_days("UTC", utc("2026-01-01 00:00"), utc("2026-01-03 00:00")))
    assert [(d.day, d.utc_date, d.valid_from, d.valid_until) for d in days] == [
        (day("2026-01-01"), day("2026-01-01"), utc("2026-01-01 00:00"), utc("2026-01-02 00:00")),
        (day("2026-01-02"), day("2026-01-02"), utc("2026-01-02 00:00"), utc("2026-01-03 00:00")),
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
            assert instant.date() == d.utc_date
            assert local.utcoffset() == timedelta(seconds=d.utc_offset_seconds)


def test_transitions_are_found_to_the_second() -> None:
    changes = transitions("Europe/Stockholm", utc("2026-01-01 00:00"), utc("2027-01-01 00:00"))
    assert changes == [
        (utc("2026-01-01 00:00"), 3600),
        (utc("2026-03-29 01:00"), 7200),
        (utc("2026-10-25 01:00"), 3600),
    ]
