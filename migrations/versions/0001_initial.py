"""Initial schema: events, sync_state, rejected_events, event_codes.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

``event_codes`` is filled from the vendor pages in ``shared/vendor-docs``.
DoorFlow publishes two code tables that disagree; the API reference
(``doorflow-get-event-reference.txt``, ``doorflow-events-v3-reference-old.txt``)
wins over the events guide (``doorflow-events-guide.txt``). Where the guide
says something else, the ``note`` column records it, so a BI user who meets
the guide's meaning can see why syncd does not use it:

- guide 12-16 (Schedule, Reservation, Remote, PIN, Mobile) vs reference
  12 Manual, 13 Request Exit, 14 Auxiliary, 15-18 application/unlocked/Apple/Google;
- guide 21-26 (disabled person/credential, no permission, schedule, invalid,
  expired reservation) vs reference 21 out of hours ... 29 offline;
- guide 40-47 (channel online/offline/modes, tamper, forced, held) vs
  reference 40-42 automatic-unlock shift (door forced/held are 32/33);
- guide 60-62 (sync started/completed/failed) vs reference 50-63 remote
  control (sync is 100-107);
- guide 70 (configuration change) vs reference 70 MFA admit.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import syncd.db.schema

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TS = syncd.db.schema.UTCDateTime

# (code, label, category, note): the DoorFlow API reference.
DOORFLOW_CODES: list[tuple[int, str, str, str | None]] = [
    (1, "Channel started", "device_status", None),
    (2, "Channel stopped", "device_status", None),
    (3, "Channel contact lost", "device_status", None),
    (10, "Admitted (Card/fob)", "access_granted", "guide: Access Granted"),
    (11, "Admitted (PIN)", "access_granted", None),
    (12, "Admitted (Manual)", "access_granted", "guide: Access Granted (Schedule)"),
    (13, "Admitted (Request Exit)", "exit_request", "guide: Access Granted (Reservation)"),
    (14, "Admitted (Auxiliary)", "access_granted", "guide: Access Granted (Remote)"),
    (15, "Admitted (Application)", "access_granted", "guide: Access Granted (PIN)"),
    (16, "Admitted (Unlocked)", "access_granted", "guide: Access Granted (Mobile)"),
    (17, "Admitted (Apple Wallet)", "access_granted", None),
    (18, "Admitted (Google Wallet)", "access_granted", None),
    (20, "Rejected (Unauthorised card/fob)", "access_denied", "guide: Access Denied"),
    (21, "Rejected (Out of hours)", "access_denied", "guide: Access Denied (Disabled Person)"),
    (22, "Rejected (Lock down)", "access_denied", "guide: Access Denied (Disabled Credential)"),
    (23, "Rejected (Tamper)", "access_denied", "guide: Access Denied (No Permission)"),
    (24, "Rejected (Unauthorised PIN)", "access_denied", "guide: Access Denied (Outside Schedule)"),
    (25, "Rejected (Timeout)", "access_denied", "guide: Access Denied (Invalid Credential)"),
    (
        26,
        "Rejected (Invalid credential type)",
        "access_denied",
        "guide: Access Denied (Expired Reservation)",
    ),
    (27, "Rejected (Unauthorised)", "access_denied", None),
    (28, "Rejected (Passback detected)", "access_denied", None),
    (29, "Rejected (Offline)", "access_denied", None),
    (30, "Request exit button pressed", "exit_request", None),
    (31, "Door state normal", "door_state", None),
    (32, "Door state forced-open", "door_state", None),
    (33, "Door state extended-open", "door_state", None),
    (34, "Door state/alarm event (34)", "door_state", None),
    (35, "Door state/alarm event (35)", "door_state", None),
    (36, "Door state/alarm event (36)", "door_state", None),
    (37, "Door state/alarm event (37)", "door_state", None),
    (40, "Automatic unlock shift started", "door_state", "guide: Channel Online"),
    (41, "Automatic unlock shift ended", "door_state", "guide: Channel Offline"),
    (42, "Automatic unlock shift event (42)", "door_state", "guide: Channel Mode: Normal"),
    *[
        (code, f"Remote control event ({code})", "remote_control", note)
        for code, note in [
            (50, None),
            (51, None),
            (52, None),
            (53, None),
            (54, None),
            (55, None),
            (56, None),
            (57, None),
            (58, None),
            (59, None),
            (60, "guide: Sync Started"),
            (61, "guide: Sync Completed"),
            (62, "guide: Sync Failed"),
            (63, None),
        ]
    ],
    (70, "Admitted (Multi-factor)", "access_granted", "guide: Configuration Change"),
    (71, "Rejected (Multi-factor, 71)", "access_denied", None),
    (72, "Rejected (Multi-factor, 72)", "access_denied", None),
    (73, "Rejected (Multi-factor, 73)", "access_denied", None),
    (90, "Tamper detected", "tamper", None),
    (91, "Tamper event (91)", "tamper", None),
    (100, "Channel sync started", "sync", None),
    (101, "Channel sync not required", "sync", None),
    (102, "Channel sync event (102)", "sync", None),
    (103, "Channel sync event (103)", "sync", None),
    (104, "Channel sync event (104)", "sync", None),
    (105, "Channel sync completed", "sync", None),
    (106, "Channel sync failed", "sync", None),
    (107, "Channel sync timing out", "sync", None),
    (220, "Directory sync event (220)", "sync", None),
    (223, "Directory sync event (223)", "sync", None),
    (224, "Directory sync event (224)", "sync", None),
    (225, "Directory sync event (225)", "sync", None),
]

# IntServ Access event types (FACTS.md): 100-105 granted, 200-207 denied.
INTSERV_CODES: list[tuple[int, str, str, str | None]] = [
    (100, "Access granted", "access_granted", None),
    (101, "Access granted (code)", "access_granted", None),
    (102, "Access granted (proximity)", "access_granted", None),
    (103, "Access granted (proximity + PIN)", "access_granted", None),
    (104, "Access granted (exit button)", "exit_request", None),
    (105, "Access granted (common code)", "access_granted", None),
    (200, "Access denied", "access_denied", None),
    (201, "Access denied (unknown key)", "access_denied", None),
    (202, "Access denied (expired)", "access_denied", None),
    (203, "Access denied (blacklisted)", "access_denied", None),
    (204, "Access denied (disabled)", "access_denied", None),
    (205, "Access denied (no PIN set)", "access_denied", None),
    (206, "Access denied (not authorized)", "access_denied", None),
    (207, "Access denied (outside schedule)", "access_denied", None),
]


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", BIGID, sa.Identity(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("event_key", sa.Text(), nullable=False),
        sa.Column("vendor", sa.Text(), nullable=False),
        sa.Column("occurred_at", UTC_TS(), nullable=False),
        sa.Column("event_code", sa.Integer(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("door_id", sa.Text(), nullable=True),
        sa.Column("door_name", sa.Text(), nullable=True),
        sa.Column("person_id", sa.Text(), nullable=True),
        sa.Column("person_name", sa.Text(), nullable=True),
        sa.Column("credential", sa.Text(), nullable=True),
        sa.Column("system_id", sa.Text(), nullable=True),
        sa.Column("sequence_id", sa.BigInteger(), nullable=True),
        sa.Column("source_updated_at", UTC_TS(), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("first_seen_at", UTC_TS(), nullable=False),
        sa.Column("last_seen_at", UTC_TS(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("source", "event_key", name="uq_events_source_event_key"),
    )
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_index("ix_events_source_occurred_at", "events", ["source", "occurred_at"])
    op.create_index("ix_events_person_id_occurred_at", "events", ["person_id", "occurred_at"])
    op.create_index("ix_events_door_id_occurred_at", "events", ["door_id", "occurred_at"])

    op.create_table(
        "sync_state",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("cursor", JSON, nullable=False),
        sa.Column("last_success_at", UTC_TS(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", UTC_TS(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("updated_at", UTC_TS(), nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_sync_state"),
    )

    op.create_table(
        "rejected_events",
        sa.Column("id", BIGID, sa.Identity(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("rejected_at", UTC_TS(), nullable=False),
        sa.Column("last_seen_at", UTC_TS(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("occurred_at", UTC_TS(), nullable=True),
        sa.Column("raw", JSON, nullable=False),
        sa.Column("raw_sha256", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_events"),
        sa.UniqueConstraint("source", "raw_sha256", name="uq_rejected_events_source_raw_sha256"),
    )
    op.create_index(
        "ix_rejected_events_source_rejected_at", "rejected_events", ["source", "rejected_at"]
    )
    op.create_index(
        "ix_rejected_events_source_occurred_at", "rejected_events", ["source", "occurred_at"]
    )

    codes = op.create_table(
        "event_codes",
        sa.Column("vendor", sa.Text(), nullable=False),
        sa.Column("code", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("vendor", "code", name="pk_event_codes"),
    )
    op.bulk_insert(
        codes,
        [
            {"vendor": vendor, "code": code, "label": label, "category": category, "note": note}
            for vendor, table in (("doorflow", DOORFLOW_CODES), ("intserv", INTSERV_CODES))
            for code, label, category, note in table
        ],
    )


def downgrade() -> None:
    op.drop_table("event_codes")
    op.drop_index("ix_rejected_events_source_occurred_at", table_name="rejected_events")
    op.drop_index("ix_rejected_events_source_rejected_at", table_name="rejected_events")
    op.drop_table("rejected_events")
    op.drop_table("sync_state")
    op.drop_index("ix_events_door_id_occurred_at", table_name="events")
    op.drop_index("ix_events_person_id_occurred_at", table_name="events")
    op.drop_index("ix_events_source_occurred_at", table_name="events")
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_table("events")
