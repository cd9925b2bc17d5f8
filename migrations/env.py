"""Alembic environment: runs against the connection syncd hands it, or a URL.

``syncd migrate`` passes an open connection in ``config.attributes``; a bare
``alembic upgrade head`` reads ``SYNCD_DATABASE_URL`` (then the syncd
configuration, then the embedded SQLite default).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from syncd.db.schema import MIGRATION_ONLY_INDEXES, metadata

config = context.config


def _database_url() -> str:
    from syncd.config import load_settings

    return load_settings().database_url


def include_name(name: str | None, type_: str, _parent: object) -> bool:
    """Leave the expression indexes (created by migrations) out of autogenerate."""
    return not (type_ == "index" and name in MIGRATION_ONLY_INDEXES)


def _run(connection: sa.Connection) -> None:
    if connection.dialect.name == "sqlite":
        # Batch mode copies a table and renames the copy; SQLite's modern
        # RENAME re-checks every view, and the BI views name the table being
        # copied, so it would fail. The legacy RENAME leaves views alone, and
        # they find the renamed copy by name.
        connection.exec_driver_sql("PRAGMA legacy_alter_table = ON")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite can only ALTER through table copies; batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA legacy_alter_table = OFF")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(_database_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("syncd migrations run online only: use `syncd migrate`")
run_migrations_online()
