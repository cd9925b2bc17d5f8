"""Backfill window arithmetic: pure functions, no clock, no I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.backfill import counted, covered, format_window, parse_window, windows
from syncd.errors import SyncdError
from syncd.sources.base import Page

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1d", 86400),
        ("6h", 21600),
        ("3600s", 3600),
        ("90m", 5400),
        ("2D", 172800),
        (" 7d ", 604800),
    ],
)
def test_durations_are_read(text: str, seconds: int) -> None:
    assert parse_window(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1", "d", "0d", "-1h", "1.5h", "1w", "1h30m", "six hours"])
def test_bad_durations_are_one_clear_error(text: str) -> None:
    with pytest.raises(SyncdError, match="is not a positive duration such as 1d, 6h, 90m or 3600s"):
        parse_window(text)


def test_windows_are_aligned_to_since_and_the_last_is_clipped() -> None:
    since = datetime(2026, 1, 1, 6, 30, tzinfo=UTC)
    until = datetime(2026, 1, 4, 12, 0, tzinfo=UTC)  # --until in the middle of a day
    spans = windows(since, until, timedelta(days=1))
    assert spans == [
        (since, since + timedelta(days=1)),
        (since + timedelta(days=1), since + timedelta(days=2)),
        (since + timedelta(days=2), since + timedelta(days=3)),
        (since + timedelta(days=3), until),
    ]


def test_windows_across_a_dst_change_are_utc_durations() -> None:
    # Europe/Berlin springs forward on 2026-03-29: a local day is 23 hours,
    # but backfill windows are UTC durations aligned to --since.
    berlin = ZoneInfo("Europe/Berlin")
    since = datetime(2026, 3, 28, 0, 0, tzinfo=berlin).astimezone(UTC)
    until = datetime(2026, 3, 31, 0, 0, tzinfo=berlin).astimezone(UTC)
    spans = windows(since, until, parse_window("1d"))
    assert [end - start for start, end in spans[:-1]] == [timedelta(hours=24)] * 2
    assert spans[-1][1] - spans[-1][0] == timedelta(hours=23)  # only the clip is shorter
    assert [start.hour for start, _ in spans] == [23, 23, 23]  # UTC midnight-of-Berlin, fixed


def test_an_empty_or_reversed_range_is_an_error() -> None:
    with pytest.raises(SyncdError, match="--since must be before --until"):
        windows(T0, T0, timedelta(days=1))
    with pytest.raises(SyncdError, match="--since must be before --until"):
        windows(T0, T0 - timedelta(seconds=1), timedelta(days=1))


def test_too_many_windows_is_an_error_naming_the_window() -> None:
    with pytest.raises(SyncdError, match="--window 1s makes 172800 windows"):
        windows(T0, T0 + timedelta(days=2), timedelta(seconds=1))


@given(
    start=st.integers(0, 10**6),
    length=st.integers(1, 10**7),
    step=st.integers(1, 10**6),
)
def test_windows_tile_the_range_exactly(start: int, length: int, step: int) -> None:
    since = T0 + timedelta(seconds=start)
    until = since + timedelta(seconds=length)
    delta = timedelta(seconds=step)
    if -(-length // step) > 100_000:
        return
    spans = windows(since, until, delta)
    assert spans[0][0] == since
    assert spans[-1][1] == until
    for (_, end), (start_next, _) in itertools.pairwise(spans):
        assert end == start_next
    assert all(end - begin == delta for begin, end in spans[:-1])
    assert timedelta(0) < spans[-1][1] - spans[-1][0] <= delta


@pytest.mark.parametrize(
    ("seconds", "text"), [(86400, "1d"), (21600, "6h"), (5400, "90m"), (61, "61s")]
)
def test_windows_print_in_their_shortest_exact_form(seconds: int, text: str) -> None:
    assert format_window(timedelta(seconds=seconds)) == text


def h(n: int) -> datetime:
    return T0 + timedelta(hours=n)


def test_covered_by_the_union_of_finished_windows() -> None:
    assert covered((h(0), h(24)), [(h(0), h(24))])
    assert covered((h(6), h(12)), [(h(0), h(24))])
    assert covered((h(0), h(24)), [(h(12), h(24)), (h(0), h(6)), (h(6), h(12))])
    assert not covered((h(0), h(24)), [(h(0), h(6)), (h(7), h(24))])  # a gap
    assert not covered((h(0), h(24)), [(h(0), h(23))])
    assert not covered((h(0), h(24)), [])
    assert not covered((h(0), h(24)), [(h(1), h(30))])


def test_counted_wraps_each_position_with_its_page_size() -> None:
    """(Records in and out of the window are counted in the integration tests.)"""
    pages = [Page([], [], {"pass": {"page": 2}}), Page([], [], {"done": True})]
    out = list(counted(iter(pages), T0, T0 + timedelta(days=1)))
    assert [p.cursor for p in out] == [
        {"position": {"pass": {"page": 2}}, "events": 0},
        {"position": {"done": True}, "events": 0},
    ]


def test_the_progress_bar_shows_windows_events_rate_and_eta() -> None:
    import io

    from rich.console import Console

    from syncd.backfill import WindowDone
    from syncd.backfill_progress import ProgressBar
    from syncd.db.backfills import WindowRow

    out = io.StringIO()
    bar = ProgressBar("hq", Console(file=out, force_terminal=True, width=160))
    rows = [
        WindowRow("hq", T0, T0 + timedelta(days=2), T0 + timedelta(days=i),
                  T0 + timedelta(days=i + 1), {}, 0, False, T0, T0 if i == 0 else None)
        for i in range(2)
    ]  # fmt: skip
    bar.start()
    bar.plan(rows)
    bar.page(Page([], [], {"position": {"done": True}, "events": 1234}))
    bar.window(WindowDone(T0 + timedelta(days=1), T0 + timedelta(days=2), 1234, reused=False))
    bar.stop()
    text = out.getvalue()
    assert "backfill hq" in text
    assert "2/2" in text  # one done before, one now
    assert "1234 events" in text
    assert "events/s" in text
    assert "ETA" in text
