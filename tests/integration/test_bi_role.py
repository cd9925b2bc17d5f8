"""``syncd bi-role`` on a real PostgreSQL: the role reads every view, writes nothing, no secrets."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.bi import sync_sources
from syncd.bi_role import scram_verifier
from syncd.config import SourceConfig
from syncd.db.store import Store
from tests.factories import event
from tests.integration.test_cli import syncd

VIEWS = (
    "events_local",
    "door_activity_daily",
    "attendance_daily",
    "denied_access",
    "repeated_denials",
    "after_hours_access",
    "door_state_latest",
    "sync_health",
)
PASSWORD = "s3cret-'quoted'-%s"
NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def dsn(url: str, user: str | None = None) -> str:
    plain = make_url(url).set(drivername="postgresql")
    if user is not None:
        plain = plain.set(username=user, password=PASSWORD)
    return plain.render_as_string(hide_password=False)


@pytest.fixture
def role(pg_engine: sa.Engine, pg_url: str) -> Iterator[str]:
    """A unique role name (roles are cluster-wide), dropped with its grants afterwards."""
    name = f"syncd_bi_{uuid.uuid4().hex[:8]}"
    store = Store(pg_engine)
    store.write_page("hq", [event(1)], [], {"page": 1}, NOW)
    store.save_refresh_token("hq", "rt-do-not-show", NOW)
    sync_sources(pg_engine, [SourceConfig(name="hq", kind="doorflow", base_url="http://x")], NOW)
    yield name
    with psycopg.connect(dsn(pg_url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if exists:
            conn.execute(f'DROP OWNED BY "{name}"')
            conn.execute(f'DROP ROLE "{name}"')


def apply(pg_url: str, role: str) -> subprocess.CompletedProcess[str]:
    return syncd(
        "bi-role",
        "--role",
        role,
        "--apply",
        env={"SYNCD_DATABASE_URL": pg_url, "SYNCD_BI_PASSWORD": PASSWORD},
    )


def check_read_only_role(pg_url: str, role: str) -> None:
    with psycopg.connect(dsn(pg_url, role), autocommit=True) as conn:
        for view in VIEWS:
            conn.execute(f"SELECT * FROM {view} LIMIT 5").fetchall()
        health = conn.execute("SELECT source, kind, events FROM sync_health").fetchall()
        assert health == [("hq", "doorflow", 1)]
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
        assert conn.execute("SELECT source, last_error FROM sync_state").fetchall() == [
            ("hq", None)
        ]
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT refresh_token FROM sync_state")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM sync_state")
        # read-only transactions are a default the role may turn off; privileges are not
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            "DELETE FROM events",
            "UPDATE sources SET timezone = 'UTC'",
            "INSERT INTO event_codes VALUES ('x', 1, 'x', 'other', NULL)",
            "CREATE TABLE bi_scratch (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


@pytest.mark.postgres
def test_applied_role_reads_every_view_and_cannot_write_or_read_the_token(
    pg_url: str, role: str
) -> None:
    result = apply(pg_url, role)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    check_read_only_role(pg_url, role)
    # a view created later by the owner (a future migration) is readable too
    with psycopg.connect(dsn(pg_url), autocommit=True) as conn:
        conn.execute("CREATE VIEW later_view AS SELECT source FROM events")
    try:
        with psycopg.connect(dsn(pg_url, role)) as conn:
            assert conn.execute("SELECT source FROM later_view").fetchall() == [("hq",)]
    finally:
        with psycopg.connect(dsn(pg_url), autocommit=True) as conn:
            conn.execute("DROP VIEW later_view")
    assert apply(pg_url, role).returncode == 0  # rerunnable
    with psycopg.connect(dsn(pg_url), autocommit=True) as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
        verifier = stored.fetchone()
    assert verifier is not None
    assert verifier[0].startswith("SCRAM-SHA-256$4096:")


@pytest.mark.postgres
def test_printed_script_has_no_password_and_works_with_psql(pg_url: str, role: str) -> None:
    result = syncd(
        "bi-role", "--role", role, env={"SYNCD_DATABASE_URL": pg_url, "SYNCD_BI_PASSWORD": PASSWORD}
    )
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout
    assert ":'bi_password'" in result.stdout
    if shutil.which("psql") is None:
        pytest.skip("no psql to run the printed script")
    run = subprocess.run(
        ["psql", dsn(pg_url), "-v", "ON_ERROR_STOP=1", "-v", f"bi_password={PASSWORD}", "-q"],
        input=result.stdout,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    check_read_only_role(pg_url, role)


def test_bi_role_needs_postgresql_and_a_password(tmp_path: object, pg_url: str) -> None:
    sqlite = syncd("bi-role", env={"SYNCD_DATABASE_URL": "sqlite:///x.db"})
    assert sqlite.returncode == 1
    assert sqlite.stderr.startswith("syncd: bi-role is for PostgreSQL")
    no_password = syncd("bi-role", "--apply", env={"SYNCD_DATABASE_URL": pg_url})
    assert no_password.returncode == 1
    assert no_password.stderr.strip().splitlines() == [
        "syncd: --apply needs the role's password: set $SYNCD_BI_PASSWORD or use --password-file"
    ]
    bad = syncd("bi-role", "--role", "Robert'); DROP", env={"SYNCD_DATABASE_URL": pg_url})
    assert bad.returncode == 1
    assert "must be lower-case letters" in bad.stderr


def test_scram_verifier_matches_libpq() -> None:
    conn = psycopg.pq.PGconn.connect(b"")  # no server needed to encrypt
    theirs = conn.encrypt_password(PASSWORD.encode(), b"anyone", b"scram-sha-256").decode()
    _method, rest = theirs.split("$", 1)
    iterations, salt = rest.split("$")[0].split(":")
    ours = scram_verifier(PASSWORD, base64.b64decode(salt), int(iterations))
    assert ours == theirs
