"""The contract between the sync engine and a vendor connector.

A connector is one module in ``syncd.sources`` named after its ``kind`` that
exposes ``SOURCE``: a class implementing :class:`Source`. The engine finds it
by that name, so adding a vendor touches nothing outside its module.

A connector receives an ``httpx.Client`` (its transport, timeouts and base URL
are the caller's business), its :class:`~syncd.config.SourceConfig` and a
:class:`SourceContext`; it never opens a database connection itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from syncd.records import EventRecord, RejectedRecord

if TYPE_CHECKING:
    import httpx

    from syncd.config import SourceConfig
    from syncd.sources.auth import CredentialStore
    from syncd.sources.http import RetryHooks

Cursor = Mapping[str, Any]
"""A connector's position, stored as JSON in ``sync_state.cursor``."""


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """One row of ``event_codes``: the reference data BI tools also read."""

    label: str
    category: str


@dataclass(frozen=True, slots=True)
class Page:
    """What one fetch produced, and where the source stands once it is stored.

    The engine commits ``records``, ``rejected`` and ``cursor`` in one
    transaction: a crash before the commit replays the page, after it resumes
    behind it.
    """

    records: list[EventRecord]
    rejected: list[RejectedRecord]
    cursor: dict[str, Any]


@dataclass
class SourceContext:
    """What the engine lends a connector for one pass.

    ``codes`` maps the vendor's event codes to labels and categories (from the
    ``event_codes`` table). ``refresh_token`` is the persisted (possibly
    rotated) OAuth refresh token
    and ``refresh_token_origin`` the fingerprint of the configured token it
    descends from (:func:`syncd.sources.auth.choose_refresh_token`);
    ``save_refresh_token(token, origin)`` commits a new one with its origin at
    once, before it is used.
    ``credentials`` (the engine's: the database) holds the source's OAuth
    grant as state shared by every process; a connector given one reads and
    saves the grant there, under the source's refresh lock, instead of
    trusting ``refresh_token`` (:class:`syncd.sources.auth.SharedOAuth`).
    ``retry_hooks`` (the daemon's) make retry waits interruptible and counted;
    a connector hands them on with ``RetryPolicy.for_source(config, context)``.
    """

    codes: Mapping[int, CodeInfo] = field(default_factory=dict)
    refresh_token: str | None = None
    save_refresh_token: Callable[[str, str], None] | None = None
    refresh_token_origin: str | None = None
    retry_hooks: RetryHooks | None = None
    credentials: CredentialStore | None = None


class Source(Protocol):
    """One configured vendor account.

    Besides the live pass (:meth:`pages`), a connector offers what history
    loads and repairs need: reading one bounded window (:meth:`window_pages`,
    for ``syncd backfill`` and reconciliation re-reads) and the vendor's own
    count of a span (:meth:`vendor_count`, for reconciliation; None when the
    vendor has none). ``listed_codes`` are the event codes its listing can
    return (None: all), so local counts compare like with like.
    """

    listed_codes: frozenset[int] | None

    def __init__(
        self, config: SourceConfig, client: httpx.Client, context: SourceContext
    ) -> None: ...

    def pages(self, cursor: Cursor, now: datetime) -> Iterator[Page]:
        """Yield the pages of one incremental pass starting at ``cursor``.

        ``now`` is the pass's start time; the connector never reads the clock
        itself for cursor arithmetic. An empty ``cursor`` means a first pass.
        """
        ...

    def window_pages(
        self,
        since: datetime,
        until: datetime,
        position: Cursor,
        now: datetime,
        *,
        end_total: int | None = None,
    ) -> Iterator[Page]:
        """Yield the pages of ``[since, until)``; each ``Page.cursor`` is the position.

        ``position`` is one a page of this window carried (resume) or empty.
        The last page's position is ``{"done": True}`` when the read is
        complete, whatever order the vendor lists in (it stops early only
        when what it read accounts for the vendor's count of the window), or
        ``{"held": ..., "systems": [...]}`` when the vendor cannot vouch for
        the window yet (IntServ's ``least_sync_time``). Only rows inside the
        window are yielded. ``end_total``: the vendor's count since ``until``
        when the caller just asked for it (:meth:`window_totals`).
        """
        ...

    def window_totals(self, bounds: Iterable[datetime]) -> dict[datetime, int | None]:
        """The vendor's count of its listed events since each bound (None: no counts).

        Asked newest bound first, so a span's count from two of them can only
        run high (an extra read), never low.
        """
        ...

    def next_pass_since(self, cursor: Cursor, now: datetime) -> datetime:
        """Where the next live pass begins reading, given the live ``cursor``.

        What is older is found only by reconciliation (a *late upload*); what
        is newer the next pass reads anyway (*new since the last pass*).
        """
        ...

    def vendor_count(self, since: datetime, until: datetime) -> int | None:
        """The vendor's count of its listed events in ``[since, until)``, or None."""
        ...
