"""Migrations: up, down and up again on both databases; the schema matches the tables."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from syncd.db import migrate
from syncd.db.schema import MIGRATION_ONLY_INDEXES, events, metadata
from syncd.sources import doorflow, intserv
from syncd.sources.base import CodeInfo


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
    assert rows[("doorflow", 13)] == ("access_granted", "guide: Access Granted (Reservation)")
    assert rows[("doorflow", 30)][0] == "exit_request"
    assert rows[("intserv", 104)][0] == "access_granted"
    assert rows[("intserv", 207)][0] == "access_denied"
    categories = {category for category, _ in rows.values()}
    assert categories <= {
        "access_granted", "access_denied", "exit_request", "door_state", "tamper",
        "remote_control", "device_status", "sync", "other",
    }  # fmt: skip


def test_event_codes_agree_with_the_connectors_category_rules(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT vendor, code, category FROM event_codes")).all()
    doorflow_rows = [(code, category) for vendor, code, category in rows if vendor == "doorflow"]
    intserv_rows = [(code, category) for vendor, code, category in rows if vendor == "intserv"]
    assert doorflow_rows
    assert intserv_rows
    assert [(code, doorflow.category(code)) for code, _ in doorflow_rows] == doorflow_rows
    assert all(
        category == ("access_granted" if code < 200 else "access_denied")
        for code, category in intserv_rows
    )


# -- 0002: categories of rows already stored -------------------------------------

# IntServ rows as 0001 stored them: (type, the payload's category field or MISSING).
MISSING = object()
INTSERV_CASES: list[tuple[int, Any]] = [
    (104, "accessgranted"),  # the exit button, served as a grant: 0001 said exit_request
    (104, MISSING),  # no field: the code table (now access_granted too)
    (104, None),
    (203, "accessgranted"),  # the event's own field wins over the code table
    (101, "accessdenied"),
    (150, "AccessDenied"),  # not in the code table
    (999, "Access Granted"),  # case and spaces do not matter
    (998, "access_granted"),
    (997, " access-denied "),
    (101, "somethingelse"),  # not a usable category: the code table
    (996, "somethingelse"),  # ... and then other
    (100, 5),  # not text
    (995, ["accessgranted"]),
    (994, True),
]


def _codes(conn: sa.Connection, vendor: str) -> dict[int, CodeInfo]:
    query = sa.text("SELECT code, label, category FROM event_codes WHERE vendor = :vendor")
    return {
        code: CodeInfo(label, category)
        for code, label, category in conn.execute(query, {"vendor": vendor})
    }


def _category_0001(raw: Any, code: int, codes: dict[int, CodeInfo]) -> str:
    """What syncd before 0002 stored: the code table wins, then the field, then other."""
    if code in codes:
        return codes[code].category
    folded = raw.strip().lower() if isinstance(raw, str) else ""
    return {"accessgranted": "access_granted", "accessdenied": "access_denied"}.get(folded, "other")


def _categories(conn: sa.Connection) -> dict[str, str]:
    query = sa.select(events.c.event_key, events.c.category).where(events.c.source == "m")
    return dict(conn.execute(query).all())


def test_0002_recategorizes_stored_rows_and_its_downgrade_restores_them(
    engine: sa.Engine,
) -> None:
    migrate.downgrade(engine, "0001")
    try:
        with engine.begin() as conn:
            old_doorflow = _codes(conn, "doorflow")
            old_intserv = _codes(conn, "intserv")
            rows: list[dict[str, Any]] = []
            before: dict[str, str] = {}
            for code in range(301):
                key = f"df-{code}"
                info = old_doorflow.get(code)
                before[key] = info.category if info else "other"
                payload = {"id": code, "event_code": code, "category": "accessgranted"}
                rows.append(_row(key, "doorflow", code, before[key], payload))
            for i, (code, raw) in enumerate(INTSERV_CASES):
                key = f"is-{i}"
                before[key] = _category_0001(raw, code, old_intserv)
                payload = {"type": code} if raw is MISSING else {"type": code, "category": raw}
                rows.append(_row(key, "intserv", code, before[key], payload))
            conn.execute(sa.insert(events), rows)
        assert before["df-13"] == "exit_request"
        assert before["is-0"] == "exit_request"

        migrate.upgrade(engine, "0002")
        with engine.connect() as conn:
            after = _categories(conn)
            new_intserv = _codes(conn, "intserv")
            query = sa.select(events.c.event_key, events.c.label).where(events.c.source == "m")
            labels = dict(conn.execute(query).all())
        expected = {f"df-{code}": doorflow.category(code) for code in range(301)}
        for i, (code, raw) in enumerate(INTSERV_CASES):
            field = None if raw is MISSING else raw
            expected[f"is-{i}"] = intserv.category(field, code, new_intserv)
        assert after == expected
        assert after["df-13"] == after["is-0"] == after["is-1"] == "access_granted"
        assert after["is-3"] == "access_granted"
        assert after["is-4"] == "access_denied"
        assert (after["is-6"], after["is-8"], after["is-10"]) == (
            "access_granted",
            "access_denied",
            "other",
        )
        assert set(labels.values()) == {"kept"}

        migrate.downgrade(engine, "0001")
        with engine.connect() as conn:
            assert _categories(conn) == before
            assert _codes(conn, "doorflow")[13].category == "exit_request"
            assert _codes(conn, "intserv")[104].category == "exit_request"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.delete(events).where(events.c.source == "m"))
        migrate.upgrade(engine)
    assert migrate.is_current(engine)


def _row(
    key: str,
    vendor: str,
    code: int,
    category: str,
    payload: dict[str, Any],
) -> dict[str, Any]:
    when = datetime(2026, 5, 1, tzinfo=UTC)
    return {
        "source": "m",
        "event_key": key,
        "vendor": vendor,
        "occurred_at": when,
        "event_code": code,
        "category": category,
        "label": "kept",
        "payload": payload,
        "first_seen_at": when,
        "last_seen_at": when,
    }


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


def _index_sql(engine: sa.Engine) -> dict[str, str]:
    """Each events index's definition as the database holds it, lower case."""
    if engine.dialect.name == "postgresql":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
    with engine.connect() as conn:
        return {name: (sql or "").lower() for name, sql in conn.exec_driver_sql(query)}


def test_event_indexes_earn_their_cost(engine: sa.Engine) -> None:
    """Migration 0011: by time a BRIN (PostgreSQL; SQLite has none), by person or
    door a partial index: rows without one cost nothing to load."""
    indexes = _index_sql(engine)
    by_time = indexes["ix_events_occurred_at"]
    if engine.dialect.name == "postgresql":
        assert "using brin (occurred_at)" in by_time
    else:
        assert "(occurred_at)" in by_time
    assert "person_id is not null" in indexes["ix_events_person_id_occurred_at"]
    assert "door_id is not null" in indexes["ix_events_door_id_occurred_at"]


def test_indexes_before_0011_come_back_on_downgrade(engine: sa.Engine) -> None:
    migrate.downgrade(engine, "0006")
    indexes = _index_sql(engine)
    assert "brin" not in indexes["ix_events_occurred_at"]
    assert "where" not in indexes["ix_events_person_id_occurred_at"]
    assert "where" not in indexes["ix_events_door_id_occurred_at"]
    migrate.upgrade(engine)
    assert "door_id is not null" in _index_sql(engine)["ix_events_door_id_occurred_at"]
