"""The BI calendar per time zone, not per source; when each source's newest pass began.

Revision ID: 0008
Revises: 0011
Create Date: 2026-12-07

Issue 20. ``source_local_days`` held a 1970-2100 calendar for every source
(~95k rows, ~12 MB each): 1,000 sources were 12 GB written before the daemon
could answer. The calendar depends only on the zone, so it becomes
``zone_local_days`` keyed by ``timezone`` (with ``time_zones``: what each
zone's calendar was computed from), and ``events_local`` reaches it through
``sources.timezone``. The six views built on ``events_local`` keep their SQL
(migration 0003) and their answers. An existing database keeps its calendars:
one source's rows per zone are copied over, then the old table is dropped.
``sources.calendar_digest`` moves to ``time_zones``.

``ix_events_source_utc_date`` (PostgreSQL: source, UTC date, occurred_at)
stays: the join is still an equality on (source, UTC date) from the events'
side.

``sync_state.pass_started_at``: when the newest pass of the source began, in
whichever process; a replica that takes a source's lock just after another
one passed it skips the round (``syncd.scheduler.pass_due``).
"""

import re
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

import syncd.db.schema

revision: str = "0008"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = syncd.db.schema.UTCDateTime
SQL = Path(__file__).resolve().parent.parent / "sql"
CALENDAR_COLUMNS = "day, valid_from, utc_date, valid_until, utc_offset_seconds"


def named_statements(text: str) -> dict[str, str]:
    """``-- name: X`` blocks of a .sql file, by name (text up to the next name)."""
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _events_local(revision_dir: str) -> str:
    dialect = op.get_bind().dialect.name
    statement = named_statements((SQL / revision_dir / f"{dialect}.sql").read_text())
    return statement["events_local"]


def _replace_events_local(revision_dir: str) -> None:
    """The other views read events_local by name: replace it in place.

    PostgreSQL: CREATE OR REPLACE with the same columns keeps the views that
    depend on it. SQLite resolves views when queried, so drop and create.
    """
    statement = _events_local(revision_dir)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(statement.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
    else:
        op.execute("DROP VIEW events_local")
        op.execute(statement)


def upgrade() -> None:
    op.add_column("sync_state", sa.Column("pass_started_at", UTC_TS(), nullable=True))
    op.create_table(
        "time_zones",
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("calendar_digest", sa.Text(), nullable=False),
        sa.Column("updated_at", UTC_TS(), nullable=False),
        sa.PrimaryKeyConstraint("timezone", name="pk_time_zones"),
    )
    op.create_table(
        "zone_local_days",
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("valid_from", UTC_TS(), nullable=False),
        sa.Column("utc_date", sa.Date(), nullable=False),
        sa.Column("valid_until", UTC_TS(), nullable=False),
        sa.Column("utc_offset_seconds", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("timezone", "day", "valid_from", name="pk_zone_local_days"),
    )
    op.create_index(
        "ix_zone_local_days_timezone_utc_date", "zone_local_days", ["timezone", "utc_date"]
    )
    # One source's calendar per zone: the calendars of one zone are equal.
    # A zone whose sources disagree on the digest (tzdata changed between
    # writes) takes the newest; syncd rewrites any calendar whose digest is
    # not its own at the next start.
    op.execute(
        "INSERT INTO time_zones (timezone, calendar_digest, updated_at) "
        "SELECT s.timezone, s.calendar_digest, s.updated_at FROM sources AS s "
        "WHERE s.calendar_digest IS NOT NULL AND s.source = ("
        "  SELECT min(o.source) FROM sources AS o "
        "  WHERE o.timezone = s.timezone AND o.calendar_digest IS NOT NULL)"
    )
    op.execute(
        f"INSERT INTO zone_local_days (timezone, {CALENDAR_COLUMNS}) "
        f"SELECT s.timezone, {', '.join('d.' + c for c in CALENDAR_COLUMNS.split(', '))} "
        "FROM source_local_days AS d JOIN sources AS s ON s.source = d.source "
        "WHERE s.source = ("
        "  SELECT min(o.source) FROM sources AS o "
        "  WHERE o.timezone = s.timezone AND o.calendar_digest IS NOT NULL)"
    )
    _replace_events_local("0008")
    op.drop_index("ix_source_local_days_source_utc_date", table_name="source_local_days")
    op.drop_table("source_local_days")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("calendar_digest")


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("calendar_digest", sa.Text(), nullable=True))
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
    # Each source gets its zone's calendar back (the old per-source shape).
    op.execute(
        f"INSERT INTO source_local_days (source, {CALENDAR_COLUMNS}) "
        f"SELECT s.source, {', '.join('d.' + c for c in CALENDAR_COLUMNS.split(', '))} "
        "FROM sources AS s JOIN zone_local_days AS d ON d.timezone = s.timezone"
    )
    op.execute(
        "UPDATE sources SET calendar_digest = ("
        "  SELECT z.calendar_digest FROM time_zones AS z WHERE z.timezone = sources.timezone)"
    )
    _replace_events_local("0003")
    op.drop_index("ix_zone_local_days_timezone_utc_date", table_name="zone_local_days")
    op.drop_table("zone_local_days")
    op.drop_table("time_zones")
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("pass_started_at")
