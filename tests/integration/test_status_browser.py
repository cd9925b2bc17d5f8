"""The status page in a real browser: headless Chromium loads ``/`` from ``syncd run``.

Sources in every state (ok, failing, paused, never run, backfilling), one of
them carrying ``<script>`` in its error and one in its pause reason. The test
asserts on the DOM Chromium built, finds no console message, exception or
error log entry, checks that nothing scrolls sideways at 1280 and 390 px,
and keeps a screenshot of each width (path printed; ``SYNCD_ARTIFACTS`` or
``tmp/artifacts`` in the repository).

Chromium is the Debian package ``chromium`` (``scripts/test`` installs it).
Without it the test skips locally and fails in CI (``CI`` set).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from syncd.db.schema import backfill_windows, sources, sync_state
from syncd.simulators import DoorFlowSimulator
from tests.browser import Browser, chromium_path
from tests.integration.daemonhelpers import (
    free_port,
    http,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)
from tests.integration.test_cli import syncd

ROOT = Path(__file__).resolve().parents[2]
EVIL_ERROR = "VendorError: <script>document.title='pwned'</script> <b>bold</b>"
EVIL_REASON = "<script>alert('reason')</script> vendor maintenance"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/test installs the Debian package")
        pytest.skip("chromium is not installed (apt-get install chromium; scripts/test does)")
    with Browser(path) as browser:
        yield browser


def artifacts() -> Path:
    path = Path(os.environ.get("SYNCD_ARTIFACTS", ROOT / "tmp" / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_browser_reports_what_a_page_says(chromium: Browser, tmp_path: Path) -> None:
    """The collector itself: a page that logs and throws is caught (else a clean
    page below would prove nothing)."""
    noisy = tmp_path / "noisy.html"
    noisy.write_text("<p>x</p><script>console.error('boom'); undefined_call()</script>")
    with chromium.page() as page:
        page.open(noisy.as_uri(), 800)
        problems = " | ".join(page.problems)
    assert "console.error: boom" in problems
    assert "undefined_call" in problems


def _seed(engine: sa.Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        # A source another replica configures and has not run yet.
        conn.execute(
            sa.insert(sources),
            {
                "source": "lobby",
                "kind": "intserv",
                "timezone": "Europe/Stockholm",
                "business_hours_start": datetime(2000, 1, 1, 6).time(),
                "business_hours_end": datetime(2000, 1, 1, 21).time(),
                "updated_at": now,
            },
        )
        # One whose vendor put markup into its error.
        conn.execute(
            sa.insert(sync_state),
            {
                "source": "legacy",
                "cursor": {"watermark": "secret-cursor-internals"},
                "last_error": EVIL_ERROR,
                "last_error_at": now - timedelta(minutes=4),
                "last_success_at": now - timedelta(hours=5),
                "consecutive_failures": 3,
                "updated_at": now,
            },
        )
        since = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)
        conn.execute(
            sa.insert(backfill_windows),
            [
                {
                    "source": "hq",
                    "since": since,
                    "until": since + timedelta(days=8),
                    "window_start": since + timedelta(days=i),
                    "window_end": since + timedelta(days=i + 1),
                    "position": {},
                    "events": 120 * i if i < 3 else 0,
                    "created_at": now,
                    "updated_at": now,
                    "done_at": now if i < 3 else None,
                }
                for i in range(8)
            ],
        )


def test_the_status_page_in_chromium(
    chromium: Browser, pg_engine: sa.Engine, pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    with DoorFlowSimulator(seed=91, history=600, history_days=1, rate=2.0) as sim:
        config = write_config(
            tmp_path / "syncd.toml",
            port,
            [
                source_toml("hq", "doorflow", sim.base_url, token_env="T", interval=1),
                source_toml("branch", "doorflow", sim.base_url, token_env="T", interval=1),
                source_toml("broken", "doorflow", sim.base_url, token_env="BAD", interval=1),
                source_toml("quiet", "doorflow", sim.base_url, token_env="T", interval=1),
            ],
        )
        env = {"T": sim.token, "BAD": "not-the-token"}
        _seed(pg_engine)
        paused = syncd(
            "--config", str(config), "--database-url", pg_url, "pause", "quiet",
            "--reason", EVIL_REASON,
        )  # fmt: skip
        assert paused.returncode == 0, paused.stderr
        with ExitStack() as stack:
            daemon = stack.enter_context(running_daemon(config, pg_url, port, env))

            def states() -> dict[str, str]:
                status, body = http(daemon.url + "/api/v1/sources")
                assert status == 200
                return {s["source"]: s["state"] for s in orjson.loads(body)["sources"]}

            expected = {
                "branch": "ok",
                "broken": "failing",
                "hq": "ok",
                "legacy": "failing",
                "lobby": "never_run",
                "quiet": "paused",
            }
            wait_for(lambda: states() == expected, 60, f"states {expected}", every=0.5)

            shots = []
            page = stack.enter_context(chromium.page())
            for width in (1280, 390):
                page.open(daemon.url + "/", width)
                assert page.problems == [], page.problems
                rows = page.evaluate(
                    """[...document.querySelectorAll('tr.source')].map(tr => ({
                        source: tr.dataset.source,
                        state: tr.dataset.state,
                        badge: tr.querySelector('.badge').textContent,
                        chart: tr.querySelector('svg.chart title').textContent,
                        text: tr.innerText,
                    }))"""
                )
                assert {r["source"]: r["state"] for r in rows} == expected
                badges = {r["source"]: r["badge"] for r in rows}
                assert badges["lobby"] == "never run"
                assert badges["broken"] == "failing"
                assert badges["quiet"] == "paused"
                assert all("oldest first:" in r["chart"] for r in rows), rows
                assert all(len(r["chart"].split("oldest first: ")[1].split()) == 24 for r in rows)
                by_name = {r["source"]: r["text"] for r in rows}
                assert EVIL_ERROR in by_name["legacy"]  # shown as text, not run or parsed
                assert EVIL_REASON in by_name["quiet"]
                assert "backfilling 38%" in by_name["hq"]
                assert page.evaluate("document.querySelectorAll('script, td b').length") == 0
                assert page.evaluate("document.title") == "syncd status"
                backfill = page.evaluate(
                    "[...document.querySelectorAll('tr.backfill')].map(tr => tr.innerText)"
                )
                assert len(backfill) == 1
                assert "3 / 8" in backfill[0]
                html = page.evaluate("document.documentElement.outerHTML")
                assert "secret-cursor-internals" not in html
                assert sim.token not in html
                # Readable: nothing wider than the window (no sideways scrolling).
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                shot = page.screenshot(artifacts() / f"status-page-{width}.png")
                (artifacts() / f"status-page-{width}.html").write_text(html)
                shots.append(shot)
            (artifacts() / "api-v1-sources-hq.json").write_bytes(
                http(daemon.url + "/api/v1/sources/hq")[1]
            )
            print("\nstatus page screenshots:", *shots)
            assert all(s.stat().st_size > 10_000 for s in shots)
            assert daemon.stop() == 0
