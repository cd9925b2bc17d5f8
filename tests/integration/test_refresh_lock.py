"""The OAuth refresh lock: its own key beside the pass and backfill locks, waited for
(not skipped), released when its holder goes, on PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from syncd.db.store import Store, StoredCredentials
from syncd.errors import CredentialStoreError
from syncd.sources.auth import OAuthGrant

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def test_the_refresh_lock_is_not_the_pass_lock(store: Store) -> None:
    with store.source_lock("hq") as acquired, store.backfill_lock("hq") as backfill:
        assert acquired
        assert backfill
        with store.refresh_lock("hq", timeout=1):
            pass
        # The pass's lock connection is still the one its page writes check.
        if store.dialect == "postgresql":
            assert ("hq", threading.get_ident()) in store._lock_conns


def test_a_second_holder_waits_then_gets_it(store: Store) -> None:
    other = Store(store.engine)  # another process: its own thread locks, its own sessions
    entered = threading.Event()
    released_at: list[float] = []

    def hold() -> None:
        with store.refresh_lock("hq"):
            entered.set()
            time.sleep(0.5)
            released_at.append(time.monotonic())

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(5)
    with other.refresh_lock("hq", timeout=5):
        got_at = time.monotonic()
    thread.join()
    assert got_at >= released_at[0]
    with store.refresh_lock("hq"), pytest.raises(CredentialStoreError, match="held"):  # noqa: SIM117
        with other.refresh_lock("hq", timeout=0.2):
            pass


def test_grant_round_trip(store: Store) -> None:
    credentials = StoredCredentials(store, "hq", lambda: NOW)
    assert credentials.load() == OAuthGrant()
    grant = OAuthGrant("r1", "ab" * 32, "a1", NOW.timestamp() + 100)
    with credentials.locked() as before:
        assert before == OAuthGrant()
        credentials.save(grant)
    assert credentials.load() == grant
    assert "r1" not in repr(grant)
    assert "a1" not in repr(grant)
