"""Pause: ``sync_state.paused_at``, ``paused_reason``, ``paused_by``.

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-07

``syncd pause SOURCE`` sets these on the source's row (creating the row for a
source that never ran), ``syncd resume`` clears them. Every process on the
database reads them before a pass, a reconciliation, a backfill or a webhook
fetch, so a pause needs no restart and no shared memory.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import syncd.db.schema

revision: str = "0010"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("paused_at", syncd.db.schema.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("paused_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("paused_by", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("paused_by")
        batch.drop_column("paused_reason")
        batch.drop_column("paused_at")
