"""BI views: sources, source_local_days, the seven contract views and their indexes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

The view SQL is in ``migrations/sql/0003/{postgresql,sqlite}.sql`` (named
statements, ``-- name: ...``), a folder that belongs to this revision alone:
a later change to a view is a new migration with a new folder, so upgrading
an old database always replays exactly what this revision created. The files
ship in the wheel as package data of ``syncd.migrations``.

``sources`` and ``source_local_days`` are filled by syncd (``syncd.bi``), not
here: they come from the configuration, which a migration does not read.

For later migrations: on PostgreSQL a view pins the columns it reads, so a
migration that drops or retypes one of them must drop and recreate the
views around it. On SQLite, batch mode's copy-and-rename of a table the views
read works because ``migrations/env.py`` turns on ``legacy_alter_table``.
"""

import re
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

import syncd.db.schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = syncd.db.schema.UTCDateTime
SQL_DIR = Path(__file__).resolve().parent.parent / "sql" / "0003"
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
STATE_CATEGORIES = "category IN ('door_state', 'tamper', 'device_status')"


def named_statements(text: str) -> dict[str, str]:
    """``-- name: X`` blocks of a .sql file, by name (text up to the next name)."""
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("business_hours_start", sa.Time(), nullable=False),
        sa.Column("business_hours_end", sa.Time(), nullable=False),
        sa.Column("calendar_digest", sa.Text(), nullable=True),
        sa.Column("updated_at", UTC_TS(), nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_sources"),
    )
    op.create_table(
        "source_local_days",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("valid_from", UTC_TS(), nullable=False),
        sa.Column("utc_date", sa.Date(), nullable=False),
        sa.Column("valid_until", UTC_TS(), nullable=False),
        sa.Column("utc_offset_seconds", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source", "day", "valid_from", name="pk_source_local_days"),
    )
    op.create_index(
        "ix_source_local_days_source_utc_date", "source_local_days", ["source", "utc_date"]
    )
    if op.get_bind().dialect.name == "postgresql":
        # The views join events to the calendar on (source, UTC date) and a
        # range of occurred_at: this index answers all three conditions in one
        # scan, and its statistics give the planner a good estimate (a join
        # on a range alone is estimated at a third of the table per day).
        # SQLite's planner does well with (source, occurred_at).
        op.execute(
            "CREATE INDEX ix_events_source_utc_date ON events "
            "(source, CAST(occurred_at AT TIME ZONE 'UTC' AS date), occurred_at)"
        )
    # door_state_latest: the newest state event per door is the first entry
    # of its (source, door_id) range, read backwards; partial, because state
    # events are a small share of all events.
    op.create_index(
        "ix_events_door_state_latest",
        "events",
        ["source", "door_id", "occurred_at", "id"],
        postgresql_where=sa.text(STATE_CATEGORIES),
        sqlite_where=sa.text(STATE_CATEGORIES),
    )
    statements = named_statements((SQL_DIR / f"{op.get_bind().dialect.name}.sql").read_text())
    for view in VIEWS:
        op.execute(statements[view])


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW {view}")
    op.drop_index("ix_events_door_state_latest", table_name="events")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_events_source_utc_date", table_name="events")
    op.drop_index("ix_source_local_days_source_utc_date", table_name="source_local_days")
    op.drop_table("source_local_days")
    op.drop_table("sources")
