"""Resident memory of `syncd run` during a cold sync: the figure behind the deploy limits.

    .venv/bin/python bench/deploy_memory.py [--events 200000] [--database-url URL]

Starts both simulators with --events history each (plus live events and webhooks),
then `syncd run --migrate` on a fresh PostgreSQL database, and samples the daemon's
VmRSS / VmHWM (peak) from /proc every 5 s until every event is stored and 20 s
more have passed. The Kubernetes requests/limits and the systemd MemoryHigh/Max
in deploy/ are set from this peak. Needs `syncd run` (the daemon) and Linux.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="history per simulator")
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    cli = [sys.executable, "-m", "syncd.cli"]
    if subprocess.run([*cli, "run", "--help"], capture_output=True, check=False).returncode:
        sys.exit("bench/deploy_memory.py: needs `syncd run` (the daemon)")
    admin = make_url(args.database_url).set(drivername="postgresql")
    name = f"syncd_bench_memory_{uuid.uuid4().hex[:8]}"
    admin_dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = admin.set(database=name).render_as_string(hide_password=False)
    doorflow, intserv, http = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    common = [f"--events={args.events}", "--history-days=7", "--rate=5"]
    procs = [
        subprocess.Popen(
            [*cli, "simulate", "doorflow", f"--port={doorflow}", *common, "--token=t",
             f"--webhook-url=http://127.0.0.1:{http}/webhooks/doorflow/hq", "--webhook-secret=w"],
            stdout=subprocess.DEVNULL, env=env,
        ),
        subprocess.Popen(
            [*cli, "simulate", "intserv", f"--port={intserv}", *common, "--api-key=k"],
            stdout=subprocess.DEVNULL, env=env,
        ),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "syncd.toml"
        config.write_text(
            f'[daemon]\nlisten = "127.0.0.1:{http}"\n\n'
            f'[[sources]]\nname = "hq"\nkind = "doorflow"\nbase_url = "http://127.0.0.1:{doorflow}"\n'
            'token_env = "T"\nwebhook_secret_env = "W"\ninterval = 10\n\n'
            f'[[sources]]\nname = "stockholm"\nkind = "intserv"\nbase_url = "http://127.0.0.1:{intserv}"\n'
            'api_key_env = "K"\ninterval = 10\n'
        )  # fmt: skip
        time.sleep(3)
        daemon = subprocess.Popen(
            [*cli, "--config", str(config), "--database-url", db, "run", "--migrate"],
            env={**env, "T": "t", "W": "w", "K": "k"},
            stderr=subprocess.DEVNULL,
        )
        procs.append(daemon)
        started = time.monotonic()
        done_at = None
        try:
            while time.monotonic() - started < args.timeout:
                time.sleep(5)
                with psycopg.connect(db) as conn:
                    try:
                        stored = conn.execute("SELECT count(*) FROM events").fetchone()
                    except psycopg.Error:
                        stored = (0,)
                rss, peak = memory(daemon.pid)
                elapsed = time.monotonic() - started
                count = stored[0] if stored else 0
                print(
                    f"{elapsed:5.0f} s  events {count:>8,}  "
                    f"RSS {rss / 1024:6.1f} MiB  peak {peak / 1024:6.1f} MiB",
                    flush=True,
                )
                if done_at is None and stored and stored[0] >= 2 * args.events:
                    done_at = time.monotonic()
                if done_at is not None and time.monotonic() - done_at >= 20:
                    print(f"peak resident memory of syncd run: {peak / 1024:.1f} MiB")
                    break
            else:
                sys.exit("bench/deploy_memory.py: timed out before every event was stored")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=20)
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
