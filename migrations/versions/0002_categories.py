"""Categories follow the vendor's own grouping (DESIGN.md "Categories").

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

0001 stored DoorFlow 13 "Admitted (Request Exit)" and IntServ 104 (exit
button) as ``exit_request``, and for IntServ let the code table override the
event's own ``category`` field. A BI user counting granted access undercounted.
The contract now says:

- DoorFlow: 10-18 and 70 ``access_granted`` (13 included), 20-29 and 71-73
  ``access_denied``, 30 ``exit_request``, 31-37 and 40-42 ``door_state``, 50-63
  ``remote_control``, 90-91 ``tamper``, 1-3 ``device_status``, 100-107 and
  220-225 ``sync``, anything else ``other``;
- IntServ: the event's ``category`` field decides (``accessgranted`` /
  ``accessdenied``, ignoring case, spaces, ``_`` and ``-``); without a usable
  one, the code table; then ``other``.

This revision updates ``event_codes`` (DoorFlow 13 and IntServ 104 become
``access_granted``; the ``note`` column is kept) and the rows already in
``events``: DoorFlow rows by ``event_code``, IntServ rows by their payload's
own ``category``. The rules are copied here, not imported, so the migration
means the same thing whatever the code does later. Only rows whose category
changes are written (200,000 rows, 14 % of them changing: 8 s on PostgreSQL,
4 s on SQLite, on a busy 2-core machine). Downgrade restores 0001's mapping,
including "the code table wins" for IntServ.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (vendor, code): (0001 category, 0002 category), for the codes whose row changes.
CODE_CHANGES: dict[tuple[str, int], tuple[str, str]] = {
    ("doorflow", 13): ("exit_request", "access_granted"),
    ("intserv", 104): ("exit_request", "access_granted"),
}

# DoorFlow's categories by code range (inclusive), as the contract states them.
DOORFLOW_RANGES: list[tuple[int, int, str]] = [
    (1, 3, "device_status"),
    (10, 18, "access_granted"),
    (20, 29, "access_denied"),
    (30, 30, "exit_request"),
    (31, 37, "door_state"),
    (40, 42, "door_state"),
    (50, 63, "remote_control"),
    (70, 70, "access_granted"),
    (71, 73, "access_denied"),
    (90, 91, "tamper"),
    (100, 107, "sync"),
    (220, 225, "sync"),
]


def _code_table_category(vendor: str) -> str:
    """The event's category by the code table (0001's rule), ``other`` when absent."""
    return (
        "COALESCE((SELECT c.category FROM event_codes c "
        f"WHERE c.vendor = '{vendor}' AND c.code = events.event_code), 'other')"
    )


def _doorflow_category() -> str:
    whens = " ".join(
        f"WHEN events.event_code BETWEEN {lo} AND {hi} THEN '{name}'"
        for lo, hi, name in DOORFLOW_RANGES
    )
    return f"CASE {whens} ELSE 'other' END"


def _payload_category(dialect: str) -> str:
    """The payload's own ``category`` as text, folded: no case, spaces, ``_`` or ``-``.

    PostgreSQL stores the payload as jsonb (``->>`` yields text, NULL when
    absent); SQLite as JSON text (``json_extract``; a non-text value comes back
    as a number or JSON text, which then matches nothing, as in Python).
    """
    raw = (
        "(events.payload ->> 'category')"
        if dialect == "postgresql"
        else "json_extract(events.payload, '$.category')"
    )
    if dialect == "sqlite":
        # json_extract returns JSON true/false as 1/0 and numbers as numbers:
        # only text can name a category.
        raw = f"(CASE WHEN json_type(events.payload, '$.category') = 'text' THEN {raw} END)"
    return f"lower(replace(replace(replace({raw}, ' ', ''), '_', ''), '-', ''))"


def _intserv_category(dialect: str) -> str:
    folded = _payload_category(dialect)
    return (
        f"CASE {folded} WHEN 'accessgranted' THEN 'access_granted' "
        f"WHEN 'accessdenied' THEN 'access_denied' "
        f"ELSE {_code_table_category('intserv')} END"
    )


def _intserv_category_0001(dialect: str) -> str:
    """0001's rule: the code table wins; else the payload's field (trimmed, lower case)."""
    raw = (
        "(events.payload ->> 'category')"
        if dialect == "postgresql"
        else "(CASE WHEN json_type(events.payload, '$.category') = 'text' "
        "THEN json_extract(events.payload, '$.category') END)"
    )
    return (
        "COALESCE((SELECT c.category FROM event_codes c "
        "WHERE c.vendor = 'intserv' AND c.code = events.event_code), "
        f"CASE lower(trim({raw})) WHEN 'accessgranted' THEN 'access_granted' "
        "WHEN 'accessdenied' THEN 'access_denied' ELSE 'other' END)"
    )


def _set_codes(new: bool) -> None:
    for (vendor, code), (old_category, new_category) in CODE_CHANGES.items():
        op.execute(
            sa.text(
                "UPDATE event_codes SET category = :category WHERE vendor = :vendor AND code = :code"
            ).bindparams(category=new_category if new else old_category, vendor=vendor, code=code)
        )


def _recategorize(vendor: str, expression: str) -> None:
    # Only rows that change are written: on a large table most rows already agree.
    op.execute(
        f"UPDATE events SET category = {expression} "
        f"WHERE events.vendor = '{vendor}' AND events.category <> {expression}"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    _set_codes(new=True)
    _recategorize("doorflow", _doorflow_category())
    _recategorize("intserv", _intserv_category(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    _set_codes(new=False)
    _recategorize("doorflow", _code_table_category("doorflow"))
    _recategorize("intserv", _intserv_category_0001(dialect))
