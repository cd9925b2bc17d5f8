"""Shared fixtures: real databases only (PostgreSQL and SQLite), never mocks.

PostgreSQL comes from ``SYNCD_TEST_DATABASE_URL`` (``scripts/test`` finds or
starts one). Each test session creates its own database and drops it after.
Without a server the PostgreSQL tests skip locally, but fail in CI (``CI`` set):
they must run there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.db import migrate
from syncd.db.engine import create_engine
from syncd.db.store import Store

TABLES = (
    "events",
    "sync_state",
    "rejected_events",
    "sources",
    "zone_local_days",
    "time_zones",
    "backfill_windows",
)


def _admin_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    admin = os.environ.get("SYNCD_TEST_DATABASE_URL")
    if not admin:
        if os.environ.get("CI"):
            pytest.fail("SYNCD_TEST_DATABASE_URL is not set: PostgreSQL tests must run in CI")
        pytest.skip("no PostgreSQL (set SYNCD_TEST_DATABASE_URL or run scripts/test)")
    name = f"syncd_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin_dsn(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    engine = create_engine(rendered, poolclass=sa.pool.NullPool)
    migrate.upgrade(engine)
    engine.dispose()
    yield rendered
    with psycopg.connect(_admin_dsn(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_pg_url(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database with nothing in it (not migrated), dropped after the test."""
    admin = make_url(pg_url).set(database="postgres").render_as_string(hide_password=False)
    name = f"syncd_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin_dsn(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_admin_dsn(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
        else:
            for table in TABLES:
                conn.execute(sa.text(f"DELETE FROM {table}"))


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_url)
    empty_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/syncd.db"
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """The same test on both supported databases."""
    name = "pg_engine" if request.param == "postgresql" else "sqlite_engine"
    result: sa.Engine = request.getfixturevalue(name)
    return result


@pytest.fixture
def store(engine: sa.Engine) -> Store:
    return Store(engine)


@pytest.fixture
def pg_store(pg_engine: sa.Engine) -> Store:
    return Store(pg_engine)
