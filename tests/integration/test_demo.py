"""``syncd demo`` end to end: a real process, real simulators, SQLite and PostgreSQL.

Every figure the report prints that can be checked against the database is:
per-source totals, the denied total, the newest event's time; the progress
lines' "new" counts add up to the rows stored; a second run on the same
database continues the timeline without duplicating anything.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.db.engine import create_engine
from syncd.db.schema import events, rejected_events, sync_state

DEMO_SOURCES = ("demo-doorflow", "demo-intserv")
SECTIONS = (
    "Events by category",
    "Latest events",
    "Busiest doors",
    "Denied attempts by reason",
    "Rejected (malformed) records",
    "Handled: ",
    "Nothing lost, nothing twice",
    "Your data is in ",
    "Try:  ",
)
PASS_LINE = re.compile(
    r"^pass (\d+)/(\d+)\s+(demo-\S+)\s+([\d,]+) new\s+([\d,]+) updated\s+([\d,]+) unchanged"
    r"\s+([\d,]+) rejected",
    re.MULTILINE,
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def syncd_demo(
    *args: str, database_url: str | None, cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    url = ["--database-url", database_url] if database_url else []
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "syncd.cli", *url, "demo", *args],
        env=_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, time.monotonic() - started


def stored(engine: sa.Engine) -> dict[str, int]:
    query = (
        sa.select(events.c.source, sa.func.count(), sa.func.count(sa.distinct(events.c.event_key)))
        .where(events.c.source.in_(DEMO_SOURCES))
        .group_by(events.c.source)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    for source, count, distinct in rows:
        assert count == distinct, f"{source}: duplicate event keys"
    return {source: int(count) for source, count, _ in rows}


def printed_totals(stdout: str) -> dict[str, int]:
    """The ``total`` row of "Events by category" (the first three-number total)."""
    match = re.search(r"^\s*total\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s*$", stdout, re.MULTILINE)
    assert match, stdout
    doorflow, intserv, both = (_number(g) for g in match.groups())
    assert doorflow + intserv == both
    return {"demo-doorflow": doorflow, "demo-intserv": intserv}


def new_per_source(stdout: str) -> dict[str, int]:
    new = dict.fromkeys(DEMO_SOURCES, 0)
    for match in PASS_LINE.finditer(stdout):
        new[match.group(3)] += _number(match.group(4))
    return new


def check_report(result: subprocess.CompletedProcess[str], engine: sa.Engine, passes: int) -> None:
    """The run succeeded and its report agrees with the database."""
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for section in SECTIONS:
        assert section in out, f"missing {section!r}:\n{out}"
    assert "Traceback" not in result.stderr
    assert "pass_finished" not in result.stderr, "info logs over the report"

    lines = PASS_LINE.findall(out)
    assert [(int(n), int(of), source) for n, of, source, *_ in lines] == [
        (n, passes, source) for n in range(1, passes + 1) for source in DEMO_SOURCES
    ]

    counts = stored(engine)
    assert printed_totals(out) == counts
    with engine.connect() as conn:
        denied = conn.execute(
            sa.select(sa.func.count()).where(
                events.c.source.in_(DEMO_SOURCES), events.c.category == "access_denied"
            )
        ).scalar_one()
        newest = conn.execute(
            sa.select(sa.func.max(events.c.occurred_at)).where(events.c.source.in_(DEMO_SOURCES))
        ).scalar_one()
        rejected = conn.execute(
            sa.select(sa.func.count()).where(rejected_events.c.source.in_(DEMO_SOURCES))
        ).scalar_one()
    denied_section = out[out.index("Denied attempts by reason") :]
    match = re.search(r"^\s*total\s+([\d,]+)\s*$", denied_section, re.MULTILINE)
    assert match, denied_section
    assert _number(match.group(1)) == denied
    latest_section = out[out.index("Latest events") :]
    first = re.search(r"^\s*(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+demo-", latest_section, re.M)
    # SQLite's max() gives back the stored text, PostgreSQL a datetime.
    shown = newest[:19] if isinstance(newest, str) else newest.strftime("%Y-%m-%d %H:%M:%S")
    assert first, latest_section
    assert first.group(1) == shown
    assert f"with the reason: {rejected:,}" in out

    handled = re.search(r"Handled: (\d+) retries after faults \((\d+) x 429.*?(\d+) x 5xx", out)
    assert handled, out
    assert int(handled.group(2)) >= 1
    assert int(handled.group(3)) >= 1
    assert re.search(r"(\d+) late events picked up", out)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite: a file that does not exist yet (the demo migrates it). PostgreSQL:
    the session's migrated database, without earlier demo rows."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/demo.db"
        return
    url: str = request.getfixturevalue("pg_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in (events, rejected_events, sync_state):
            conn.execute(sa.delete(table).where(table.c.source.in_(DEMO_SOURCES)))
    engine.dispose()
    yield url


def test_demo_runs_reports_and_reruns_without_duplicates(database: str, tmp_path: Path) -> None:
    first, took = syncd_demo("--passes", "3", database_url=database, cwd=tmp_path)
    assert took < 60, f"the demo took {took:.1f}s"
    engine = create_engine(database)
    try:
        check_report(first, engine, passes=3)
        after_first = stored(engine)
        assert after_first == new_per_source(first.stdout)
        assert "back online with" in first.stdout
        assert "Simulated time starts at" in first.stdout

        second, took = syncd_demo("--passes", "3", database_url=database, cwd=tmp_path)
        assert took < 60, f"the rerun took {took:.1f}s"
        check_report(second, engine, passes=3)
        assert "continuing its timeline at step 2" in second.stdout
        for match in PASS_LINE.finditer(second.stdout):
            if match.group(1) == "1":  # the replayed world: everything already there
                assert _number(match.group(4)) == 0, match.group(0)
        after_second = stored(engine)
        new = new_per_source(second.stdout)
        assert all(new[s] > 0 for s in DEMO_SOURCES)
        assert after_second == {s: after_first[s] + new[s] for s in DEMO_SOURCES}
    finally:
        engine.dispose()


def test_demo_defaults_to_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    result, took = syncd_demo("--passes", "1", database_url=None, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < 60
    # The demo's own database (DESIGN.md "Command line"), never a real one.
    assert (tmp_path / "syncd-demo.db").is_file()
    assert not (tmp_path / "syncd.db").exists()
    assert "Your data is in sqlite:///syncd-demo.db" in result.stdout
    assert 'sqlite3 syncd-demo.db "SELECT category, count(*) FROM events' in result.stdout


def test_demo_on_postgres_names_psql_without_the_driver(pg_url: str, tmp_path: Path) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        for table in (events, rejected_events, sync_state):
            conn.execute(sa.delete(table).where(table.c.source.in_(DEMO_SOURCES)))
    engine.dispose()
    result, _ = syncd_demo("--passes", "1", database_url=pg_url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Your data is in postgresql://" in result.stdout
    assert "Try:  psql postgresql://" in result.stdout
    assert "+psycopg" not in result.stdout


def _pump(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str | None], threading.Thread]:
    """stdout lines as they come (None at the end), read by a thread."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_keep_running_polls_until_signalled_then_exits_0(
    signum: signal.Signals, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    args = ["--database-url", url, "demo", "--passes", "1", "--keep-running", "--interval", "0.2"]
    seen: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", *args],
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        lines, reader = _pump(proc)
        try:
            deadline = time.monotonic() + 60
            while not any(line.startswith("poll 2  demo-intserv") for line in seen):
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                assert line is not None, "".join(seen)
                seen.append(line)
            assert any("Your data is in" in line for line in seen)
            proc.send_signal(signum)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
        while (line := lines.get(timeout=5)) is not None:
            seen.append(line)
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    assert "Stopped after" in seen[-1]

    output = "".join(seen)
    polled = sum(
        _number(m.group(1))
        for m in re.finditer(r"^poll \d+\s+demo-\S+\s+([\d,]+) new", output, re.M)
    )
    assert polled > 0
    engine = create_engine(url)
    try:
        assert sum(stored(engine).values()) == sum(new_per_source(output).values()) + polled
    finally:
        engine.dispose()
