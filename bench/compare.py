"""syncd, dlt and a bare floor side by side: a cold sync of one simulator into PostgreSQL.

    python bench/compare.py [--events 200000] [--kind doorflow|intserv]
                            [--only syncd,dlt,floor] [--skip singer] [--database-url URL]

One run, one simulator process (the project's own, same seed and knobs for
everyone), one PostgreSQL. Each contender is its own child process writing
into its own empty database, one after the other, so none shares CPU with
another; before each one the server is CHECKPOINTed, so none pays for the
previous one's dirty pages. The contenders:

- ``download``: fetch every page and parse nothing (the server's own rate);
  it also renders and caches every event in the simulator, so every loader
  after it meets the same warm server.
- ``floor``: fetch and parse every page, COPY three columns (key, time,
  payload) into an unindexed table, commit per page. No normalization, no
  dedup, no cursor: what any loader can at best do on this machine.
- ``dlt``: dlt 1.x as its documentation recommends for speed: one resource
  with ``dlt.sources.incremental`` on the event time, dlt's ``RESTClient``
  with the vendor's own paging (page numbers for DoorFlow, continuation keys
  in the POST body for IntServ), each page yielded as one Arrow table, the
  ``csv`` loader file format (PostgreSQL ``COPY``), ``write_disposition=
  "merge"`` on the vendor's primary key. Its pipeline state lives in a fresh
  temporary directory, so the run is cold too.
- ``singer``: a Singer pipeline, ``tap-doorflow | target-postgres``: the
  project's own tap (``bench/singer/tap_doorflow.py``, a Meltano Singer SDK
  ``RESTStream`` written as the SDK's docs recommend) piped into MeltanoLabs'
  ``target-postgres`` with its default settings but ``load_method=upsert``
  (dedup on ``id``, as syncd dedups). Both run from their own virtual
  environment, ``bench/.venv-singer``, made by ``bench/singer/setup`` when
  missing (their pins would move syncd's); if it cannot be made, one line
  says so and the other contenders still run. DoorFlow only. Its CPU and
  peak RSS are the *sums* of the tap's and the target's, each from its own
  ``wait4``.
- ``syncd``: ``syncd sync`` exactly as a user runs it (start-up, migration of
  the empty database, every guarantee).
- ``limit`` ("syncd's table limit", measured after ``syncd`` in the same
  run): the database side alone. Exactly the rows syncd stored are copied
  server-side to a file, then timed as one server-side binary ``COPY ...
  FROM`` that file into a fresh table of ``events``' exact shape (``LIKE
  events INCLUDING ALL``: every index, the identity), after a
  ``CHECKPOINT``. No client, no network, no parsing: however fast syncd's
  own work were, a cold load into its table could not beat this.

Each contender's figures: events/s over its wall time, its CPU seconds and
peak RSS (``wait4``), and the vendor requests it made (the simulator's own
counter). Every loader's table is checked before anything is printed: as
many rows, and as many distinct keys, as the simulator holds events.
Needs the ``bench`` extra for dlt: ``pip install -e '.[bench]'``; the Singer
contender needs PyPI once, to make its venv.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from sqlalchemy.engine import make_url

from syncd.sources.doorflow import LISTABLE_EVENT_CODES

DEFAULT_URL = os.environ.get(
    "SYNCD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
START = datetime(2026, 1, 1, tzinfo=UTC)
SINCE = START.isoformat()
PAGE = 1000
# Every code the list endpoint accepts (any other is a 400), as syncd asks.
DOORFLOW_CODES = ",".join(map(str, LISTABLE_EVENT_CODES))
CONTENDERS = ("download", "floor", "dlt", "singer", "syncd")
# Measured after syncd, in syncd's database (not a contender of its own).
LIMIT = "limit"
# The columns syncd writes (``id`` comes from the identity, as in syncd's load).
LIMIT_COLUMNS = (
    "source, event_key, vendor, occurred_at, event_code, category, label, door_id, "
    "door_name, person_id, person_name, credential, system_id, sequence_id, "
    "source_updated_at, payload, first_seen_at, last_seen_at"
)
BENCH = Path(__file__).resolve().parent
# The Singer contender's own venv (its pins would move syncd's), made on demand.
SINGER_VENV = Path(os.environ.get("SYNCD_BENCH_SINGER_VENV", BENCH / ".venv-singer"))
SINGER_PACKAGES = ("singer-sdk", "meltanolabs-target-postgres")


# -- the simulator, in its own process -----------------------------------------


def _serve(kind: str, events: int, conn: Connection) -> None:
    from syncd.simulators import DoorFlowSimulator, IntServSimulator, SimClock

    clock = SimClock(start=START + timedelta(days=30))
    sim: DoorFlowSimulator | IntServSimulator
    if kind == "doorflow":
        sim = DoorFlowSimulator(
            seed=1, history=events, history_days=29, clock=clock, name_update_share=0.0
        )
        secret = sim.token
    else:
        sim = IntServSimulator(seed=1, history=events, history_days=29, clock=clock)
        secret = sim.api_key
    sim.start()
    # What a complete load holds: DoorFlow's list endpoint cannot list some
    # codes (remote control, see FACTS.md), so those events are never served.
    listed = len(sim.truth(listable=True)) if kind == "doorflow" else len(sim.truth())  # type: ignore[call-arg]
    conn.send((sim.base_url, secret, listed))
    while conn.recv() == "stats":
        conn.send(sim.stats)
    sim.stop()


@dataclass
class Simulator:
    base_url: str
    secret: str
    listed: int  # events the vendor lists: what every loader must end up with
    conn: Connection

    def requests(self) -> int:
        self.conn.send("stats")
        if not self.conn.poll(30):
            raise SystemExit("the simulator stopped answering")
        stats: dict[str, int] = self.conn.recv()
        return stats.get("requests", 0)


@contextmanager
def simulator(kind: str, events: int) -> Iterator[Simulator]:
    context = mp.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(kind, events, theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(300):
            raise SystemExit("the simulator did not start within 300 s")
        base_url, secret, listed = ours.recv()
        yield Simulator(base_url, secret, listed, ours)
    finally:
        with suppress(OSError):
            ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


# -- the contenders (each runs in a child process: `compare.py --_run NAME ...`) -


def _doorflow_params(page: int) -> dict[str, Any]:
    return {"since": START.isoformat(), "sort": "ASC", "n": PAGE, "page": page,
            "event_codes": DOORFLOW_CODES}  # fmt: skip


def _pages(kind: str, base_url: str, secret: str) -> Iterator[bytes]:
    """Every page's body, as the vendor pages it."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {secret}"}) as client:
        if kind == "doorflow":
            page = 1
            while True:
                response = client.get("/api/3/events", params=_doorflow_params(page))
                response.raise_for_status()
                yield response.content
                if int(response.headers["Total"]) <= page * PAGE:
                    return
                page += 1
        else:
            body: dict[str, Any] = {"from_date": START.isoformat(), "limit": PAGE}
            while True:
                response = client.post("/v1/events/list", json=body)
                response.raise_for_status()
                yield response.content
                key = orjson.loads(response.content)["continuation_key"]
                if key is None:
                    return
                body = {"continuation_key": key, "limit": PAGE}


def run_download(kind: str, base_url: str, secret: str, _url: str) -> None:
    for _ in _pages(kind, base_url, secret):
        pass


def run_floor(kind: str, base_url: str, secret: str, url: str) -> None:
    """Parse each page and COPY (key, time, payload) into an unindexed table."""
    with psycopg.connect(_dsn(url)) as conn:
        conn.execute("CREATE TABLE bare (key text, occurred_at timestamptz, payload jsonb)")
        conn.commit()
        for content in _pages(kind, base_url, secret):
            body = orjson.loads(content)
            items = body if kind == "doorflow" else body["events"]
            with conn.cursor() as cur, cur.copy("COPY bare FROM STDIN") as copy:
                for item in items:
                    copy.write_row((_key(kind, item), _time(kind, item),
                                    orjson.dumps(item).decode()))  # fmt: skip
            conn.commit()


def _key(kind: str, item: dict[str, Any]) -> str:
    if kind == "doorflow":
        return str(item["id"])
    return f"{item['system_id']}/{item['event_time']}/{item['sequence_id']}"


def _time(kind: str, item: dict[str, Any]) -> str:
    return item["created_at"] if kind == "doorflow" else item["event_time"]


def run_dlt(kind: str, base_url: str, secret: str, url: str) -> None:
    """dlt configured the way its performance and REST client docs recommend."""
    with tempfile.TemporaryDirectory() as tmp:
        # dlt insists on a password; a trust-auth server ignores it.
        parsed = make_url(_dsn(url))
        credentials = parsed if parsed.password else parsed.set(password="unused")  # noqa: S106
        os.environ["DESTINATION__POSTGRES__CREDENTIALS"] = credentials.render_as_string(False)
        os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"  # no network here, and none wanted
        import dlt

        pipeline = dlt.pipeline(
            pipeline_name=f"bench_{kind}",
            destination="postgres",
            dataset_name=kind,
            pipelines_dir=tmp,
        )
        resource = (
            _dlt_doorflow(base_url, secret)
            if kind == "doorflow"
            else _dlt_intserv(base_url, secret)
        )
        pipeline.run(resource, loader_file_format="csv")


def _dlt_doorflow(base_url: str, secret: str) -> Any:
    import dlt
    import pyarrow as pa
    from dlt.sources.helpers.rest_client import RESTClient
    from dlt.sources.helpers.rest_client.auth import BearerTokenAuth
    from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator

    @dlt.resource(name="events", write_disposition="merge", primary_key="id")
    def events(
        # dlt's documented form: the incremental is the argument's default.
        created_at: Any = dlt.sources.incremental("created_at", initial_value=SINCE),  # noqa: B008
    ) -> Iterator[Any]:
        client = RESTClient(
            base_url=base_url,
            auth=BearerTokenAuth(secret),
            # The API returns a bare array (the total is in a header): stop at
            # the first empty page.
            paginator=PageNumberPaginator(base_page=1, page_param="page", total_path=None),
        )
        params = {**_doorflow_params(1), "since": created_at.start_value}
        del params["page"]
        for page in client.paginate("/api/3/events", params=params):
            if page:  # the last, empty page has no columns at all
                yield pa.Table.from_pylist(page)

    return events()


def _dlt_intserv(base_url: str, secret: str) -> Any:
    import dlt
    import pyarrow as pa
    from dlt.sources.helpers.rest_client import RESTClient
    from dlt.sources.helpers.rest_client.auth import BearerTokenAuth
    from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator

    @dlt.resource(
        name="events",
        write_disposition="merge",
        primary_key=("system_id", "event_time", "sequence_id"),
    )
    def events(
        event_time: Any = dlt.sources.incremental("event_time", initial_value=SINCE),  # noqa: B008
    ) -> Iterator[Any]:
        client = RESTClient(
            base_url=base_url,
            auth=BearerTokenAuth(secret),
            paginator=JSONResponseCursorPaginator(
                cursor_path="continuation_key", cursor_body_path="continuation_key"
            ),
            data_selector="events",
        )
        body = {"from_date": event_time.start_value, "limit": PAGE}
        for page in client.paginate("/v1/events/list", method="POST", json=body):
            if page:
                # csv cannot hold a nested column: flatten the key object
                # (key.type, key.identification) in Arrow, as dlt's error says.
                yield pa.Table.from_pylist(page).flatten()

    return events()


RUNNERS = {"download": run_download, "floor": run_floor, "dlt": run_dlt}


# -- the Singer contender: tap | target, from its own venv -----------------------


def singer_setup(venv: Path = SINGER_VENV) -> str | None:
    """Make the Singer venv if it is missing: ``None`` when ready, else why not."""
    if (venv / "installed").exists():
        return None
    started = time.perf_counter()
    try:
        done = subprocess.run(
            ["bash", str(BENCH / "singer" / "setup"), str(venv)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"bench/singer/setup did not finish within 600 s ({venv})"
    if done.returncode != 0:
        lines = [
            line.strip()
            for line in done.stderr.splitlines()
            if line.strip() and "is ignored" not in line
        ]
        why = lines[-1] if lines else f"exit {done.returncode}"
        return f"bench/singer/setup could not make {venv}: {why[:200]}"
    seconds = time.perf_counter() - started
    print(f"(made the Singer venv {venv} in {seconds:.0f} s)", file=sys.stderr, flush=True)
    return None


def singer_versions(venv: Path = SINGER_VENV) -> str:
    code = (
        "import importlib.metadata as m;"
        f"print(', '.join(p + ' ' + m.version(p) for p in {SINGER_PACKAGES!r}))"
    )
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def singer_argvs(base_url: str, secret: str, url: str, tmp: Path) -> list[list[str]]:
    """The tap's and the target's command lines (their configs written into ``tmp``)."""
    tap = tmp / "tap.json"
    tap.write_text(
        orjson.dumps(
            {
                "api_url": base_url,
                "token": secret,
                "start_date": SINCE,
                "event_codes": DOORFLOW_CODES,
                "page_size": PAGE,
            }
        ).decode()
    )
    parsed = make_url(url)
    target = tmp / "target.json"
    target.write_text(
        orjson.dumps(
            {
                "host": parsed.host or "127.0.0.1",
                "port": parsed.port or 5432,
                "user": parsed.username or "postgres",
                # target-postgres insists on a password; a trust-auth server ignores it.
                "password": parsed.password or "unused",
                "database": parsed.database,
                # Dedup on the stream's primary key (id), as syncd dedups; the
                # default is append-only. Every other setting is the default.
                "load_method": "upsert",
            }
        ).decode()
    )
    python = str(SINGER_VENV / "bin" / "python")
    return [
        [python, str(BENCH / "singer" / "tap_doorflow.py"), "--config", str(tap)],
        [str(SINGER_VENV / "bin" / "target-postgres"), "--config", str(target)],
    ]


def run_pipeline(tap_argv: list[str], target_argv: list[str]) -> tuple[float, float, float]:
    """``tap | target`` in a process group of its own: wall seconds, and the CPU
    seconds and peak RSS (MB) of tap and target *added up*, each from its own
    ``wait4`` (a shell's ``wait4`` would give the larger of the two peaks only).
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as tap_err, tempfile.TemporaryFile() as target_err:
        tap = subprocess.Popen(tap_argv, stdout=subprocess.PIPE, stderr=tap_err, process_group=0)
        try:
            target = subprocess.Popen(
                target_argv,
                stdin=tap.stdout,
                stdout=subprocess.DEVNULL,  # the state messages: a cold run keeps none
                stderr=target_err,
                process_group=tap.pid,
            )
        except BaseException:
            tap.kill()
            tap.wait()
            raise
        assert tap.stdout is not None
        tap.stdout.close()  # the target's end only: the tap sees EPIPE if it dies
        cpu = rss = 0.0
        codes = []
        for process in (tap, target):
            _pid, status, usage = os.wait4(process.pid, 0)
            process.returncode = code = os.waitstatus_to_exitcode(status)
            codes.append(code)
            cpu += usage.ru_utime + usage.ru_stime
            rss += usage.ru_maxrss / 1024
            if code != 0:
                with suppress(ProcessLookupError):
                    os.killpg(tap.pid, 9)  # the rest of the pipeline, not left behind
        elapsed = time.perf_counter() - started
        if any(codes):
            tails = []
            for name, err in (("tap", tap_err), ("target", target_err)):
                err.seek(0)
                tails.append(f"--- {name}:\n" + err.read().decode(errors="replace")[-2000:])
            raise SystemExit(f"singer: tap | target failed (exits {codes}):\n" + "\n".join(tails))
    return elapsed, cpu, rss


def syncd_argv(kind: str, base_url: str, url: str, config_dir: Path) -> list[str]:
    config = config_dir / "syncd.toml"
    credential = "token_env" if kind == "doorflow" else "api_key_env"
    config.write_text(
        "[[sources]]\n"
        f'name = "bench"\nkind = "{kind}"\nbase_url = "{base_url}"\n'
        f'{credential} = "BENCH_SECRET"\nstart = "{START.isoformat()}"\npage_size = {PAGE}\n'
    )
    return [sys.executable, "-m", "syncd.cli", "--config", str(config),
            "--database-url", url, "sync"]  # fmt: skip


# -- measuring -----------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    events: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    requests: int
    db_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``, dropped afterwards."""
    name = f"syncd_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(_dsn(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def checkpoint(admin_url: str) -> None:
    with psycopg.connect(_dsn(admin_url), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of the child, from ``wait4``."""
    import subprocess

    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"{argv[1:4]} failed (exit {code}):\n{tail}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def backend_cpu(pid: int) -> float:
    """CPU seconds a server process has used so far (0 where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerCPU:
    """CPU seconds of the PostgreSQL backends serving one database, from /proc.

    Polled every 50 ms while the contender runs, keeping each backend's last
    reading: a connection that lives shorter than that is missed, so this
    is a slight undercount (0 where /proc is not there).
    """

    def __init__(self, database: str) -> None:
        self.marker = f" {database} ".encode()
        self.seen: dict[int, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    def _poll(self) -> None:
        while not self.done.wait(0.05):
            self._sample()
        self._sample()

    def _sample(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if self.marker not in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    continue
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            self.seen[int(entry.name)] = (int(fields[11]) + int(fields[12])) / self.tick

    def __enter__(self) -> ServerCPU:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


# The table each loader fills and its key: every event once, no more.
TABLES = {
    ("floor", "doorflow"): ("bare", "key"),
    ("floor", "intserv"): ("bare", "key"),
    ("dlt", "doorflow"): ("doorflow.events", "id"),
    ("dlt", "intserv"): ("intserv.events", "(system_id, event_time, sequence_id)"),
    # target-postgres's default schema is "melty"; the stream is "events".
    ("singer", "doorflow"): ("melty.events", "id"),
    ("syncd", "doorflow"): ("events", "event_key"),
    ("syncd", "intserv"): ("events", "event_key"),
}


def verify(name: str, kind: str, url: str, expected: int) -> None:
    table, key = TABLES[(name, kind)]
    with psycopg.connect(_dsn(url)) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT {key}) FROM {table}").fetchone()
    assert row is not None
    rows, keys = int(row[0]), int(row[1])
    if rows != expected or keys != expected:
        raise SystemExit(
            f"{name}: expected {expected} events, {table} has {rows} rows, {keys} distinct keys"
        )


def table_limit(url: str, admin_url: str, events: int) -> Result:
    """syncd's table limit: its stored rows, server-side binary COPY into a fresh
    table of ``events``' exact shape (every index), timed alone.

    The rows go to a file the server writes and reads itself (no client in the
    timed part); the file is removed afterwards.
    """
    path = f"/tmp/syncd_bench_limit_{uuid.uuid4().hex[:8]}.bin"  # noqa: S108 (the server's)
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        conn.execute(
            f"COPY (SELECT {LIMIT_COLUMNS} FROM events ORDER BY id) TO '{path}' (FORMAT BINARY)"
        )
        conn.execute("CREATE TABLE events_limit (LIKE events INCLUDING ALL)")
        try:
            checkpoint(admin_url)
            backend = conn.info.backend_pid
            cpu_before = backend_cpu(backend)
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(f"COPY events_limit ({LIMIT_COLUMNS}) FROM '{path}' (FORMAT BINARY)")
            seconds = time.perf_counter() - started
            db_cpu = backend_cpu(backend) - cpu_before
            row = conn.execute("SELECT count(*) FROM events_limit").fetchone()
        finally:
            # Empty the server's file (it may live in the server's private /tmp).
            conn.execute(f"COPY (SELECT 1 WHERE false) TO '{path}'")
            with suppress(OSError):
                os.unlink(path)
    if row is None or int(row[0]) != events:
        raise SystemExit(f"limit: expected {events} rows in events_limit, found {row}")
    return Result(LIMIT, events, seconds, 0.0, 0.0, 0, db_cpu)


def measure(
    name: str, kind: str, sim: Simulator, admin_url: str, events: int, profile: Path | None = None
) -> list[Result]:
    with fresh_database(admin_url) as url, tempfile.TemporaryDirectory() as tmp:
        pipeline: list[list[str]] = []
        if name == "syncd":
            argv = syncd_argv(kind, sim.base_url, url, Path(tmp))
            env = {**os.environ, "BENCH_SECRET": sim.secret, "SYNCD_LOG_LEVEL": "warning"}
            if profile is not None:
                # A sampling profile of every thread of the child (py-spy's
                # own process is the one measured then: figures are not for
                # the table).
                argv = ["py-spy", "record", "--rate", "200", "--format", "raw",
                        "--output", str(profile), "--", *argv]  # fmt: skip
        elif name == "singer":
            pipeline = singer_argvs(sim.base_url, sim.secret, url, Path(tmp))
        else:
            argv = [sys.executable, __file__, "--_run", name, kind, sim.base_url, sim.secret, url]
            env = dict(os.environ)
        checkpoint(admin_url)
        before = sim.requests()
        with ServerCPU(make_url(url).database or "") as server:
            if pipeline:
                seconds, cpu, rss = run_pipeline(*pipeline)
            else:
                seconds, cpu, rss = run_child(argv, env)
        requests = sim.requests() - before
        if name != "download":
            verify(name, kind, url, events)
        results = [Result(name, events, seconds, cpu, rss, requests, server.seconds)]
        if name == "syncd":
            results.append(table_limit(url, admin_url, events))
    return results


def report(kind: str, results: list[Result], notes: tuple[str, ...] = ()) -> str:
    lines = [
        f"\ncold sync of {results[0].events:,} {kind} events (all the vendor lists) into "
        "PostgreSQL, one run",
        f"{'contender':10} {'seconds':>8} {'events/s':>9} {'cpu s':>6} {'db cpu s':>9} "
        f"{'peak RSS MB':>12} {'requests':>9}",
    ]
    for r in results:
        lines.append(
            f"{r.name:10} {r.seconds:>8.2f} {r.rate:>9,.0f} {r.cpu_seconds:>6.1f} "
            f"{r.db_cpu_seconds:>9.1f} {r.peak_rss_mb:>12.0f} {r.requests:>9}"
        )
    by_name = {r.name: r for r in results}
    if "syncd" in by_name:
        for other in ("dlt", "singer", "floor"):
            if other in by_name:
                ratio = by_name["syncd"].rate / by_name[other].rate
                lines.append(f"syncd / {other}: {ratio:.2f}x events/s")
        if LIMIT in by_name:
            ratio = by_name["syncd"].rate / by_name[LIMIT].rate
            lines.append(f"syncd / table limit: {ratio:.2f}x events/s")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    footer = f"({os.cpu_count()} cores, load average {load}; peak RSS and CPU from wait4"
    if "singer" in by_name:
        footer += ", singer's the tap's and the target's added up"
    lines.append(footer + ")")
    if LIMIT in by_name:
        lines.append(
            "(limit: syncd's table limit, the rows syncd stored COPYed server-side into a "
            "fresh table of events' exact shape, every index; database only)"
        )
    lines.extend(notes)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kind", default="doorflow", choices=["doorflow", "intserv"])
    parser.add_argument(
        "--only",
        default=",".join(CONTENDERS),
        help="comma-separated contenders, in order (download, floor, dlt, singer, syncd)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated contenders to leave out (e.g. singer: no venv to make)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs; the table shows medians")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument(
        "--profile",
        type=Path,
        help="record a py-spy profile of the syncd child here (collapsed stacks) and summarize it",
    )
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    skip = [n for n in args.skip.split(",") if n]
    unknown = set(names + skip) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    names = [n for n in names if n not in skip]
    notes: list[str] = []
    if "singer" in names:
        why = "the Singer tap is DoorFlow's only" if args.kind != "doorflow" else singer_setup()
        if why is None:
            notes.append(
                f"(singer: {singer_versions()}, load_method upsert, other settings default)"
            )
        else:
            names.remove("singer")
            notes.append(f"singer: skipped, {why}")
    if not names:
        raise SystemExit("\n".join([*notes, "no contender left to run"]))
    runs: list[list[Result]] = []
    with simulator(args.kind, args.events) as sim:
        for _ in range(args.repeat):
            results = [
                result
                for n in names
                for result in measure(
                    n, args.kind, sim, args.database_url, sim.listed, args.profile
                )
            ]
            if args.repeat > 1:
                print(report(args.kind, results), flush=True)
            runs.append(results)
    medians = [median(column) for column in zip(*runs, strict=True)]
    print(report(args.kind, medians, tuple(notes)))
    if args.repeat > 1:
        print(f"(medians of {args.repeat} runs)")
    if args.profile is not None:
        print(summarize(args.profile))


def summarize(profile: Path, top: int = 25) -> str:
    """Share of samples in which each function is on the stack (inclusive), per thread."""
    total = 0
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] = threads.get(frames[0], 0) + n
        for frame in set(frames[1:]):
            name = (
                frame.split(" (")[0]
                + " ("
                + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                + ")"
            )
            inclusive[name] = inclusive.get(name, 0) + n
    lines = [f"\nprofile: {total} samples at 200 Hz of the syncd child (py-spy, idle excluded)"]
    lines += [
        f"  thread {t[:60]}: {n / total:.0%}"
        for t, n in sorted(threads.items(), key=lambda x: -x[1])
    ]
    lines += [
        f"  {n / total:6.1%}  {f}" for f, n in sorted(inclusive.items(), key=lambda x: -x[1])[:top]
    ]
    return "\n".join(lines)


def median(results: tuple[Result, ...]) -> Result:
    first = results[0]
    return Result(
        first.name,
        first.events,
        statistics.median(r.seconds for r in results),
        statistics.median(r.cpu_seconds for r in results),
        statistics.median(r.peak_rss_mb for r in results),
        int(statistics.median(r.requests for r in results)),
        statistics.median(r.db_cpu_seconds for r in results),
    )


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--_run":
        RUNNERS[sys.argv[2]](*sys.argv[3:])
    else:
        main()
