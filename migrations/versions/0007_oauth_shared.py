"""OAuth access token as shared state: ``sync_state.access_token`` and its expiry.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Several processes may use one source's OAuth grant at once. The access token
the last refresh obtained, and when it expires, are stored beside the rotated
refresh token, so a process whose own access token is stale uses the one
another process just obtained instead of refreshing (and rotating) again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import syncd.db.schema

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("access_token", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("access_token_expires_at", syncd.db.schema.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("access_token_expires_at")
        batch.drop_column("access_token")
