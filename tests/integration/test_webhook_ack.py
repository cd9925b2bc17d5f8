"""Webhook events are acknowledged only once durably stored (DESIGN.md "Webhooks").

The :class:`WebhookFetcher` with a real store on real PostgreSQL and the
DoorFlow simulator over loopback; the database refuses writes by a ``REVOKE``
on syncd's own role. The simulator's ``on_ack`` hook looks in the database as
each acknowledgement arrives.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from syncd.config import load_settings
from syncd.db.engine import create_engine
from syncd.db.schema import events
from syncd.db.store import Store
from syncd.metrics import Metrics
from syncd.scheduler import PassScheduler
from syncd.simulators import DoorFlowSimulator
from syncd.webhooks import Notification, WebhookFetcher, parse_notifications
from tests.integration.daemonhelpers import source_toml, wait_for, write_config

REMOTE_CONTROL = range(50, 64)  # not listable: only a webhook brings these
UNUSED_HOOK = "http://127.0.0.1:9/never-posted"  # notifications are handed over directly


@pytest.fixture
def syncd_role(pg_url: str) -> Iterator[tuple[str, Callable[[str], None]]]:
    """A login role with syncd's grants on ``pg_url``'s database: (its URL, admin SQL)."""
    name = f"syncd_hook_{uuid.uuid4().hex[:8]}"
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as admin:

        def sql(statement: str) -> None:
            admin.execute(statement)  # type: ignore[arg-type]

        sql(f"CREATE ROLE {name} LOGIN")
        sql(f"GRANT USAGE ON SCHEMA public TO {name}")
        sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}")
        sql(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {name}")
        yield make_url(pg_url).set(username=name).render_as_string(hide_password=False), sql
        sql(f"DROP OWNED BY {name}")
        sql(f"DROP ROLE {name}")


class _World:
    """A simulator, a fetcher on syncd's role, and what the vendor saw."""

    def __init__(self, sim: DoorFlowSimulator, url: str, admin: sa.Engine, tmp: Path, **knobs: int):
        config = write_config(
            tmp / "syncd.toml",
            0,
            [source_toml("hq", "doorflow", sim.base_url, token_env="T", webhook_secret_env="S")],
        )
        settings = load_settings(config, url, environ={"T": sim.token, "S": "whsec_ack"})
        self.engine = create_engine(url)
        self.commits: list[str] = []
        event.listen(self.engine, "commit", self._commit_setting)
        self.metrics = Metrics()
        store = Store(self.engine)
        self.passes = PassScheduler(store, settings.sources, workers=1, metrics=self.metrics)
        for config_ in settings.sources:
            self.metrics.add_source(config_.name, config_.kind, webhooks=True)
        self.fetcher = WebhookFetcher(
            store,
            self.passes.runtime,
            self.passes.configs(),
            self.metrics,
            self.passes.webhook_hooks,
            stop=self.passes.stopping,
            delays=(0.05, 0.1, 0.2),
            store_backoff_initial=0.1,
            store_backoff_max=0.4,
            **knobs,
        )
        self.admin = admin
        self.acks: list[tuple[int, str, bool]] = []  # (event id, token, row there by then)
        self._guard = threading.Lock()
        sim.on_ack = self._on_ack

    def _commit_setting(self, conn: sa.Connection) -> None:
        # The setting the commit about to happen runs under.
        setting = conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()
        self.commits.append(str(setting))

    def _on_ack(self, event_id: int, token: str) -> None:
        stored = event_id in stored_ids(self.admin)
        with self._guard:
            self.acks.append((event_id, token, stored))

    def metric(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "syncd_webhook_notifications_total", {"source": "hq", "outcome": outcome}
        )
        return value or 0.0

    def dropped(self) -> float:
        value = self.metrics.registry.get_sample_value(
            "syncd_webhook_dropped_total", {"source": "hq"}
        )
        assert value is not None, "the dropped series exists from the start"
        return value

    def close(self) -> None:
        self.fetcher.close()
        self.passes.stop(0)
        self.engine.dispose()


def stored_ids(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        query = sa.select(events.c.event_key).where(events.c.source == "hq")
        return {int(key) for (key,) in conn.execute(query)}


def notifications(sim: DoorFlowSimulator) -> list[Notification]:
    parsed = parse_notifications(orjson.dumps(sim.pending_webhooks()))
    assert parsed
    return parsed


@pytest.fixture
def admin_engine(pg_engine: sa.Engine) -> sa.Engine:
    """The test database (tables emptied) as its owner: what is really stored."""
    return pg_engine


def test_an_event_is_acknowledged_only_once_its_row_has_committed_durably(
    syncd_role: tuple[str, Callable[[str], None]], admin_engine: sa.Engine, tmp_path: Path
) -> None:
    url, sql = syncd_role
    role = make_url(url).username
    sim = DoorFlowSimulator(seed=8, history=0, webhook_url=UNUSED_HOOK)
    with sim:
        world = _World(sim, url, admin_engine, tmp_path)
        try:
            sim.generate(40)
            truth = sim.truth()
            remote = {i for i, e in truth.items() if e["event_code"] in REMOTE_CONTROL}
            assert remote, "the seed gives remote-control events"
            notes = notifications(sim)
            tokens = {n.ack_token for n in notes}

            sql(f"REVOKE INSERT, UPDATE ON events FROM {role}")
            world.fetcher.submit("hq", notes)
            wait_for(
                lambda: sim.stats.get("events_served", 0) >= len(truth), 10, "every event fetched"
            )
            world.fetcher.submit("hq", notes)  # the vendor redelivers: not taken twice
            # Several failed writes (backoff 0.1 s to 0.4 s) while the database refuses.
            threading.Event().wait(2.0)
            assert sim.acks == [], "acknowledged while the database refused the rows"
            assert stored_ids(admin_engine) == set()
            assert len(sim.pending_webhooks()) == len(truth)
            assert world.fetcher.queued == len(truth)
            assert world.metric("already_queued") == len(truth)
            served = sim.stats["events_served"]

            sql(f"GRANT INSERT, UPDATE ON events TO {role}")
            wait_for(lambda: not sim.pending_webhooks(), 10, "every notification acknowledged")
            wait_for(lambda: world.fetcher.queued == 0, 5, "nothing left in hand")
        finally:
            world.close()

    assert stored_ids(admin_engine) == set(truth)
    assert remote <= {event_id for event_id, _, _ in world.acks}
    assert Counter(token for _, token, _ in world.acks) == Counter(tokens), "each acked once"
    assert all(stored for _, _, stored in world.acks), "an ack came before its row"
    # The fetched bodies were kept while waiting: after the database came back
    # the vendor only saw the acknowledging requests.
    assert sim.stats["events_served"] == served + len(truth)
    assert world.commits, "nothing committed"
    assert set(world.commits) == {"on"}, world.commits
    assert world.metric("acknowledged") == len(truth)
    assert world.dropped() == 0


def test_what_overflows_the_queue_is_counted_and_left_to_redelivery(
    syncd_role: tuple[str, Callable[[str], None]], admin_engine: sa.Engine, tmp_path: Path
) -> None:
    url, sql = syncd_role
    role = make_url(url).username
    sim = DoorFlowSimulator(seed=9, history=0, webhook_url=UNUSED_HOOK)
    with sim:
        world = _World(sim, url, admin_engine, tmp_path, max_queued=5)
        try:
            sim.generate(12)
            truth = sim.truth()
            sql(f"REVOKE INSERT, UPDATE ON events FROM {role}")  # holds the first five in hand
            world.fetcher.submit("hq", notifications(sim))
            assert world.dropped() == len(truth) - 5
            assert world.fetcher.queued == 5
            sql(f"GRANT INSERT, UPDATE ON events TO {role}")
            wait_for(lambda: len(sim.pending_webhooks()) == len(truth) - 5, 10, "five acked")
            wait_for(lambda: world.fetcher.queued == 0, 5, "the five let go")
            # The vendor redelivers what is still unacknowledged: five at a time get in.
            for _ in range(3):
                world.fetcher.submit("hq", notifications(sim))
                wait_for(lambda: world.fetcher.queued == 0, 10, "the batch let go")
                if not sim.pending_webhooks():
                    break
        finally:
            world.close()
    assert not sim.pending_webhooks()
    assert stored_ids(admin_engine) == set(truth)
    assert len(world.acks) == len(truth)
    assert world.dropped() == (len(truth) - 5) + (len(truth) - 10)
