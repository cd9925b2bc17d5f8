"""Migrations: up, down and up again on both databases; the schema matches the tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from syncd.db import migrate
from syncd.db.schema import MIGRATION_ONLY_INDEXES, metadata


def include_name(name: str | None, type_: str, _parent: object) -> bool:
    """As migrations/env.py: expression indexes are the migrations' alone."""
    return not (type_ == "index" and name in MIGRATION_ONLY_INDEXES)


TABLES = {"events", "sync_state", "rejected_events", "event_codes", "alembic_version"}


def table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_downgrade_upgrade(engine: sa.Engine) -> None:
    assert migrate.is_current(engine)
    assert table_names(engine) >= TABLES
    migrate.downgrade(engine, "base")
    assert table_names(engine) - {"alembic_version"} == set()
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    assert table_names(engine) >= TABLES


def test_the_migrated_schema_has_no_drift_from_the_tables(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        opts = {"compare_type": True, "include_name": include_name}
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, metadata) == []


def test_the_contract_columns_and_unique_key(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    columns = {c["name"] for c in inspector.get_columns("events")}
    assert columns >= {
        "id", "source", "event_key", "vendor", "occurred_at", "event_code", "category",
        "label", "door_id", "door_name", "person_id", "person_name", "credential",
        "system_id", "sequence_id", "source_updated_at", "payload", "first_seen_at",
        "last_seen_at",
    }  # fmt: skip
    uniques = [u["column_names"] for u in inspector.get_unique_constraints("events")]
    assert ["source", "event_key"] in uniques
    indexed = {tuple(i["column_names"]) for i in inspector.get_indexes("events")}
    assert {("occurred_at",), ("source", "occurred_at")} <= indexed
    assert {("person_id", "occurred_at"), ("door_id", "occurred_at")} <= indexed


def test_postgres_types_are_the_contract_ones(pg_engine: sa.Engine) -> None:
    with pg_engine.connect() as conn:
        types = dict(
            conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'events'"
                )
            ).all()
        )
        identity = conn.execute(
            sa.text(
                "SELECT is_identity FROM information_schema.columns "
                "WHERE table_name = 'events' AND column_name = 'id'"
            )
        ).scalar()
    assert types["id"] == "bigint"
    assert identity == "YES"
    assert types["occurred_at"] == "timestamp with time zone"
    assert types["payload"] == "jsonb"
    assert types["sequence_id"] == "bigint"


def test_event_codes_are_filled_and_conflicts_noted(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        rows = {
            (vendor, code): (category, note)
            for vendor, code, category, note in conn.execute(
                sa.text("SELECT vendor, code, category, note FROM event_codes")
            )
        }
    assert rows[("doorflow", 40)] == ("door_state", "guide: Channel Online")
    assert rows[("doorflow", 90)][0] == "tamper"
    assert rows[("doorflow", 105)][0] == "sync"
    assert rows[("intserv", 104)][0] == "exit_request"
    assert rows[("intserv", 207)][0] == "access_denied"
    categories = {category for category, _ in rows.values()}
    assert categories <= {
        "access_granted", "access_denied", "exit_request", "door_state", "tamper",
        "remote_control", "device_status", "sync", "other",
    }  # fmt: skip


LATER_REVISION = '''
"""A later migration that makes SQLite copy tables the views read (batch mode)."""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("events", "sync_state", "rejected_events"):
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.add_column(sa.Column("later", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in ("events", "sync_state", "rejected_events"):
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.drop_column("later")
'''


def test_a_later_migration_can_copy_the_tables_under_the_views(
    sqlite_engine: sa.Engine, tmp_path: Path
) -> None:
    """SQLite only: batch mode's copy-and-rename is how SQLite alters (PostgreSQL ALTERs)."""
    from alembic import command

    engine = sqlite_engine
    scripts = tmp_path / "migrations"
    shutil.copytree(Path(migrate.alembic_config().get_main_option("script_location")), scripts)
    head = migrate.head_revision()
    (scripts / "versions" / "9999_later.py").write_text(LATER_REVISION.format(head=head))
    config = migrate.alembic_config()
    config.set_main_option("script_location", str(scripts))
    for target in ("9999", str(head)):
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            if target == "9999":
                command.upgrade(config, target)
            else:
                command.downgrade(config, target)
        with engine.connect() as conn:
            for view in ("events_local", "sync_health", "door_state_latest"):
                conn.execute(sa.text(f"SELECT * FROM {view}")).all()
