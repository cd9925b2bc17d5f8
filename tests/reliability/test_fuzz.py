"""10,000 fuzzed records per vendor, over real HTTP, through real passes, into both databases.

Each Hypothesis example is a batch of DoorFlow and IntServ records from
:mod:`tests.fuzzing` (any JSON in any field, poison strings, huge integers)
and a wire form for it: DoorFlow's reference shape (bare array, with or
without ``Total``/``Per-Page``) or its guide shape (``{events,
pagination}``); IntServ pages chained by ``continuation_key``; the page size
syncd asks for; bodies ASCII-escaped or raw UTF-8. A loopback HTTP server
plays each vendor, and :func:`syncd.engine.run_pass` reads the batch as a
live pass does (its own client, ``send`` + ``parse_page``, split,
normalize, one transaction per commit unit) into PostgreSQL and into SQLite.

What must hold for every batch, vendor and database: the pass ends ok, every
record was served, and the records served are exactly the rows stored plus
the rows rejected (ids are unique or unreadable per batch, see
:mod:`tests.fuzzing`).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.config import Secret, SourceConfig
from syncd.db.schema import events, rejected_events
from syncd.db.store import Store
from syncd.engine import run_pass
from syncd.sources.doorflow import EVENTS_PATH as DOORFLOW_PATH
from syncd.sources.intserv import EVENTS_PATH as INTSERV_PATH
from tests.fuzzing import doorflow_record, intserv_record
from tests.reliability.loopback import LoopbackServer, Reply, Request
from tests.reliability.scale import scaled
from tests.reliability.secretscan import assert_no_secrets

RECORDS = scaled(10_000, 1_000)  # per vendor, each into both databases
BATCH = 16  # records per vendor per example (more overruns Hypothesis's entropy budget)
TOKEN = "df-fuzz-token-7c1e9a"
API_KEY = "is-fuzz-key-0b44d2"
FIRST_SERIAL = 1_000_000
JSON_TYPE = {"Content-Type": "application/json"}
TLS = httpx.create_ssl_context()


@dataclass
class Wire:
    """How one batch is served."""

    doorflow_shape: str  # "reference" (bare array) or "guide" ({events, pagination})
    stated: bool  # reference: Total and Per-Page headers sent
    ascii: bool  # bodies with \\u escapes, else raw UTF-8 where it can be
    page_size: int  # what syncd asks for


@dataclass
class Batch:
    vendor: str
    records: list[Any]
    wire: Wire
    served: set[int] = field(default_factory=set)  # indexes of the records served


WIRES = st.builds(
    Wire,
    doorflow_shape=st.sampled_from(["reference", "guide"]),
    stated=st.booleans(),
    ascii=st.booleans(),
    page_size=st.sampled_from([3, 7, BATCH, 1000]),
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Any], list[Any], Wire]:
    serials = range(FIRST_SERIAL, FIRST_SERIAL + BATCH)
    spoil = st.sampled_from([10, 100])  # per record: mostly rejected, or mostly stored
    return (
        [draw(doorflow_record(n, draw(spoil))) for n in serials],
        [draw(intserv_record(n, draw(spoil))) for n in serials],
        draw(WIRES),
    )


def encode(payload: Any, ascii: bool) -> bytes:
    """JSON as a vendor sends it: escaped, or raw UTF-8 (a lone surrogate forces escapes)."""
    if not ascii:
        try:
            return json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            pass
    return json.dumps(payload, ensure_ascii=True).encode()


class FuzzVendor:
    """Both vendors on one loopback server: ``/{source}/api/3/events``, ``/{source}/v1/...``."""

    def __init__(self) -> None:
        self.batches: dict[str, Batch] = {}
        self.server = LoopbackServer(self.handle)

    def handle(self, request: Request) -> Reply:
        source, _, path = request.path.lstrip("/").partition("/")
        batch = self.batches.get(source)
        if batch is None:
            return Reply(404, b'{"error":"not_found"}', JSON_TYPE)
        if batch.vendor == "doorflow" and request.method == "GET" and "/" + path == DOORFLOW_PATH:
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return Reply(401, b'{"error":"invalid_token"}', JSON_TYPE)
            return self._doorflow(batch, request)
        if batch.vendor == "intserv" and request.method == "POST" and "/" + path == INTSERV_PATH:
            if request.headers.get("Authorization") != f"Bearer {API_KEY}":
                return Reply(401, b'{"error":"unauthorized"}', JSON_TYPE)
            return self._intserv(batch, request)
        return Reply(404, b'{"error":"not_found"}', JSON_TYPE)

    def _doorflow(self, batch: Batch, request: Request) -> Reply:
        query = request.query
        page = int(query["page"][0])
        guide = batch.wire.doorflow_shape == "guide"
        size = int(query["per_page" if guide else "n"][0])
        start = (page - 1) * size
        items = batch.records[start : start + size]
        batch.served.update(range(start, start + len(items)))
        headers = dict(JSON_TYPE)
        if guide:
            payload: Any = {
                "events": items,
                "pagination": {
                    "total_count": len(batch.records),
                    "per_page": size,
                    "current_page": page,
                    "total_pages": -(-len(batch.records) // size),
                },
            }
        else:
            payload = items
            if batch.wire.stated:
                headers |= {"Total": str(len(batch.records)), "Per-Page": str(size)}
        return Reply(200, encode(payload, batch.wire.ascii), headers)

    def _intserv(self, batch: Batch, request: Request) -> Reply:
        asked = json.loads(request.body)
        key = asked.get("continuation_key")
        start = int(key[1:]) if key else 0
        limit = int(asked["limit"])
        items = batch.records[start : start + limit]
        batch.served.update(range(start, start + len(items)))
        more = start + limit < len(batch.records)
        payload = {
            "least_sync_time": "2026-03-02T00:00:00Z",
            "has_more": more,
            "continuation_key": f"k{start + limit}" if more else None,
            "events": items,
        }
        return Reply(200, encode(payload, batch.wire.ascii), JSON_TYPE)


def source_config(name: str, vendor: str, base_url: str, page_size: int) -> SourceConfig:
    credentials: dict[str, Any] = (
        {"token": Secret(TOKEN)} if vendor == "doorflow" else {"api_key": Secret(API_KEY)}
    )
    return SourceConfig(
        name=name,
        kind=vendor,
        base_url=base_url,
        page_size=page_size,
        max_retries=2,
        max_retry_wait=0.5,
        timeout=10.0,
        **credentials,
    )


def rows(store: Store, source: str) -> tuple[int, int, list[str]]:
    """(rows in events, rows in rejected_events, event keys) of ``source``."""
    with store.engine.connect() as conn:
        keys = [
            k
            for (k,) in conn.execute(sa.select(events.c.event_key).where(events.c.source == source))
        ]
        rejected = conn.execute(
            sa.select(sa.func.count()).where(rejected_events.c.source == source)
        ).scalar_one()
    return len(keys), int(rejected), keys


def test_ten_thousand_fuzzed_records_over_http_into_both_databases(
    pg_store: Store, sqlite_engine: sa.Engine, capfd: pytest.CaptureFixture[str]
) -> None:
    stores = {"postgresql": pg_store, "sqlite": Store(sqlite_engine)}
    vendor = FuzzVendor()
    totals: Counter[tuple[str, str, str]] = Counter()  # (vendor, database, what)
    problems: list[str] = []
    examples = itertools.count()

    @settings(
        max_examples=-(-RECORDS // BATCH),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(batches())
    def one_batch(batch: tuple[list[Any], list[Any], Wire]) -> None:
        doorflow_items, intserv_items, wire = batch
        n = next(examples)
        for kind, items in (("doorflow", doorflow_items), ("intserv", intserv_items)):
            for database, store in stores.items():
                name = f"{kind[:2]}{n}-{database[:2]}"
                served = vendor.batches[name] = Batch(kind, items, wire)
                config = source_config(name, kind, f"{vendor.server.url}/{name}", wire.page_size)
                # As the daemon does (scheduler.shared_tls_transports): one TLS
                # context for every client, not ~40 ms of CPU per pass.
                result = run_pass(store, config, transport=httpx.HTTPTransport(verify=TLS))
                if not result.ok:
                    problems.append(f"{name}: {result.error}")
                assert result.ok, (name, wire, result.error)
                stored, rejected, keys = rows(store, name)
                assert served.served == set(range(len(items))), (name, wire, "not all served")
                assert stored + rejected == len(items), (name, wire, stored, rejected, items)
                serials = {str(FIRST_SERIAL + i) for i in range(len(items))}
                assert all(key.rsplit("|", 1)[-1] in serials for key in keys), keys
                totals[kind, database, "fuzzed"] += len(items)
                totals[kind, database, "stored"] += stored
                totals[kind, database, "rejected"] += rejected
                del vendor.batches[name]

    with vendor.server:
        one_batch()
    assert not vendor.server.errors, vendor.server.errors

    lines = ["fuzzed records over HTTP (vendor, database: fuzzed = stored + rejected):"]
    for kind in ("doorflow", "intserv"):
        for database in stores:
            fuzzed, stored, rejected = (
                totals[kind, database, w] for w in ("fuzzed", "stored", "rejected")
            )
            lines.append(f"  {kind:8} {database:10} {fuzzed:6} = {stored:6} + {rejected:6}")
            assert fuzzed >= RECORDS, (kind, database, fuzzed)
            assert fuzzed == stored + rejected
            assert stored, "the fuzz must store some records"
            assert rejected, "the fuzz must reject some records"
    summary = "\n".join(lines)
    captured = capfd.readouterr()
    assert_no_secrets([captured.out, captured.err, summary, *problems], [TOKEN, API_KEY])
    with capfd.disabled():
        print("\n" + summary)
