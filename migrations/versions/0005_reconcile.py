"""When each source was last reconciled: ``sync_state.reconciled_at``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

``syncd sync`` and the daemon run a reconciliation when one is due
(``reconcile_every`` after the last one, or after the source's first
successful pass); the time it last finished lives here, beside the cursor.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import syncd.db.schema

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sync_state", sa.Column("reconciled_at", syncd.db.schema.UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("reconciled_at")
