"""Run Alembic migrations from inside syncd (``syncd migrate``, ``syncd sync``)."""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from syncd.db.engine import check_connection
from syncd.errors import DatabaseUnavailable


def alembic_config() -> Config:
    """An Alembic config pointing at the migrations shipped in the package."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("syncd.migrations")))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def known_revision(revision: str) -> bool:
    """Whether this syncd ships ``revision`` (a newer syncd may have migrated further)."""
    script = ScriptDirectory.from_config(alembic_config())
    return any(rev.revision == revision for rev in script.walk_revisions())


def check_known(revision: str | None) -> None:
    """Raise one clear line when the database was migrated by a newer syncd."""
    if revision is not None and not known_revision(revision):
        from syncd import __version__

        raise DatabaseUnavailable(
            f"the database is at schema revision {revision}, which this syncd ({__version__}) "
            f"does not know: it was migrated by a newer syncd; run that version "
            f"(newest revision here: {head_revision()})"
        )


def is_current(engine: sa.Engine) -> bool:
    return current_revision(engine) == head_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` in one transaction."""
    check_connection(engine)
    check_known(current_revision(engine))
    config = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # A migration may rewrite or index a large table: no statement limit
            # (syncd.db.engine sets one on every connection), for this transaction only.
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
