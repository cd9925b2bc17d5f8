"""SIGKILL at random moments, then a clean finish: nothing lost, nothing duplicated.

What it proves: ``syncd sync``, ``syncd run`` and ``syncd backfill`` of both
vendors (a DoorFlow and an IntServ simulator on loopback, a history plus new
events arriving in real time, late arrivals, name corrections, malformed
records, a few server errors) can each be killed with SIGKILL at any moment
(start-up, mid-page, mid-commit, idle between daemon passes) without harm:

- after every kill, the ``events`` table holds only events the vendor has,
  each once (by its vendor identity, not only by ``event_key``);
- every few kills, a clean ``syncd sync`` (events still arriving) exits 0 and
  holds every event the vendors listed when it began;
- at the end, with the simulators' clock frozen (no arrivals, no changes),
  ``syncd sync`` exits 0 and the table equals the ground truth: 0 missing,
  0 duplicated, 0 stale, and every malformed record served is one row of
  ``rejected_events``;
- no captured output of any process prints a credential.

The kill schedule comes from ``random.Random(SEED)`` (``SYNCD_SIGKILL_SEED``
overrides it); a failure names the seed and the schedule so far. The reduced
form (CI) does 12 kills over a small history; the full form
(``SYNCD_RELIABILITY=full``, ``scripts/reliability``) does 100 over a larger
one, which the README's "Guarantees" quotes.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.db.schema import events, rejected_events
from syncd.records import parse_time
from syncd.simulators import DoorFlowSimulator, Faults, IntServSimulator
from syncd.simulators.faults import POISON_KINDS
from syncd.sources.intserv import canonical_time
from tests.reliability.scale import FULL, scaled
from tests.reliability.secretscan import assert_no_secrets

pytestmark = pytest.mark.postgres

SEED = int(os.environ.get("SYNCD_SIGKILL_SEED", "20261207"))
KILLS = scaled(100, 12)
HISTORY = scaled(8000, 2000)  # events per simulator before the first command
HISTORY_DAYS = 2.0
RATE = float(scaled(8, 10))  # new events per second per simulator, in real time
CLEAN_PASSES = 4  # intermediate clean `syncd sync` runs, spread over the kills
DOORFLOW, INTSERV = "hq", "sthlm"
OFFLINE_SYSTEM = "abc123-002"  # an IntServ system that goes offline now and then
PHASES = ((0.0, 0.7), (0.7, 2.0), (2.0, 4.5))  # start-up; pages and commits; later / idle
COMMANDS = ("sync", "run", "backfill")
TIMEOUT = 120.0
# A DoorFlow record served without a readable id is identified by its content,
# and a name correction changes that content (a second, honest, rejected row):
# here every malformed DoorFlow record keeps its id so served = stored + rejected
# holds one for one. IntServ records never change, so they get every kind.
DOORFLOW_MALFORMED = ("missing_time", "bad_time", "bad_code", *POISON_KINDS)


class FreezableClock:
    """The real time until :meth:`freeze`; then that instant, for ever."""

    def __init__(self) -> None:
        self._frozen: datetime | None = None

    def now(self) -> datetime:
        return self._frozen or datetime.now(UTC)

    def freeze(self) -> None:
        self._frozen = datetime.now(UTC)


@dataclass
class Lab:
    """The simulators, the config and everything the run recorded."""

    doorflow: DoorFlowSimulator
    intserv: IntServSimulator
    clock: FreezableClock
    config: Path
    url: str
    engine: sa.Engine
    logs: Path
    rng: random.Random
    since: datetime
    outputs: list[bytes] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    finished: Counter[str] = field(default_factory=Counter)

    def context(self) -> str:
        """What a failure message needs to reproduce the run."""
        return f"seed={SEED} (SYNCD_SIGKILL_SEED); schedule so far: {self.schedule[-12:]}"


@dataclass(frozen=True)
class Comparison:
    compared: int
    missing: list[str]
    duplicated: list[str]
    extra: list[str]
    stale: list[str]


# -- the world ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def simulators(clock: FreezableClock) -> tuple[DoorFlowSimulator, IntServSimulator]:
    doorflow = DoorFlowSimulator(
        seed=SEED % 1000, history=HISTORY, history_days=HISTORY_DAYS, clock=clock, rate=RATE,
        late_share=0.05, late_delay=40.0, name_update_share=0.1, name_update_delay=5.0,
        malformed_share=0.005, malformed_kinds=DOORFLOW_MALFORMED,
        faults=Faults(server_errors=0.02, latency=0.005, seed=SEED),
    )  # fmt: skip
    intserv = IntServSimulator(
        seed=SEED % 1000 + 1, history=HISTORY, history_days=HISTORY_DAYS, clock=clock, rate=RATE,
        malformed_share=0.005, faults=Faults(server_errors=0.02, latency=0.005, seed=SEED + 1),
    )  # fmt: skip
    return doorflow, intserv


def source_lines(name: str, kind: str, base_url: str, secret: str, start: datetime) -> str:
    return "\n".join(
        [
            "[[sources]]",
            f'name = "{name}"',
            f'kind = "{kind}"',
            f'base_url = "{base_url}"',
            secret,
            f'start = "{iso(start)}"',
            "interval = 2",
            "lookback = 120",
            "page_size = 50",
            "max_retries = 10",
            "max_retry_wait = 0.05",
        ]
    )


def write_config(
    path: Path, lab_start: datetime, df: DoorFlowSimulator, its: IntServSimulator
) -> Path:
    path.write_text(
        '[daemon]\nlisten = "127.0.0.1:0"\nworkers = 2\n\n'
        + source_lines(DOORFLOW, "doorflow", df.base_url, 'token_env = "DOORFLOW_TOKEN"', lab_start)
        + "\n\n"
        + source_lines(INTSERV, "intserv", its.base_url, 'api_key_env = "INTSERV_KEY"', lab_start)
        + "\n"
    )
    return path


def environment(lab: Lab) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["DOORFLOW_TOKEN"] = lab.doorflow.token
    env["INTSERV_KEY"] = lab.intserv.api_key
    env["PYTHONUNBUFFERED"] = "1"
    return env


def secrets(lab: Lab) -> list[str]:
    df = lab.doorflow
    oauth = df.oauth
    return [df.token, df.api_key, oauth.client_secret, oauth.refresh_token, lab.intserv.api_key]


def command(lab: Lab, kind: str) -> tuple[str, list[str]]:
    """A label for the figures and the argv of one ``syncd`` run."""
    base = [sys.executable, "-m", "syncd.cli", "--config", str(lab.config)]
    base += ["--database-url", lab.url, "--log-level", "info", "--log-format", "json"]
    if kind == "sync":
        return "sync", [*base, "sync"]
    if kind == "run":
        return "run", [*base, "run", "--listen", f"127.0.0.1:{free_port()}"]
    source = least_killed(lab, [f"backfill {name}" for name in (DOORFLOW, INTSERV)])
    source = source.removeprefix("backfill ")
    args = ["backfill", "--source", source, "--since", iso(lab.since), "--window", "6h"]
    return f"backfill {source}", [*base, *args]


# -- running and killing ------------------------------------------------------------


def least_killed(lab: Lab, labels: list[str]) -> str:
    """A random one of the ``labels`` killed least so far: every command gets its share."""

    def kills(label: str) -> int:
        return sum(n for done, n in lab.kills.items() if done.startswith(label))

    fewest = min(kills(label) for label in labels)
    return lab.rng.choice([label for label in labels if kills(label) == fewest])


def launch(lab: Lab, argv: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    out = lab.logs / f"{len(lab.schedule):04d}.log"
    with out.open("wb") as sink:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, env=environment(lab), stdout=sink, stderr=subprocess.STDOUT)
    return proc, out


def kill_after(lab: Lab, kind: str) -> None:
    """Run one command and SIGKILL it after a random delay (unless it ended first)."""
    label, argv = command(lab, kind)
    low, high = lab.rng.choice(PHASES)
    delay = lab.rng.uniform(low, high)
    proc, out = launch(lab, argv)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        lab.kills[label] += 1
        outcome = "killed"
    else:
        lab.finished[label] += 1
        outcome = f"exit {proc.returncode}"
    lab.outputs.append(out.read_bytes())
    lab.schedule.append(f"{label} +{delay:.2f}s {outcome}")
    if outcome != "killed":
        assert proc.returncode == 0, (
            f"{label} exited {proc.returncode}: {tail(out)}\n{lab.context()}"
        )


def clean_sync(lab: Lab) -> None:
    """``syncd sync`` to the end: exit 0."""
    _, argv = command(lab, "sync")
    proc, out = launch(lab, argv)
    code = proc.wait(timeout=TIMEOUT)
    lab.outputs.append(out.read_bytes())
    lab.schedule.append(f"clean sync exit {code}")
    assert code == 0, f"a clean sync exited {code}: {tail(out)}\n{lab.context()}"


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def toggle_offline(lab: Lab) -> None:
    """Now and then an IntServ system goes offline (its events upload late)."""
    if lab.rng.random() < 0.25:
        going = OFFLINE_SYSTEM not in lab.intserv.offline
        lab.intserv.set_offline(OFFLINE_SYSTEM, going)
        lab.schedule.append(f"{OFFLINE_SYSTEM} {'offline' if going else 'online'}")


# -- ground truth and the table -----------------------------------------------------


def truth(lab: Lab) -> dict[str, dict[str, dict[str, Any]]]:
    """Per source, every valid event the vendor lists now, by ``event_key``."""
    doorflow = {str(k): v for k, v in lab.doorflow.truth(listable=True).items()}
    intserv = {
        f"{system}|{canonical_time(parse_time(when, 'event_time'))}|{seq}": event
        for (system, when, seq), event in lab.intserv.truth().items()
    }
    return {DOORFLOW: doorflow, INTSERV: intserv}


def vendor_identity(source: str, payload: dict[str, Any]) -> str:
    """The event's own identity in the vendor's terms, independent of ``event_key``."""
    if source == DOORFLOW:
        return str(payload["id"])
    moment = canonical_time(parse_time(payload["event_time"], "event_time"))
    return f"{payload['system_id']}|{moment}|{payload['sequence_id']}"


def stored(lab: Lab) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    query = sa.select(events.c.source, events.c.event_key, events.c.payload)
    table: dict[str, list[tuple[str, dict[str, Any]]]] = {DOORFLOW: [], INTSERV: []}
    with lab.engine.connect() as conn:
        for source, key, payload in conn.execute(query):
            table[source].append((key, payload))
    return table


def compare(
    wanted: dict[str, dict[str, dict[str, Any]]],
    allowed: dict[str, dict[str, dict[str, Any]]],
    table: dict[str, list[tuple[str, dict[str, Any]]]],
    *,
    stale: bool,
) -> Comparison:
    """``wanted`` must all be stored, nothing beyond ``allowed``, each event once."""
    missing, duplicated, extra, changed = [], [], [], []
    for source, rows in table.items():
        keys = {key for key, _ in rows}
        counts = Counter(vendor_identity(source, payload) for _, payload in rows)
        duplicated += [f"{source}:{k}x{n}" for k, n in counts.items() if n > 1]
        missing += [f"{source}:{k}" for k in wanted[source].keys() - keys]
        extra += [f"{source}:{k}" for k in keys - allowed[source].keys()]
        if stale:
            now = allowed[source]
            changed += [f"{source}:{k}" for k, p in rows if k in now and p != now[k]]
    compared = sum(len(rows) for rows in table.values())
    return Comparison(compared, sorted(missing), duplicated, sorted(extra), sorted(changed))


def assert_clean(result: Comparison, lab: Lab, when: str) -> None:
    problems = {
        "missing": result.missing,
        "duplicated": result.duplicated,
        "not at the vendor": result.extra,
        "stale": result.stale,
    }
    found = {name: (len(keys), keys[:5]) for name, keys in problems.items() if keys}
    assert not found, f"{when}: {found}\n{lab.context()}"


def check_after_kill(lab: Lab) -> None:
    """Whatever a kill left: only events the vendor has, each once."""
    now = truth(lab)
    empty: dict[str, dict[str, dict[str, Any]]] = {DOORFLOW: {}, INTSERV: {}}
    assert_clean(compare(empty, now, stored(lab), stale=False), lab, f"after {lab.schedule[-1]}")


def check_clean_pass(lab: Lab) -> Comparison:
    """A clean sync holds every event listed when it began (events keep arriving)."""
    before = truth(lab)
    clean_sync(lab)
    result = compare(before, truth(lab), stored(lab), stale=False)
    assert_clean(result, lab, "after a clean sync")
    return result


def rejected_rows(lab: Lab) -> dict[str, list[tuple[str | None, str]]]:
    """Per source, each rejected row's vendor key (None: it had none) and reason."""
    query = sa.select(
        rejected_events.c.source, rejected_events.c.event_key, rejected_events.c.reason
    )
    found: dict[str, list[tuple[str | None, str]]] = {DOORFLOW: [], INTSERV: []}
    with lab.engine.connect() as conn:
        for source, key, reason in conn.execute(query):
            found[source].append((key, reason))
    return found


def assert_rejects_accounted(lab: Lab) -> dict[str, int]:
    served = {
        DOORFLOW: len(lab.doorflow.malformed(listable=True)),
        INTSERV: len(lab.intserv.malformed()),
    }
    assert all(served.values()), f"no malformed record served: the check has no teeth {served}"
    rows = rejected_rows(lab)
    found = {source: len(found) for source, found in rows.items()}
    assert found == served, f"rejected rows {found} != malformed records served {served}: {rows}"
    return served


# -- the test -----------------------------------------------------------------------


@pytest.fixture
def lab(pg_engine: sa.Engine, pg_url: str, tmp_path: Path) -> Iterator[Lab]:
    clock = FreezableClock()
    doorflow, intserv = simulators(clock)
    start = clock.now() - timedelta(days=HISTORY_DAYS, hours=1)
    with doorflow, intserv:
        logs = tmp_path / "logs"
        logs.mkdir()
        yield Lab(
            doorflow=doorflow, intserv=intserv, clock=clock,
            config=write_config(tmp_path / "syncd.toml", start, doorflow, intserv),
            url=pg_url, engine=pg_engine, logs=logs, rng=random.Random(SEED),
            since=start.replace(minute=0, second=0, microsecond=0),
        )  # fmt: skip


def freeze(lab: Lab) -> None:
    """No more arrivals or changes: the ground truth holds still."""
    lab.doorflow.rate = lab.intserv.rate = 0.0
    lab.intserv.set_offline(OFFLINE_SYSTEM, False)
    lab.clock.freeze()
    time.sleep(0.3)  # a ticker already generating finishes


def kill_many(lab: Lab) -> int:
    """``KILLS`` SIGKILLs, each command its share; a clean sync now and then.

    Returns how many intermediate clean syncs ran."""
    clean_every = max(KILLS // CLEAN_PASSES, 1)
    clean_passes = 0
    for _ in range(3 * KILLS + 20):
        kills_before = sum(lab.kills.values())
        if kills_before >= KILLS:
            break
        toggle_offline(lab)
        kill_after(lab, least_killed(lab, list(COMMANDS)))
        check_after_kill(lab)
        kills = sum(lab.kills.values())
        if kills > kills_before and kills % clean_every == 0 and kills < KILLS:
            check_clean_pass(lab)
            clean_passes += 1
    assert sum(lab.kills.values()) == KILLS, f"only {dict(lab.kills)} kills\n{lab.context()}"
    assert len(lab.kills) == 4, f"not every command was killed: {dict(lab.kills)}"
    return clean_passes


def finish_cleanly(lab: Lab) -> Comparison:
    """Frozen vendors, ``syncd sync`` to exit 0: the table equals the truth."""
    freeze(lab)
    clean_sync(lab)
    final = compare(truth(lab), truth(lab), stored(lab), stale=True)
    assert_clean(final, lab, "after the final sync")
    clean_sync(lab)  # a second clean finish changes nothing
    again = compare(truth(lab), truth(lab), stored(lab), stale=True)
    assert_clean(again, lab, "after a second final sync")
    assert again.compared == final.compared
    return final


def test_sigkills_at_random_moments_then_a_clean_finish_lose_and_duplicate_nothing(
    lab: Lab,
) -> None:
    started = time.monotonic()
    clean_passes = kill_many(lab)
    final = finish_cleanly(lab)
    rejected = assert_rejects_accounted(lab)
    assert_no_secrets(lab.outputs, secrets(lab))
    vendors = {source: len(events) for source, events in truth(lab).items()}
    print(
        f"\nsigkill ({'full' if FULL else 'reduced'}, seed {SEED}): "
        f"{sum(lab.kills.values())} kills {dict(sorted(lab.kills.items()))}, "
        f"{sum(lab.finished.values())} ended first {dict(sorted(lab.finished.items()))}, "
        f"{clean_passes} intermediate clean syncs; {final.compared} events compared {vendors}, "
        f"{len(final.missing)} missing, {len(final.duplicated)} duplicated, "
        f"{len(final.stale)} stale, rejected {rejected}; "
        f"{len(lab.outputs)} outputs scanned; {time.monotonic() - started:.0f}s"
    )
