"""Deleted events and placed rejects: ``events.deleted_at``, ``rejected_events.placed_at``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

``events.deleted_at``: when syncd learned that the vendor deleted the event
(a DoorFlow ``DESTROY`` notification, or the event missing from a complete
re-read of its span). The row stays (an audit trail); counts and the BI views
leave it out. ``rejected_events.placed_at``: for a rejected record without a
readable time, the time of its neighbour in the vendor's listing, so the
record still counts in its span when reconciliation compares counts.

The BI views are recreated from ``migrations/sql/0009`` (0003's views and
0008's per-zone ``events_local``, with one ``deleted_at IS NULL`` condition per
read of ``events``, marked ``0009``); downgrade restores those of 0003 and 0008.
"""

import re
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

import syncd.db.schema

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql"
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


def _statements(folder: str) -> dict[str, str]:
    text = (SQL / folder / f"{op.get_bind().dialect.name}.sql").read_text()
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _recreate_views(*folders: str) -> None:
    """The views from ``folders``, a later folder's statement winning."""
    statements: dict[str, str] = {}
    for folder in folders:
        statements.update(_statements(folder))
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for view in VIEWS:
        op.execute(statements[view])


def upgrade() -> None:
    utc = syncd.db.schema.UTCDateTime
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.add_column("events", sa.Column("deleted_at", utc(), nullable=True))
    op.add_column("rejected_events", sa.Column("placed_at", utc(), nullable=True))
    _recreate_views("0009")


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    with op.batch_alter_table("rejected_events") as batch:
        batch.drop_column("placed_at")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("deleted_at")
    _recreate_views("0003", "0008")
