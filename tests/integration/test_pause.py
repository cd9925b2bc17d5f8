"""``syncd pause`` / ``syncd resume``: kept in ``sync_state``, obeyed by every command.

Real databases (PostgreSQL and SQLite) and a DoorFlow simulator on loopback
that counts the requests it gets: a paused source gets none.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from syncd.config import Secret, SourceConfig
from syncd.db import pauses
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.metrics import Metrics
from syncd.simulators import DoorFlowSimulator
from tests.integration.test_cli import assert_one_clear_line, syncd

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database of each kind, as a URL for the command line."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_engine")  # empties the tables
        url: str = request.getfixturevalue("pg_url")
        return url
    return request.getfixturevalue("sqlite_url")


def _config(tmp_path: Path, base_url: str, *names: str) -> Path:
    text = "".join(
        f'[[sources]]\nname = "{name}"\nkind = "doorflow"\nbase_url = "{base_url}"\n'
        'token_env = "DF_TOKEN"\ninterval = 1\n'
        f'start = "{(datetime.now(UTC) - timedelta(days=3)).isoformat()}"\n'
        for name in names
    )
    path = tmp_path / "syncd.toml"
    path.write_text(text)
    return path


def test_pause_resume_in_the_store(store: Store) -> None:
    assert pauses.paused(store, "hq") is None
    held = pauses.pause(store, "hq", reason="  vendor maintenance  ", by="ops@box", now=NOW)
    assert (held.source, held.at, held.by, held.reason) == (
        "hq",
        NOW,
        "ops@box",
        "vendor maintenance",
    )
    # A source that never ran got its row; its cursor is untouched (empty).
    assert store.load_state("hq").cursor == {}
    assert store.load_state("hq").paused_at == NOW
    # Pausing again keeps the first time, updates who and why.
    again = pauses.pause(store, "hq", reason=None, by="other@box", now=NOW + timedelta(hours=1))
    assert (again.at, again.by, again.reason) == (NOW, "other@box", None)
    was = pauses.resume(store, "hq", NOW + timedelta(hours=2))
    assert was is not None
    assert was.at == NOW
    assert pauses.paused(store, "hq") is None
    assert pauses.resume(store, "hq", NOW) is None  # not paused: nothing to do
    assert "hq" in pauses.known_sources(store)


def test_a_paused_pass_sends_no_request_and_counts_as_skipped(store: Store) -> None:
    with DoorFlowSimulator(seed=3, history=50) as sim:
        config = SourceConfig(
            name="hq",
            kind="doorflow",
            base_url=sim.base_url,
            token=Secret(sim.token),
            start=datetime.now(UTC) - timedelta(days=40),
        )
        pauses.pause(store, "hq", reason="quiet", by="t@h", now=NOW)
        before = sim.stats.get("requests", 0)
        result = run_pass(store, config)
        assert (result.ok, result.skipped, result.paused) == (True, True, True)
        assert sim.stats.get("requests", 0) == before
        metrics = Metrics()
        metrics.add_source("hq", "doorflow")
        assert metrics.registry.get_sample_value("syncd_source_paused", {"source": "hq"}) == 0
        metrics.pass_finished(result, 0, NOW)
        assert metrics.registry.get_sample_value("syncd_source_paused", {"source": "hq"}) == 1
        assert (
            metrics.registry.get_sample_value(
                "syncd_passes_total", {"source": "hq", "result": "skipped"}
            )
            == 1
        )
        pauses.resume(store, "hq", NOW)
        resumed = run_pass(store, config)
        assert resumed.ok
        assert not resumed.skipped
        assert not resumed.paused
        assert resumed.written.inserted == len(sim.truth(listable=True))
        metrics.pass_finished(resumed, 0, NOW)
        assert metrics.registry.get_sample_value("syncd_source_paused", {"source": "hq"}) == 0


def test_the_commands_obey_a_pause(backend_url: str, tmp_path: Path) -> None:
    with DoorFlowSimulator(seed=5, history=30) as sim:
        config = _config(tmp_path, sim.base_url, "hq", "branch")
        env = {"DF_TOKEN": sim.token}
        base = ("--config", str(config), "--database-url", backend_url)

        # pause and resume need no secret
        paused = syncd(*base, "pause", "hq", "--reason", "vendor asked for quiet")
        assert paused.returncode == 0, paused.stderr
        assert "hq: paused since" in paused.stdout
        assert "vendor asked for quiet" in paused.stdout

        before = sim.stats.get("requests", 0)
        sync = syncd(*base, "sync", env=env)
        assert sync.returncode == 0, sync.stderr
        assert "hq: paused" in sync.stdout
        assert "branch: ok" in sync.stdout
        branch_requests = sim.stats.get("requests", 0) - before
        assert branch_requests >= 1
        only_hq = syncd(*base, "sync", "--source", "hq", env=env)
        assert only_hq.returncode == 0
        assert "hq: paused" in only_hq.stdout
        assert sim.stats.get("requests", 0) - before == branch_requests  # none for hq

        since = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        backfill = syncd(*base, "backfill", "--source", "hq", "--since", since, env=env)
        assert_one_clear_line(backfill, "hq is paused", "syncd resume hq")
        reconcile = syncd(*base, "reconcile", "--source", "hq", env=env)
        assert_one_clear_line(reconcile, "hq is paused", "syncd resume hq")
        assert sim.stats.get("requests", 0) - before == branch_requests

        status = syncd(*base, "status", "--json", env=env)  # (status reads the config)
        assert status.returncode == 0, status.stderr
        rows = {r["source"]: r for r in orjson.loads(status.stdout)["sources"]}
        assert rows["hq"]["paused_reason"] == "vendor asked for quiet"
        assert "@" in rows["hq"]["paused_by"]
        assert rows["hq"]["paused_at"] is not None
        assert rows["branch"]["paused_at"] is None
        text = syncd(*base, "status", env=env)
        assert "hq paused since" in text.stdout
        assert "vendor asked for quiet" in text.stdout

        resumed = syncd(*base, "resume", "hq")
        assert resumed.returncode == 0, resumed.stderr
        assert "hq: resumed" in resumed.stdout
        again = syncd(*base, "resume", "hq")
        assert again.returncode == 0
        assert "not paused" in again.stdout
        sync = syncd(*base, "sync", "--source", "hq", env=env)
        assert sync.returncode == 0
        assert "hq: ok" in sync.stdout


def test_an_unknown_source_is_one_line(backend_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9", "hq")
    base = ("--config", str(config), "--database-url", backend_url)
    assert_one_clear_line(syncd(*base, "pause", "hqq"), "unknown source 'hqq'")
    assert_one_clear_line(syncd(*base, "resume", "nowhere"), "unknown source 'nowhere'")


def test_a_source_only_the_database_knows_can_be_paused(backend_url: str, tmp_path: Path) -> None:
    # Another replica's config has it: its sync_state row is enough.
    config = _config(tmp_path, "http://127.0.0.1:9", "hq")
    engine = sa.create_engine(backend_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        Store(engine).record_failure("elsewhere", "x", NOW)
    finally:
        engine.dispose()
    base = ("--config", str(config), "--database-url", backend_url)
    result = syncd(*base, "pause", "elsewhere")
    assert result.returncode == 0, result.stderr


def test_a_pause_stops_a_running_backfill_at_the_next_window(store: Store) -> None:
    from syncd.backfill import run_backfill

    with DoorFlowSimulator(seed=7, history=120, history_days=4) as sim:
        config = SourceConfig(
            name="hq", kind="doorflow", base_url=sim.base_url, token=Secret(sim.token)
        )
        until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        since = until - timedelta(days=4)

        def pause_after_the_first(_done: object) -> None:
            pauses.pause(store, "hq", reason="quiet", by="t@h", now=NOW)

        first = run_backfill(
            store, config, since, until, timedelta(days=1), on_window=pause_after_the_first
        )
        assert first.stopped
        assert not first.complete
        requests = sim.stats.get("requests", 0)
        pauses.resume(store, "hq", NOW)
        second = run_backfill(store, config, since, until, timedelta(days=1))
        assert second.complete
        assert sim.stats.get("requests", 0) > requests
