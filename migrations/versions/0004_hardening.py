"""Hardening: rejected records keyed by vendor id; the refresh token's origin.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01

- ``rejected_events.event_key``: the vendor natural key of a rejected record
  when it could be read (DoorFlow ``id``; IntServ ``system_id|event_time|
  sequence_id``), with a partial unique index on (``source``, ``event_key``)
  where it is set: a record re-served with a changed body stays one row.
  Records without a readable key stay keyed by ``raw_sha256``.
- ``sync_state.refresh_token_origin``: the SHA-256 of the *configured* OAuth
  refresh token the stored (rotated) one descends from. When the configured
  token no longer matches it, the user has authorized again and the
  configured token wins. The configured token itself is never stored.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rejected_events") as batch:
        batch.add_column(sa.Column("event_key", sa.Text(), nullable=True))
    op.create_index(
        "ix_rejected_events_source_event_key",
        "rejected_events",
        ["source", "event_key"],
        unique=True,
        postgresql_where=sa.text("event_key IS NOT NULL"),
        sqlite_where=sa.text("event_key IS NOT NULL"),
    )
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("refresh_token_origin", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("refresh_token_origin")
    op.drop_index("ix_rejected_events_source_event_key", table_name="rejected_events")
    with op.batch_alter_table("rejected_events") as batch:
        batch.drop_column("event_key")
