"""A rotated refresh token whose save fails (the database refuses the write for a
moment): kept, the pass fails with one clear line, the next pass saves it first
and succeeds without a new authorization; no token in any byte printed, in the
pass's error or in ``sync_state.last_error``.

PostgreSQL: syncd connects as a role of its own whose UPDATE of the token
columns of ``sync_state`` is revoked for a moment. SQLite: a trigger refuses
the same write. The runtime is kept across passes, as the daemon keeps it.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.config import OAuthCredentials, Secret, SourceConfig
from syncd.db.engine import create_engine
from syncd.db.store import Store
from syncd.engine import SourceRuntime, run_pass
from syncd.logging import configure_logging
from syncd.simulators import DoorFlowSimulator
from tests.conftest import empty_tables

# Columns the restricted role may still update while the token columns are refused.
_OTHER_COLUMNS = (
    "cursor, last_success_at, last_error, last_error_at, consecutive_failures, "
    "updated_at, reconciled_at, pass_started_at, paused_at, paused_reason, paused_by"
)

Switch = Callable[[bool], None]


@pytest.fixture
def pg_role_store(pg_url: str) -> Iterator[tuple[Store, Switch]]:
    """A store connected as a fresh non-superuser role, and a switch for its token writes."""
    role = f"syncd_oauth_{uuid.uuid4().hex[:8]}"
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        conn.execute(f"GRANT TEMPORARY ON DATABASE {make_url(pg_url).database} TO {role}")

    def tokens_writable(allowed: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            if allowed:
                conn.execute(f"GRANT UPDATE ON sync_state TO {role}")
            else:
                conn.execute(f"REVOKE UPDATE ON sync_state FROM {role}")
                conn.execute(f"GRANT UPDATE ({_OTHER_COLUMNS}) ON sync_state TO {role}")

    admin_engine = create_engine(pg_url)
    empty_tables(admin_engine)
    admin_engine.dispose()
    engine = create_engine(make_url(pg_url).set(username=role).render_as_string(False))
    yield Store(engine), tokens_writable
    engine.dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


@pytest.fixture
def sqlite_switch_store(sqlite_url: str) -> Iterator[tuple[Store, Switch]]:
    engine = create_engine(sqlite_url)

    def tokens_writable(allowed: bool) -> None:
        with engine.begin() as conn:
            if allowed:
                conn.execute(sa.text("DROP TRIGGER refuse_tokens"))
            else:
                conn.execute(
                    sa.text(
                        "CREATE TRIGGER refuse_tokens BEFORE UPDATE OF refresh_token "
                        "ON sync_state BEGIN SELECT RAISE(ABORT, 'permission denied for "
                        "table sync_state'); END"
                    )
                )

    yield Store(engine), tokens_writable
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def switched(request: pytest.FixtureRequest) -> tuple[Store, Switch]:
    name = "pg_role_store" if request.param == "postgresql" else "sqlite_switch_store"
    value: tuple[Store, Switch] = request.getfixturevalue(name)
    return value


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_failed_save_keeps_the_token_and_prints_no_secret(
    switched: tuple[Store, Switch], log_format: str, tmp_path: Path
) -> None:
    store, tokens_writable = switched
    printed = io.StringIO()
    configure_logging("debug", json=log_format == "json", stream=printed)
    try:
        with DoorFlowSimulator(seed=9, history=30, token_expiry=1) as sim:
            oauth = OAuthCredentials(
                Secret(sim.oauth.client_id),
                Secret(sim.oauth.client_secret),
                Secret(sim.oauth.refresh_token),
            )
            config = SourceConfig(
                name="hq", kind="doorflow", base_url=sim.base_url, oauth=oauth, max_retries=2
            )
            with SourceRuntime.open(store, config) as runtime:
                first = run_pass(store, config, runtime=runtime)
                assert first.ok, first.error
                before = store.load_grant("hq")
                time.sleep(1.2)  # the access token expires: the next pass refreshes
                tokens_writable(False)
                failed = run_pass(store, config, runtime=runtime)
                tokens_writable(True)
                assert not failed.ok
                assert failed.error is not None
                assert "could not be saved" in failed.error
                assert "permission denied for table sync_state" in failed.error
                # Saves the kept token first; refreshes with it if its access
                # token went stale meanwhile (no invalid_grant: it was not lost).
                again = run_pass(store, config, runtime=runtime)
                assert again.ok, again.error
            after = store.load_grant("hq")
            stats = sim.stats
    finally:
        configure_logging("error", json=True)
    assert stats.get("invalid_grant", 0) == 0
    assert after.refresh_token != before.refresh_token
    secrets = [
        sim.oauth.refresh_token,
        sim.oauth.client_secret,
        before.refresh_token,
        before.access_token,
        after.refresh_token,
        after.access_token,
    ]
    output = printed.getvalue()
    assert "pass_failed" in output
    state = store.load_state("hq")
    texts = {"output": output, "error": failed.error, "last_error": state.last_error or ""}
    for where, text in texts.items():
        for secret in secrets:
            assert secret
            assert secret not in text, f"a token in {where}"
