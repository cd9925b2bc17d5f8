"""The idempotent event store: pages in, one transaction each.

Everything a pass writes goes through :meth:`Store.write_page`: the page's
events, its rejected records and the cursor that follows them commit together
or not at all. Replaying a page is harmless: events are upserted on
(``source``, ``event_key``); a row is rewritten only when its content changed
and the incoming version is not older (``source_updated_at``); rejected
records are keyed by their vendor natural key when it could be read, else by
a hash of their raw form (one row per vendor record, however often re-served).

PostgreSQL path: ``COPY`` the page into a temporary staging table, then one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE changed``. That is one
round trip for the data and one statement for the merge, and the server
decides insert/update/skip per row. ``bench/store.py`` compares it with
``executemany`` in the same run. SQLite path: ``executemany`` of the same
upsert, which is what SQLite is fastest at.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.types.string import BytesBinaryDumper

from syncd.db.schema import event_codes, events, rejected_events, sync_state
from syncd.errors import CredentialStoreError, DatabaseUnavailable
from syncd.records import EventRecord, RejectedRecord, to_json
from syncd.sources.auth import OAuthGrant
from syncd.sources.base import CodeInfo

if TYPE_CHECKING:
    from syncd.engine import CursorSink

# Columns a record fills, in COPY / executemany order.
RECORD_COLUMNS = (
    "source",
    "event_key",
    "vendor",
    "occurred_at",
    "event_code",
    "category",
    "label",
    "door_id",
    "door_name",
    "person_id",
    "person_name",
    "credential",
    "system_id",
    "sequence_id",
    "source_updated_at",
    "payload",
)
# An EventRecord is a COPY row once ``source`` goes first and ``payload`` last.
assert (*EventRecord._fields[:6], *EventRecord._fields[7:], "payload") == RECORD_COLUMNS[1:]
_MUTABLE = [c for c in RECORD_COLUMNS if c not in ("source", "event_key")]
# A row the vendor lists again is no longer deleted (``deleted_at``, DESIGN.md).
_SET_CLAUSE = ", ".join(f"{c} = excluded.{c}" for c in _MUTABLE) + ", deleted_at = NULL"
# A row is rewritten only when something a reader can see changed, and never
# by an older version of the event than the one stored.
_CHANGED = (
    "(events.payload, events.category, events.label) IS DISTINCT FROM "
    "(excluded.payload, excluded.category, excluded.label)"
)
_CHANGED_SQLITE = (
    "(events.payload IS NOT excluded.payload OR events.category IS NOT excluded.category "
    "OR events.label IS NOT excluded.label)"
)
_NOT_OLDER = (
    "(excluded.source_updated_at IS NULL OR events.source_updated_at IS NULL "
    "OR excluded.source_updated_at >= events.source_updated_at)"
)

_PG_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS syncd_stage (
    source text, event_key text, vendor text, occurred_at timestamptz, event_code integer,
    category text, label text, door_id text, door_name text, person_id text, person_name text,
    credential text, system_id text, sequence_id bigint, source_updated_at timestamptz,
    payload text
) ON COMMIT DELETE ROWS
"""
_COLS = ", ".join(RECORD_COLUMNS)
# The payload is staged as text (cheap in binary COPY) and parsed once, here.
_STAGED = _COLS.replace("payload", "payload::jsonb")
_STAGE_TYPES = [
    "text", "text", "text", "timestamptz", "int4", "text", "text", "text", "text", "text",
    "text", "text", "text", "int8", "timestamptz", "text",
]  # fmt: skip
_PG_MERGE = f"""
WITH merged AS (
    INSERT INTO events ({_COLS}, first_seen_at, last_seen_at)
    SELECT {_STAGED}, %(now)s, %(now)s FROM syncd_stage
    ON CONFLICT (source, event_key) DO UPDATE
        SET {_SET_CLAUSE}, last_seen_at = excluded.last_seen_at
        WHERE ({_CHANGED} AND {_NOT_OLDER}) OR events.deleted_at IS NOT NULL
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
"""
# Rows that are probably all new (a cold load, a backlog) skip the staging
# table: COPY straight into ``events``, in a savepoint. A key already stored
# fails the COPY on the unique index, the savepoint is rolled back and the
# same rows take the merge above, so the guess can cost time, never a row.
_PG_DIRECT = f"COPY events ({_COLS}, first_seen_at, last_seen_at) FROM STDIN (FORMAT BINARY)"
# The payload goes as binary jsonb: a version byte, then the JSON text. A
# binary COPY row carries no type, only bytes, so the column is dumped as
# ``bytea`` (psycopg's C dumper passes bytes through) with the version byte
# already in front: no Python dumper call per row.
_DIRECT_TYPES = [*_STAGE_TYPES[:-1], "bytea", "timestamptz", "timestamptz"]
_JSONB_VERSION = b"\x01"
_UPSERT_VALUES = ", ".join(["?"] * len(RECORD_COLUMNS))
_SQLITE_UPSERT = f"""
INSERT INTO events ({_COLS}, first_seen_at, last_seen_at)
VALUES ({_UPSERT_VALUES}, ?, ?)
ON CONFLICT (source, event_key) DO UPDATE
    SET {_SET_CLAUSE}, last_seen_at = excluded.last_seen_at
    WHERE ({_CHANGED_SQLITE} AND {_NOT_OLDER}) OR events.deleted_at IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.rejected + other.rejected,
        )


@dataclass(frozen=True, slots=True)
class SourceState:
    """A source's row of ``sync_state`` (defaults when it has none yet)."""

    source: str
    cursor: dict[str, Any]
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    refresh_token: str | None = None
    reconciled_at: datetime | None = None
    refresh_token_origin: str | None = None  # sha256 of the configured token it descends from
    paused_at: datetime | None = None  # `syncd pause` (syncd.db.pauses)
    paused_reason: str | None = None
    paused_by: str | None = None
    pass_started_at: datetime | None = None  # when the newest pass (any process) began


@dataclass(frozen=True, slots=True)
class SourceStats:
    rows: int
    newest_occurred_at: datetime | None
    rejected: int


def dedupe_newest(records: Iterable[EventRecord]) -> list[EventRecord]:
    """One record per ``event_key``: the newest by ``source_updated_at``, else the last.

    A page can hold one event twice (page-number paging over a list that
    shifted); the database must see each key once per statement.
    """
    chosen: dict[str, EventRecord] = {}
    for record in records:
        held = chosen.get(record.event_key)
        if held is None or not _is_older(record, held):
            chosen[record.event_key] = record
    return list(chosen.values())


def _is_older(candidate: EventRecord, held: EventRecord) -> bool:
    if candidate.source_updated_at is None or held.source_updated_at is None:
        return False
    return candidate.source_updated_at < held.source_updated_at


def _sqlite_time(value: datetime | None) -> str | None:
    # Same text form SQLAlchemy's SQLite DateTime writes, so Core reads it back.
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _copy_rows(source: str, records: Sequence[EventRecord]) -> Iterator[tuple[Any, ...]]:
    """``records`` as rows of :data:`RECORD_COLUMNS`, the payload as JSON text."""
    for r in records:
        yield (source, *r[:6], *r[7:], r.payload.decode())


def _copy_new(
    raw: psycopg.Connection[Any], source: str, records: Sequence[EventRecord], now: datetime
) -> bool:
    """COPY ``records`` straight into ``events``; False (nothing written) when
    one of them is already stored."""
    version = _JSONB_VERSION
    with raw.cursor() as cur:
        # The bytea dumper found by type is dbapi20's (Python, for ``Binary``);
        # on this cursor, psycopg's own ``bytes`` dumper (C in psycopg[binary]).
        cur.adapters.register_dumper(bytes, BytesBinaryDumper)
        cur.execute("SAVEPOINT syncd_new_rows")
        try:
            with cur.copy(_PG_DIRECT) as copy:
                copy.set_types(_DIRECT_TYPES)
                write = copy.write_row
                for r in records:
                    write((source, *r[:6], *r[7:], version + r.payload, now, now))
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT syncd_new_rows")
            return False
        cur.execute("RELEASE SAVEPOINT syncd_new_rows")
    return True


def _copy_and_merge(
    raw: psycopg.Connection[Any], source: str, records: Sequence[EventRecord], now: datetime
) -> tuple[int, int]:
    """Stage ``records`` with COPY, then merge them: (inserted, updated)."""
    with raw.cursor() as cur:
        cur.execute(_PG_STAGE)
        with cur.copy(f"COPY syncd_stage ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGE_TYPES)
            for staged in _copy_rows(source, records):
                copy.write_row(staged)
        cur.execute(_PG_MERGE, {"now": now})
        counts = cur.fetchone()
    assert counts is not None
    return int(counts[0]), int(counts[1])


def _raw_json(raw: Any) -> bytes:
    try:
        return to_json(raw, sort_keys=True)
    except (TypeError, ValueError):
        return orjson.dumps(repr(raw))


class Store:
    """All of syncd's reads and writes of its own tables."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._local_locks: dict[tuple[str, str], threading.Lock] = {}
        self._local_locks_guard = threading.Lock()
        # PostgreSQL: the connection holding each source's advisory lock, per
        # holding thread, so that thread's page writes can check it is alive.
        self._lock_conns: dict[tuple[str, int], sa.Connection] = {}

    # -- writing ---------------------------------------------------------------

    def write_page(
        self,
        source: str,
        records: Sequence[EventRecord],
        rejected: Sequence[RejectedRecord],
        cursor: Mapping[str, Any] | None,
        now: datetime,
        *,
        sink: CursorSink | None = None,
        likely_new: bool = False,
        durable: bool = False,
    ) -> WriteResult:
        """Store one page and the cursor after it in one transaction.

        ``sink`` decides where the cursor goes (the live ``sync_state.cursor``
        when None; a backfill window's position; nowhere). ``cursor`` None
        leaves the stored position as it is. ``likely_new``: the caller
        expects none of the events to be stored yet (the previous page of a
        pass was all new); PostgreSQL then tries a plain ``COPY`` first. The
        result is the same either way. ``durable``: return only once the
        commit is on disk (PostgreSQL's synchronous commit, whatever the
        server's default), for rows the caller is about to vouch for to
        someone else (a webhook acknowledged to the vendor).
        """
        unique = dedupe_newest(records)
        self._check_lock(source)
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Without ``durable`` it is safe to skip the WAL flush wait: a
                # page's rows and its cursor commit together, so a server crash
                # can only lose the newest pages *with* their cursor, and the
                # next pass fetches them again. (The rotated refresh token keeps
                # full durability.) SQLite's WAL with synchronous=NORMAL is
                # durable across process crashes either way.
                conn.exec_driver_sql(
                    f"SET LOCAL synchronous_commit TO {'ON' if durable else 'OFF'}"
                )
                inserted, updated = self._merge_postgres(conn, source, unique, now, likely_new)
            else:
                inserted, updated = self._merge_sqlite(conn, source, unique, now)
            self._write_rejected(conn, source, rejected, now)
            if cursor is not None:
                if sink is None:
                    self.save_cursor(conn, source, dict(cursor), now)
                else:
                    sink.save(conn, cursor, now)
        return WriteResult(
            inserted=inserted,
            updated=updated,
            unchanged=len(records) - inserted - updated,
            rejected=len(rejected),
        )

    def _merge_postgres(
        self,
        conn: sa.Connection,
        source: str,
        records: Sequence[EventRecord],
        now: datetime,
        likely_new: bool,
    ) -> tuple[int, int]:
        if not records:
            return 0, 0
        raw = conn.connection.driver_connection
        assert raw is not None
        try:
            if likely_new and _copy_new(raw, source, records, now):
                return len(records), 0
            return _copy_and_merge(raw, source, records, now)
        except psycopg.Error as exc:
            # Same exception family as every other statement (SQLAlchemy's).
            raise sa.exc.DBAPIError.instance(_PG_MERGE, None, exc, psycopg.Error) from exc

    def _merge_sqlite(
        self, conn: sa.Connection, source: str, records: Sequence[EventRecord], now: datetime
    ) -> tuple[int, int]:
        if not records:
            return 0, 0
        raw = conn.connection.driver_connection
        assert raw is not None
        existing = self._existing_keys(conn, source, [r.event_key for r in records])
        before = raw.total_changes
        stamp = _sqlite_time(now)
        conn.exec_driver_sql(
            _SQLITE_UPSERT,
            [
                (
                    source, r.event_key, r.vendor, _sqlite_time(r.occurred_at), r.event_code,
                    r.category, r.label, r.door_id, r.door_name, r.person_id, r.person_name,
                    r.credential, r.system_id, r.sequence_id, _sqlite_time(r.source_updated_at),
                    r.payload.decode(), stamp, stamp,
                )
                for r in records
            ],
        )  # fmt: skip
        written = raw.total_changes - before
        inserted = len(records) - existing
        return inserted, written - inserted

    @staticmethod
    def _existing_keys(conn: sa.Connection, source: str, keys: Sequence[str]) -> int:
        found = 0
        for start in range(0, len(keys), 500):  # stay under SQLite's variable limit
            chunk = keys[start : start + 500]
            query = sa.select(sa.func.count()).where(
                events.c.source == source, events.c.event_key.in_(chunk)
            )
            found += int(conn.execute(query).scalar_one())
        return found

    def _write_rejected(
        self,
        conn: sa.Connection,
        source: str,
        rejected: Sequence[RejectedRecord],
        now: datetime,
    ) -> None:
        """One row per vendor record: by ``event_key`` when it has one, else by content.

        A keyed record re-served with another body (a name filled in later)
        updates its row; its raw, reason and time become the latest seen.
        """
        if not rejected:
            return
        keyed: dict[str, dict[str, Any]] = {}
        by_content: dict[str, dict[str, Any]] = {}
        for item in rejected:
            raw = _raw_json(item.raw)
            digest = hashlib.sha256(raw).hexdigest()
            row = {
                "source": source,
                "rejected_at": now,
                "last_seen_at": now,
                "reason": item.reason,
                "occurred_at": item.occurred_at,
                "raw": json.loads(raw),
                "raw_sha256": digest,
                "event_key": item.event_key,
                "placed_at": item.placed_at,
            }
            if item.event_key is None:
                by_content[digest] = row
            else:
                keyed[item.event_key] = row
        if keyed:
            self._adopt_unkeyed(conn, list(keyed.values()))
            insert = self._insert(rejected_events)
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["source", "event_key"],
                    index_where=rejected_events.c.event_key.is_not(None),
                    set_={
                        **{
                            c: insert.excluded[c]
                            for c in ("raw", "raw_sha256", "reason", "occurred_at", "last_seen_at")
                        },
                        "placed_at": _first_placement(insert),
                    },
                ),
                list(keyed.values()),
            )
        if by_content:
            insert = self._insert(rejected_events)
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["source", "raw_sha256"],
                    set_={
                        "last_seen_at": insert.excluded.last_seen_at,
                        "placed_at": _first_placement(insert),
                    },
                ),
                list(by_content.values()),
            )

    @staticmethod
    def _adopt_unkeyed(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Give rows stored before ``event_key`` existed the key of the same content.

        Such a row has the same ``raw_sha256`` as an incoming keyed record, and
        would otherwise collide with it. A second such row for a key that
        already has one is the duplicate the key exists to prevent: dropped.
        """
        params = [{"s": r["source"], "k": r["event_key"], "h": r["raw_sha256"]} for r in rows]
        t = rejected_events
        held = t.alias("held")
        conn.execute(
            t.update()
            .where(
                t.c.source == sa.bindparam("s"),
                t.c.raw_sha256 == sa.bindparam("h"),
                t.c.event_key.is_(None),
                ~sa.exists().where(
                    held.c.source == sa.bindparam("s"), held.c.event_key == sa.bindparam("k")
                ),
            )
            .values(event_key=sa.bindparam("k")),
            params,
        )
        conn.execute(
            t.delete().where(
                t.c.source == sa.bindparam("s"),
                t.c.raw_sha256 == sa.bindparam("h"),
                t.c.event_key.is_(None),
            ),
            [{"s": p["s"], "h": p["h"]} for p in params],
        )

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def save_cursor(
        self, conn: sa.Connection, source: str, cursor: dict[str, Any], now: datetime
    ) -> None:
        """Write the live cursor of ``source`` inside the caller's transaction."""
        insert = self._insert(sync_state).values(source=source, cursor=cursor, updated_at=now)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["source"],
                set_={"cursor": insert.excluded.cursor, "updated_at": insert.excluded.updated_at},
            )
        )

    def _update_state(self, source: str, now: datetime, **values: Any) -> None:
        insert = self._insert(sync_state).values(source=source, cursor={}, updated_at=now, **values)
        with self.engine.begin() as conn:
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["source"], set_={"updated_at": now, **values}
                )
            )

    def save_refresh_token(
        self, source: str, token: str, now: datetime, origin: str | None = None
    ) -> None:
        """Persist a rotated OAuth refresh token at once, in its own transaction.

        ``origin`` is the fingerprint of the configured token it descends from
        (:func:`syncd.sources.auth.token_fingerprint`), never the token itself.
        """
        values: dict[str, Any] = {"refresh_token": token}
        if origin is not None:
            values["refresh_token_origin"] = origin
        self._update_state(source, now, **values)

    def record_success(self, source: str, now: datetime) -> None:
        """A pass finished; the first one also starts the reconciliation clock."""
        insert = self._insert(sync_state).values(
            source=source,
            cursor={},
            updated_at=now,
            last_success_at=now,
            consecutive_failures=0,
            reconciled_at=now,
        )
        with self.engine.begin() as conn:
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["source"],
                    set_={
                        "updated_at": now,
                        "last_success_at": now,
                        "consecutive_failures": 0,
                        "reconciled_at": sa.func.coalesce(sync_state.c.reconciled_at, now),
                    },
                )
            )

    def record_pass_started(self, source: str, now: datetime) -> None:
        """A pass of ``source`` begins (under its lock): replicas read it to skip a pass
        that another process has just made (:func:`syncd.scheduler.pass_due`)."""
        self._update_state(source, now, pass_started_at=now)

    def record_reconciled(self, source: str, now: datetime) -> None:
        self._update_state(source, now, reconciled_at=now)

    def record_failure(self, source: str, error: str, now: datetime) -> None:
        insert = self._insert(sync_state).values(
            source=source,
            cursor={},
            updated_at=now,
            last_error=error,
            last_error_at=now,
            consecutive_failures=1,
        )
        with self.engine.begin() as conn:
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["source"],
                    set_={
                        "updated_at": now,
                        "last_error": error,
                        "last_error_at": now,
                        "consecutive_failures": sync_state.c.consecutive_failures + 1,
                    },
                )
            )

    # -- the shared OAuth grant -------------------------------------------------

    def load_grant(self, source: str) -> OAuthGrant:
        """The source's stored OAuth grant (empty when none is stored)."""
        t = sync_state
        query = sa.select(
            t.c.refresh_token, t.c.refresh_token_origin, t.c.access_token,
            t.c.access_token_expires_at,
        ).where(t.c.source == source)  # fmt: skip
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return OAuthGrant()
        until = row.access_token_expires_at
        return OAuthGrant(
            refresh_token=row.refresh_token,
            origin=row.refresh_token_origin,
            access_token=row.access_token,
            access_until=None if until is None else until.timestamp(),
        )

    def save_grant(self, source: str, grant: OAuthGrant, now: datetime) -> None:
        """Commit ``grant`` (refresh token, its origin, access token, expiry) in one transaction."""
        until = grant.access_until
        self._update_state(
            source,
            now,
            refresh_token=grant.refresh_token,
            refresh_token_origin=grant.origin,
            access_token=grant.access_token,
            access_token_expires_at=None if until is None else datetime.fromtimestamp(until, UTC),
        )

    @contextmanager
    def refresh_lock(self, source: str, timeout: float = 60.0) -> Iterator[None]:
        """Hold the source's OAuth refresh lock for the block, waiting up to ``timeout`` s.

        A key of its own (not the pass lock: a backfill or ``syncd check``
        beside a pass refreshes too). PostgreSQL: a session advisory lock,
        released by the server if the process dies; SQLite: ``flock`` on a
        file beside the database, released by the kernel. Past ``timeout``:
        :class:`CredentialStoreError`.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock("refresh", source) as acquired:
                if acquired:
                    yield
                    return
            if time.monotonic() > deadline:
                raise CredentialStoreError(
                    f"another process has held the OAuth refresh lock of {source} "
                    f"for over {timeout:.0f} s"
                )
            time.sleep(0.05)

    # -- reading ---------------------------------------------------------------

    def load_state(self, source: str) -> SourceState:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sync_state).where(sync_state.c.source == source)).first()
        return SourceState(source=source, cursor={}) if row is None else _state(row)

    def load_codes(self, vendor: str) -> dict[int, CodeInfo]:
        query = sa.select(event_codes.c.code, event_codes.c.label, event_codes.c.category).where(
            event_codes.c.vendor == vendor
        )
        with self.engine.connect() as conn:
            return {
                code: CodeInfo(label, category) for code, label, category in conn.execute(query)
            }

    def count_span(
        self,
        source: str,
        since: datetime,
        until: datetime,
        codes: frozenset[int] | None = None,
    ) -> int:
        """What syncd holds of ``source`` in ``[since, until)``, counted like the vendor counts.

        Stored events not marked deleted (only ``codes`` when given: the
        vendor's listing cannot return others, e.g. remote-control events that
        came by webhook) plus rejected records whose time could be read, or
        that the listing placed (``placed_at``), and whose vendor id is not
        also stored. Reconciliation compares
        this with the vendor's count of the same span.
        """
        in_span = sa.and_(events.c.occurred_at >= since, events.c.occurred_at < until)
        stored = sa.select(sa.func.count()).where(
            events.c.source == source, in_span, events.c.deleted_at.is_(None)
        )
        if codes is not None:
            stored = stored.where(events.c.event_code.in_(sorted(codes)))
        # A record rejected once and stored later (fixed by the vendor) is
        # one vendor event: count it once, or the surplus could hide a gap.
        stored_later = sa.exists().where(
            events.c.source == source, events.c.event_key == rejected_events.c.event_key
        )
        at = sa.func.coalesce(rejected_events.c.occurred_at, rejected_events.c.placed_at)
        rejected = sa.select(sa.func.count()).where(
            rejected_events.c.source == source,
            at >= since,
            at < until,
            sa.or_(rejected_events.c.event_key.is_(None), ~stored_later),
        )
        with self.engine.connect() as conn:
            return int(conn.execute(stored).scalar_one()) + int(conn.execute(rejected).scalar_one())

    def split_point(
        self,
        source: str,
        middle: datetime,
        until: datetime,
        codes: frozenset[int] | None = None,
    ) -> datetime | None:
        """A stored event's time at or after ``middle`` (before ``until``) where no reject sits.

        Reconciliation splits spans there: a reject without a readable time is
        placed at a neighbour's time in the listing, and its true time lies
        between its neighbours'. A split at a listed event's time that is no
        reject's place keeps every such reject on the same side for the vendor
        and for syncd (ties of the very same instant aside), so placement can
        never move a count across a split and mask a missing event.
        """
        query = (
            sa.select(events.c.occurred_at)
            .where(
                events.c.source == source,
                events.c.occurred_at >= middle,
                events.c.occurred_at < until,
                events.c.deleted_at.is_(None),
            )
            .order_by(events.c.occurred_at)
            .limit(64)
        )
        if codes is not None:
            query = query.where(events.c.event_code.in_(sorted(codes)))
        with self.engine.connect() as conn:
            times = [t for (t,) in conn.execute(query)]
            if not times:
                return None
            placed = set(
                conn.execute(
                    sa.select(rejected_events.c.placed_at).where(
                        rejected_events.c.source == source,
                        rejected_events.c.placed_at >= times[0],
                        rejected_events.c.placed_at <= times[-1],
                    )
                ).scalars()
            )
        return next((t for t in times if t not in placed), None)

    def stored_in_span(self, source: str, since: datetime, until: datetime) -> int:
        """Every row of ``source`` in ``[since, until)``, deleted or not, any code."""
        query = sa.select(sa.func.count()).where(
            events.c.source == source, events.c.occurred_at >= since, events.c.occurred_at < until
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def mark_deleted(self, source: str, keys: Sequence[str], now: datetime) -> int:
        """The vendor deleted these events: set ``deleted_at`` (once); the rows stay."""
        marked = 0
        with self.engine.begin() as conn:
            for start in range(0, len(keys), 500):
                result = conn.execute(
                    sa.update(events)
                    .where(
                        events.c.source == source,
                        events.c.event_key.in_(list(keys[start : start + 500])),
                        events.c.deleted_at.is_(None),
                    )
                    .values(deleted_at=now)
                )
                marked += result.rowcount
        return marked

    def mark_absent(
        self,
        source: str,
        since: datetime,
        until: datetime,
        codes: frozenset[int] | None,
        listed: set[str],
        before: datetime,
        now: datetime,
    ) -> list[str]:
        """After a complete read of ``[since, until)``: mark deleted what it no longer lists.

        Only rows of ``codes`` (what the listing can return: never a
        webhook-only event) first stored before the read began (``before``):
        a row another process stored meanwhile may have arrived behind the
        read's position. Returns the keys marked.
        """
        query = sa.select(events.c.event_key).where(
            events.c.source == source,
            events.c.occurred_at >= since,
            events.c.occurred_at < until,
            events.c.deleted_at.is_(None),
            events.c.first_seen_at < before,
        )
        if codes is not None:
            query = query.where(events.c.event_code.in_(sorted(codes)))
        with self.engine.connect() as conn:
            absent = [key for (key,) in conn.execute(query) if key not in listed]
        if absent:
            self.mark_deleted(source, absent, now)
        return absent

    def source_stats(self) -> dict[str, SourceStats]:
        """Row count, newest event (deleted events left out) and rejected count per source."""
        stats: dict[str, SourceStats] = {}
        with self.engine.connect() as conn:
            rejected: dict[str, int] = dict(
                conn.execute(
                    sa.select(rejected_events.c.source, sa.func.count()).group_by(
                        rejected_events.c.source
                    )
                ).all()
            )
            rows = conn.execute(
                sa.select(events.c.source, sa.func.count(), sa.func.max(events.c.occurred_at))
                .where(events.c.deleted_at.is_(None))
                .group_by(events.c.source)
            )
            for source, count, newest in rows:
                stats[source] = SourceStats(
                    int(count), _aggregate_time(newest), int(rejected.get(source, 0))
                )
            for source, count in rejected.items():
                stats.setdefault(source, SourceStats(0, None, int(count)))
        return stats

    def all_states(self) -> dict[str, SourceState]:
        with self.engine.connect() as conn:
            return {row.source: _state(row) for row in conn.execute(sa.select(sync_state))}

    # -- locking ---------------------------------------------------------------

    @contextmanager
    def source_lock(self, source: str) -> Iterator[bool]:
        """Hold the source's lock for the block; yields False if another holds it.

        PostgreSQL: a session advisory lock on a connection kept for the pass,
        released by the server if the process dies. SQLite: ``flock`` on a file
        beside the database (released by the kernel on death), plus a
        thread lock for in-memory databases.
        """
        with self._lock("source", source) as acquired:
            yield acquired

    @contextmanager
    def backfill_lock(self, source: str) -> Iterator[bool]:
        """Like :meth:`source_lock`, but the backfill's own: a key of its own.

        Two backfills of one source never run at once, while a backfill and a
        live pass of that source do: they meet in the idempotent upsert.
        """
        with self._lock("backfill", source) as acquired:
            yield acquired

    @contextmanager
    def _lock(self, namespace: str, source: str) -> Iterator[bool]:
        if self.dialect == "postgresql":
            # The refresh lock is taken inside a pass: it must not stand in for
            # the pass lock's connection, which page writes check.
            track = namespace != "refresh"
            with self._advisory_lock(lock_key(source, namespace), source, track) as acquired:
                yield acquired
        else:
            with self._file_lock(namespace, source) as acquired:
                yield acquired

    @contextmanager
    def _advisory_lock(self, key: int, source: str, track: bool = True) -> Iterator[bool]:
        holder = (source, threading.get_ident())
        with self.engine.connect() as conn:
            acquired = bool(
                conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            )
            conn.commit()
            if acquired and track:
                self._lock_conns[holder] = conn
            try:
                yield acquired
            finally:
                if acquired:
                    if track:
                        self._lock_conns.pop(holder, None)
                    try:
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        conn.commit()
                    except sa.exc.SQLAlchemyError:
                        # The lock's connection is gone, and the lock with it.
                        conn.invalidate()

    def _check_lock(self, source: str) -> None:
        """Refuse a page write if this thread's lock connection for ``source`` died.

        Its session lock died with it: another replica may be working the
        source now, so this pass must not commit another page.
        """
        conn = self._lock_conns.get((source, threading.get_ident()))
        if conn is None:
            return
        try:
            conn.execute(sa.text("SELECT 1"))
            conn.commit()
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseUnavailable(
                f"lost the lock of source {source} (its connection failed): pass stopped"
            ) from exc

    @contextmanager
    def _file_lock(self, namespace: str, source: str) -> Iterator[bool]:
        with self._local_locks_guard:
            local = self._local_locks.setdefault((namespace, source), threading.Lock())
        if not local.acquire(blocking=False):
            yield False
            return
        try:
            path = self._lock_path(namespace, source)
            if path is None:
                yield True
                return
            import fcntl

            with path.open("a+") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                # The refresh lock is taken by read-only commands too (`syncd
                # check` refreshes), which must leave no file behind: it is
                # removed while held. A process that opened the old file before
                # the removal holds a lock on a gone inode, sees that, and
                # counts as not having acquired it (its caller tries again).
                ephemeral = namespace == "refresh"
                if ephemeral and not _still_linked(handle.fileno(), path):
                    yield False
                    return
                try:
                    yield True
                finally:
                    if ephemeral:
                        path.unlink(missing_ok=True)
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            local.release()

    def _lock_path(self, namespace: str, source: str) -> Path | None:
        database = self.engine.url.database
        if not database or database == ":memory:":
            return None
        # The live lock keeps its original file name (running daemons use it).
        suffix = "" if namespace == "source" else f".{namespace}"
        return Path(f"{database}.{source}{suffix}.lock")


def _state(row: sa.Row[Any]) -> SourceState:
    return SourceState(
        source=row.source,
        cursor=dict(row.cursor or {}),
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        consecutive_failures=row.consecutive_failures,
        refresh_token=row.refresh_token,
        reconciled_at=row.reconciled_at,
        refresh_token_origin=row.refresh_token_origin,
        paused_at=row.paused_at,
        paused_reason=row.paused_reason,
        paused_by=row.paused_by,
        pass_started_at=row.pass_started_at,
    )


def _first_placement(insert: Any) -> Any:
    """A re-served reject keeps the place it was first given (counts stay put)."""
    return sa.func.coalesce(rejected_events.c.placed_at, insert.excluded.placed_at)


def _aggregate_time(value: datetime | str | None) -> datetime | None:
    # SQLite's max() returns the stored text: the column type is lost.
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def _still_linked(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed or replaced)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def lock_key(source: str, namespace: str = "source") -> int:
    """A stable signed 64-bit advisory-lock key for a source name in ``namespace``.

    ``source`` is the live pass's lock, ``backfill`` the backfill's,
    ``refresh`` the OAuth refresh lock.
    """
    digest = hashlib.sha256(f"syncd:{namespace}:{source}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class StoredCredentials:
    """One source's OAuth grant in the database: a :class:`~syncd.sources.auth.CredentialStore`.

    Database failures become :class:`CredentialStoreError` with the driver's
    first line only: a failed statement's parameters are the tokens.
    """

    def __init__(
        self, store: Store, source: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.source = source
        self.clock = clock

    def load(self) -> OAuthGrant:
        try:
            return self.store.load_grant(self.source)
        except sa.exc.SQLAlchemyError as exc:
            raise CredentialStoreError(_db_problem("read", exc)) from None

    @contextmanager
    def locked(self) -> Iterator[OAuthGrant]:
        try:
            with self.store.refresh_lock(self.source):
                yield self.load()
        except sa.exc.SQLAlchemyError as exc:
            raise CredentialStoreError(_db_problem("lock", exc)) from None

    def save(self, grant: OAuthGrant) -> None:
        try:
            self.store.save_grant(self.source, grant, self.clock())
        except sa.exc.SQLAlchemyError as exc:
            raise CredentialStoreError(_db_problem("save", exc)) from None


def _db_problem(what: str, exc: sa.exc.SQLAlchemyError) -> str:
    from syncd.db.engine import first_line

    return f"the database refused to {what} the OAuth credentials: {first_line(exc)}"
