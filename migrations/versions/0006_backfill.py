"""Backfill windows: ``backfill_windows``, one row per window of a history load.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

``syncd backfill`` splits [since, until) into windows and records each one
here: its position inside the window after every committed page, and when it
finished. A rerun skips finished windows and resumes the unfinished one. The
live cursor (``sync_state``) is never touched by a backfill.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import syncd.db.schema

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    utc = syncd.db.schema.UTCDateTime
    op.create_table(
        "backfill_windows",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("since", utc(), nullable=False),
        sa.Column("until", utc(), nullable=False),
        sa.Column("window_start", utc(), nullable=False),
        sa.Column("window_end", utc(), nullable=False),
        sa.Column("position", syncd.db.schema.JSONDocument, nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("updated_at", utc(), nullable=False),
        sa.Column("done_at", utc(), nullable=True),
        sa.PrimaryKeyConstraint(
            "source", "since", "until", "window_start", name=op.f("pk_backfill_windows")
        ),
    )
    op.create_index(
        "ix_backfill_windows_source_window_start",
        "backfill_windows",
        ["source", "window_start"],
    )


def downgrade() -> None:
    op.drop_index("ix_backfill_windows_source_window_start", table_name="backfill_windows")
    op.drop_table("backfill_windows")
