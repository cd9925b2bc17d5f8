"""Event indexes that earn their load cost: a BRIN by time, partial person/door indexes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Every secondary index of ``events`` is maintained on every row a load
writes; measured with ``bench/index_plans.py --costs`` (BENCHMARKS.md,
"Indexes that earn their cost"). Three of them did more work than the
queries they serve need:

- ``ix_events_occurred_at`` (reading by time, across sources) becomes a
  **BRIN** on PostgreSQL: rows arrive in roughly the order they happened (a
  pass, a backfill window and a cold load all read oldest first), so block
  ranges summarize time well; a few pages per range instead of one B-tree
  entry per row. Every query that also names a source, a person or a door
  has its own B-tree. SQLite has no BRIN and keeps a B-tree of the same name.
- ``ix_events_person_id_occurred_at`` and ``ix_events_door_id_occurred_at``
  become **partial** (``... IS NOT NULL``): a query by person or door names
  one, so rows without one (door states, sync events; every IntServ row has
  no ``door_id``) never need an entry. Both databases' planners use a partial
  index for ``person_id = ...`` (equality implies not null).

``ix_events_source_utc_date`` (the BI calendar's) and every other index stay.
``bench/index_plans.py`` shows on 10 M rows that every BI view and documented
query keeps an index path.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON = "person_id IS NOT NULL"
DOOR = "door_id IS NOT NULL"


def upgrade() -> None:
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_index("ix_events_person_id_occurred_at", table_name="events")
    op.drop_index("ix_events_door_id_occurred_at", table_name="events")
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"], postgresql_using="brin")
    op.create_index(
        "ix_events_person_id_occurred_at",
        "events",
        ["person_id", "occurred_at"],
        postgresql_where=sa.text(PERSON),
        sqlite_where=sa.text(PERSON),
    )
    op.create_index(
        "ix_events_door_id_occurred_at",
        "events",
        ["door_id", "occurred_at"],
        postgresql_where=sa.text(DOOR),
        sqlite_where=sa.text(DOOR),
    )


def downgrade() -> None:
    op.drop_index("ix_events_door_id_occurred_at", table_name="events")
    op.drop_index("ix_events_person_id_occurred_at", table_name="events")
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_index("ix_events_person_id_occurred_at", "events", ["person_id", "occurred_at"])
    op.create_index("ix_events_door_id_occurred_at", "events", ["door_id", "occurred_at"])
