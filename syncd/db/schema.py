"""SQLAlchemy Core tables: the ``events`` schema is a public interface (BI tools).

The migrations in ``migrations/versions`` are the only source of schema truth;
these ``Table`` objects mirror them for queries, and ``alembic check`` (run in
CI) proves the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; on SQLite, UTC text read back as aware UTC.

    SQLite has no time zones, so everything is stored converted to UTC and
    every value read is marked UTC again: callers only ever see aware times.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        if dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONDocument: sa.types.TypeEngine[Any] = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigIntId: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigIntId, sa.Identity(), primary_key=True),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("event_key", sa.Text(), nullable=False),
    sa.Column("vendor", sa.Text(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("event_code", sa.Integer(), nullable=False),
    sa.Column("category", sa.Text(), nullable=False),
    sa.Column("label", sa.Text()),
    sa.Column("door_id", sa.Text()),
    sa.Column("door_name", sa.Text()),
    sa.Column("person_id", sa.Text()),
    sa.Column("person_name", sa.Text()),
    sa.Column("credential", sa.Text()),
    sa.Column("system_id", sa.Text()),
    sa.Column("sequence_id", sa.BigInteger()),
    sa.Column("source_updated_at", UTCDateTime()),
    sa.Column("payload", JSONDocument, nullable=False),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    # migration 0009: when syncd learned the vendor deleted the event (the row stays)
    sa.Column("deleted_at", UTCDateTime()),
    sa.UniqueConstraint("source", "event_key"),
    # migration 0011: by time, a BRIN on PostgreSQL (rows arrive roughly in
    # time order; a B-tree entry per row cost more than it served), a B-tree
    # on SQLite; by person / by door, partial: such a query names one.
    sa.Index("ix_events_occurred_at", "occurred_at", postgresql_using="brin"),
    sa.Index("ix_events_source_occurred_at", "source", "occurred_at"),
    sa.Index(
        "ix_events_person_id_occurred_at",
        "person_id",
        "occurred_at",
        postgresql_where=sa.text("person_id IS NOT NULL"),
        sqlite_where=sa.text("person_id IS NOT NULL"),
    ),
    sa.Index(
        "ix_events_door_id_occurred_at",
        "door_id",
        "occurred_at",
        postgresql_where=sa.text("door_id IS NOT NULL"),
        sqlite_where=sa.text("door_id IS NOT NULL"),
    ),
    # migration 0003, for door_state_latest
    sa.Index(
        "ix_events_door_state_latest",
        "source",
        "door_id",
        "occurred_at",
        "id",
        postgresql_where=sa.text("category IN ('door_state', 'tamper', 'device_status')"),
        sqlite_where=sa.text("category IN ('door_state', 'tamper', 'device_status')"),
    ),
)

sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("source", sa.Text(), primary_key=True),
    sa.Column("cursor", JSONDocument, nullable=False),
    sa.Column("last_success_at", UTCDateTime()),
    sa.Column("last_error", sa.Text()),
    sa.Column("last_error_at", UTCDateTime()),
    sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("refresh_token", sa.Text()),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("reconciled_at", UTCDateTime()),
    # sha256 of the configured refresh token the stored one was rotated from
    sa.Column("refresh_token_origin", sa.Text()),
    # migration 0007: the access token the last refresh obtained (any process's)
    sa.Column("access_token", sa.Text()),
    sa.Column("access_token_expires_at", UTCDateTime()),
    # migration 0010: `syncd pause` (who: user@host); NULL paused_at = running
    sa.Column("paused_at", UTCDateTime()),
    sa.Column("paused_reason", sa.Text()),
    sa.Column("paused_by", sa.Text()),
    # migration 0008: when the newest pass began, whichever process made it
    sa.Column("pass_started_at", UTCDateTime()),
)

rejected_events = sa.Table(
    "rejected_events",
    metadata,
    sa.Column("id", BigIntId, sa.Identity(), primary_key=True),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("rejected_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("occurred_at", UTCDateTime()),
    sa.Column("raw", JSONDocument, nullable=False),
    sa.Column("raw_sha256", sa.Text(), nullable=False),
    # The vendor natural key when it could be read: one row per vendor record.
    sa.Column("event_key", sa.Text()),
    # migration 0009: no readable time: its neighbour's in the listing
    sa.Column("placed_at", UTCDateTime()),
    sa.UniqueConstraint("source", "raw_sha256"),
    sa.Index("ix_rejected_events_source_rejected_at", "source", "rejected_at"),
    sa.Index("ix_rejected_events_source_occurred_at", "source", "occurred_at"),
    sa.Index(
        "ix_rejected_events_source_event_key",
        "source",
        "event_key",
        unique=True,
        postgresql_where=sa.text("event_key IS NOT NULL"),
        sqlite_where=sa.text("event_key IS NOT NULL"),
    ),
)

event_codes = sa.Table(
    "event_codes",
    metadata,
    sa.Column("vendor", sa.Text(), primary_key=True),
    sa.Column("code", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("label", sa.Text(), nullable=False),
    sa.Column("category", sa.Text(), nullable=False),
    sa.Column("note", sa.Text()),
)

# BI (migration 0003): the configured settings of each source; (migration
# 0008) the local calendar of each time zone in use and what it was computed
# from (see syncd/bi.py for why a table and not AT TIME ZONE).
sources = sa.Table(
    "sources",
    metadata,
    sa.Column("source", sa.Text(), primary_key=True),
    sa.Column("kind", sa.Text()),
    sa.Column("timezone", sa.Text(), nullable=False),
    sa.Column("business_hours_start", sa.Time(), nullable=False),
    sa.Column("business_hours_end", sa.Time(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

time_zones = sa.Table(
    "time_zones",
    metadata,
    sa.Column("timezone", sa.Text(), primary_key=True),
    sa.Column("calendar_digest", sa.Text(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

zone_local_days = sa.Table(
    "zone_local_days",
    metadata,
    sa.Column("timezone", sa.Text(), primary_key=True),
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("valid_from", UTCDateTime(), primary_key=True),
    sa.Column("utc_date", sa.Date(), nullable=False),
    sa.Column("valid_until", UTCDateTime(), nullable=False),
    sa.Column("utc_offset_seconds", sa.Integer(), nullable=False),
    sa.Index("ix_zone_local_days_timezone_utc_date", "timezone", "utc_date"),
)

# Indexes on expressions, created by migrations and left out of autogenerate's
# comparison (migrations/env.py): Core cannot spell them for both databases.
# ix_events_source_utc_date (PostgreSQL, migration 0003): events by source and
# UTC date, the equality the BI views join the calendar on.
MIGRATION_ONLY_INDEXES = frozenset({"ix_events_source_utc_date"})

# One row per window of a backfill; a backfill is identified by (source, since,
# until) and is the set of its windows. ``position`` is the connector's place
# inside the window (committed with each page), ``done_at`` marks it finished
# and ``reused`` says it was finished by covering windows of another backfill.
backfill_windows = sa.Table(
    "backfill_windows",
    metadata,
    sa.Column("source", sa.Text(), primary_key=True),
    sa.Column("since", UTCDateTime(), primary_key=True),
    sa.Column("until", UTCDateTime(), primary_key=True),
    sa.Column("window_start", UTCDateTime(), primary_key=True),
    sa.Column("window_end", UTCDateTime(), nullable=False),
    sa.Column("position", JSONDocument, nullable=False),
    sa.Column("events", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("reused", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("done_at", UTCDateTime()),
    sa.Index("ix_backfill_windows_source_window_start", "source", "window_start"),
)
