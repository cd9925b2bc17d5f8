"""The status page and the API's JSON as pure functions of an overview."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta

from syncd.api import source_json
from syncd.db.overview import BackfillProgress, Overview, SourceOverview, hour_starts, source_state
from syncd.status_page import ago, bar_heights, chart, render

NOW = datetime(2026, 12, 7, 12, 30, 15, tzinfo=UTC)
EVIL = "<script>alert('x')</script>&\""


def _source(name: str = "hq", **changes: object) -> SourceOverview:
    values: dict[str, object] = {
        "source": name,
        "kind": "doorflow",
        "state": "ok",
        "last_success_at": NOW - timedelta(minutes=3),
        "last_error": None,
        "last_error_at": None,
        "consecutive_failures": 0,
        "newest_event_at": NOW - timedelta(minutes=5),
        "events": 1234,
        "rejected": 2,
        "events_last_24h": tuple(range(24)),
        "backfills": (),
    }
    values.update(changes)
    return SourceOverview(**values)  # type: ignore[arg-type]


def _overview(*sources: SourceOverview) -> Overview:
    return Overview(NOW, hour_starts(NOW), sources)


def test_hour_starts_are_the_last_24_whole_hours_oldest_first() -> None:
    hours = hour_starts(NOW)
    assert len(hours) == 24
    assert hours[-1] == datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert hours[0] == datetime(2026, 12, 6, 13, tzinfo=UTC)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hours))


def test_state_paused_over_failing_over_ok_and_never_run() -> None:
    assert source_state(True, 3, NOW, NOW) == "paused"
    assert source_state(False, 3, NOW, NOW) == "failing"
    assert source_state(False, 1, None, NOW) == "failing"
    assert source_state(False, 0, NOW, NOW) == "ok"
    assert source_state(False, 0, None, None) == "never_run"


def test_every_text_from_the_database_is_escaped() -> None:
    page = render(
        _overview(
            _source(
                EVIL,
                kind=EVIL,
                state="failing",
                last_error=EVIL,
                last_error_at=NOW,
                consecutive_failures=2,
            ),
            _source("quiet", state="paused", paused_at=NOW, paused_by=EVIL, paused_reason=EVIL),
        )
    )
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;" in page
    # Attributes too: no quote from the data ends one.
    for value in re.findall(r'(?:id|data-source)="([^"]*)"', page):
        assert "<" not in value


def test_the_page_has_a_row_a_state_and_a_chart_per_source() -> None:
    load = BackfillProgress(NOW - timedelta(days=9), NOW - timedelta(days=1), 3, 8, 500)
    page = render(
        _overview(
            _source("hq", backfills=(load,)),
            _source(
                "lobby",
                state="never_run",
                last_success_at=None,
                events=0,
                events_last_24h=(0,) * 24,
            ),
        )
    )
    assert page.count('class="source state-') == 2
    assert 'id="source-hq"' in page
    assert 'data-state="never_run"' in page
    assert ">never run<" in page
    assert page.count("<svg") == 2
    assert page.count("<path") == 2  # the bars of each chart, one path
    assert "Backfills in progress" in page
    assert "38%" in page  # 3 of 8 windows
    assert "http://" not in page
    assert "https://" not in page


def test_chart_scales_to_the_busiest_hour() -> None:
    hours = hour_starts(NOW)
    assert bar_heights((0,) * 22 + (1, 10)) == [0.0] * 22 + [3.4, 34.0]
    assert bar_heights((0, 1000, 1)) == [0.0, 34.0, 1.0]  # a quiet hour still shows
    svg = chart((0,) * 23 + (10,), hours)
    (path,) = re.findall(r'<path d="([^"]*)"', svg)
    assert path == "M231 1.0h8V35h-8Z"  # one bar, the last hour, full height
    assert "10 in all" in svg
    assert "oldest first: " + "0 " * 23 + "10" in svg


def test_ago() -> None:
    assert ago(None) == "-"
    assert ago(5) == "5s"
    assert ago(600) == "10m"
    assert ago(3 * 3600) == "3.0h"
    assert ago(3 * 86400) == "3.0d"


def test_the_json_has_exactly_the_contract_fields() -> None:
    load = BackfillProgress(NOW - timedelta(days=9), NOW - timedelta(days=1), 3, 8, 500)
    document = source_json(_source(backfills=(load,), paused_at=NOW, paused_by="a@b"))
    assert list(document) == [
        "source", "kind", "state", "paused_reason", "last_success_at", "last_error",
        "last_error_at", "consecutive_failures", "newest_event_at", "events", "rejected",
        "events_last_24h", "backfills",
    ]  # fmt: skip
    assert document["last_success_at"] == "2026-12-07T12:27:15Z"
    assert document["events_last_24h"] == list(range(24))
    assert document["backfills"] == [
        {
            "since": "2026-11-28T12:30:15Z",
            "until": "2026-12-06T12:30:15Z",
            "windows_done": 3,
            "windows_total": 8,
            "events": 500,
        }
    ]
