"""The daemon caps glibc's malloc arenas (issue 20: RSS grew with a thread per pass)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from syncd.memory import DAEMON_ARENAS

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's arenas are a Linux matter"
)

# Threads that each allocate while all are alive: glibc gives every new thread
# an arena of its own until its limit (an exited thread's arena is reused, so a
# quiet machine that ran them one after another showed 2 arenas without the
# limit too); malloc_stats() prints one "Arena N:" block per arena.
PROGRAM = textwrap.dedent(
    """
    import ctypes, sys, threading
    from syncd.memory import limit_malloc_arenas
    print(limit_malloc_arenas() if sys.argv[1] == "limit" else None, flush=True)
    held = []
    together = threading.Barrier(24)
    def work():
        together.wait()  # all alive at once: an exited thread's arena is reused
        held.append(bytearray(256 * 1024))
        held.append(bytearray(4096))
        together.wait()
    threads = [threading.Thread(target=work) for _ in range(24)]
    for t in threads: t.start()
    for t in threads: t.join()
    ctypes.CDLL(None).malloc_stats()
    """
)


def arenas(mode: str, env: dict[str, str]) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip(), len(re.findall(r"^Arena \d+:", result.stderr, re.MULTILINE))


def test_the_limit_holds_for_threads_started_after_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    said, limited = arenas("limit", env)
    assert said == "True"
    assert limited <= DAEMON_ARENAS
    _said, default = arenas("none", env)
    assert default > DAEMON_ARENAS  # what the limit prevents


def test_an_explicit_malloc_arena_max_wins() -> None:
    env = {**os.environ, "MALLOC_ARENA_MAX": "4"}
    said, count = arenas("limit", env)
    assert said == "False"
    assert count <= 4
