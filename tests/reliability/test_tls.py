"""TLS: a vendor's certificate is verified, by default and always.

A DoorFlow simulator is served over HTTPS on loopback with a self-signed
certificate (a TLS-terminating loopback server in front of it). ``syncd sync``
against it fails with one clear line naming the certificate problem and exit
1; with the source's ``ca_file`` pointing at that certificate it succeeds and
stores what the simulator lists. The daemon honours ``ca_file`` the same way.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import sqlalchemy as sa

from syncd.db.engine import create_engine
from syncd.db.schema import events
from syncd.simulators import DoorFlowSimulator
from tests.integration.daemonhelpers import (
    free_port,
    running_daemon,
    source_toml,
    wait_for,
    write_config,
)
from tests.reliability.loopback import LoopbackServer, Reply, Request
from tests.reliability.secretscan import assert_no_secrets
from tests.tlscerts import self_signed

TOKEN = "df-tls-token-5e81c0"
HISTORY = 40
# What a proxy must not copy from one hop to the next.
HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "content-encoding"}


class TlsFront:
    """HTTPS on 127.0.0.1 in front of a plain-HTTP simulator."""

    def __init__(self, upstream: str, cert: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.upstream = httpx.Client(base_url=upstream, trust_env=False)
        self.server = LoopbackServer(self.forward, tls=context)

    def forward(self, request: Request) -> Reply:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}
        }
        answer = self.upstream.request(
            request.method, request.target, headers=headers, content=request.body
        )
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return Reply(answer.status_code, answer.content, kept)

    def __enter__(self) -> LoopbackServer:
        return self.server.start()

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.upstream.close()


def sync(config: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    args = [
        sys.executable,
        "-m",
        "syncd.cli",
        "--config",
        str(config),
        "--database-url",
        database_url,
    ]
    env = {**os.environ, "DF_TOKEN": TOKEN}
    return subprocess.run(
        [*args, "sync"], check=False, env=env, capture_output=True, text=True, timeout=120
    )


def stored(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())
    finally:
        engine.dispose()


def test_sync_verifies_the_vendor_certificate_and_trusts_only_what_ca_file_names(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path)
    database_url = f"sqlite:///{tmp_path}/syncd.db"
    outputs: list[str] = []
    with DoorFlowSimulator(seed=5, history=HISTORY, history_days=1, token=TOKEN) as sim:
        front = TlsFront(sim.base_url, cert, key)
        with front:
            base_url = front.server.url
            assert base_url.startswith("https://127.0.0.1:")
            source = source_toml("hq", "doorflow", base_url, token_env="DF_TOKEN", max_retries=1)
            untrusted = write_config(tmp_path / "untrusted.toml", free_port(), [source])
            refused = sync(untrusted, database_url)
            outputs += [refused.stdout, refused.stderr]
            assert refused.returncode == 1, refused
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1, refused.stderr
            assert "certificate verify failed" in lines[0], lines
            assert "Traceback" not in refused.stderr
            assert stored(database_url) == 0
            # Nothing was asked over a connection that failed verification: no
            # request (and so no token) ever reached the server.
            assert front.server.requests == []

            trusting = source_toml(
                "hq", "doorflow", base_url, token_env="DF_TOKEN", max_retries=1, ca_file=str(cert)
            )
            trusted = write_config(tmp_path / "trusted.toml", free_port(), [trusting])
            done = sync(trusted, database_url)
            outputs += [done.stdout, done.stderr]
            assert done.returncode == 0, done.stderr
            assert stored(database_url) == len(sim.truth()) == HISTORY
            assert front.server.requests, "the sync went through the HTTPS front"

            # A CA that did not sign the server's certificate is no better than none.
            other, _ = self_signed(tmp_path, "other")
            wrong = source_toml(
                "hq", "doorflow", base_url, token_env="DF_TOKEN", max_retries=1, ca_file=str(other)
            )
            refused_again = sync(
                write_config(tmp_path / "wrong.toml", free_port(), [wrong]), database_url
            )
            outputs += [refused_again.stdout, refused_again.stderr]
            assert refused_again.returncode == 1
            assert "certificate verify failed" in refused_again.stderr

    assert_no_secrets(outputs, [TOKEN])


def test_the_daemon_honours_ca_file(tmp_path: Path, sqlite_url: str) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    with DoorFlowSimulator(seed=6, history=HISTORY, history_days=1, token=TOKEN) as sim:
        front = TlsFront(sim.base_url, cert, key)
        with front:
            sources = [
                source_toml(
                    "trusted",
                    "doorflow",
                    front.server.url,
                    token_env="DF_TOKEN",
                    ca_file=str(cert),
                    interval=3,
                ),
                source_toml(
                    "untrusted",
                    "doorflow",
                    front.server.url,
                    token_env="DF_TOKEN",
                    max_retries=1,
                    interval=3,
                ),
            ]
            config = write_config(tmp_path / "syncd.toml", port, sources)
            with running_daemon(config, sqlite_url, port, {"DF_TOKEN": TOKEN}) as daemon:

                def settled() -> bool:
                    ok = daemon.metric("syncd_passes_total", source="trusted", result="ok")
                    failed = daemon.metric(
                        "syncd_passes_total", source="untrusted", result="failed"
                    )
                    return ok >= 1 and failed >= 1

                wait_for(settled, 90, "a pass of each source")
                failures = [
                    e for e in daemon.events("pass_failed") if e.get("source") == "untrusted"
                ]
                assert failures
                assert all("certificate verify failed" in e["error"] for e in failures), failures
                assert not [e for e in daemon.events("pass_failed") if e.get("source") == "trusted"]
                assert daemon.stop() == 0
            lines = daemon.lines
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            query = sa.select(events.c.source, sa.func.count()).group_by(events.c.source)
            counts = dict(conn.execute(query).all())
    finally:
        engine.dispose()
    assert counts == {"trusted": HISTORY}
    assert_no_secrets(lines, [TOKEN])
