"""Bound glibc's malloc arenas in the daemon, so its RSS stays flat over months.

glibc gives a thread that meets contention in ``malloc`` an arena of its own,
up to 8 per core, and rarely hands their freed memory back to the system. The
daemon used to start a thread per pass (the page prefetcher): over 11,400
passes of 10 sources its RSS grew from 86 to 199 MB with no growth of the
Python heap, and stayed at 80-95 MB with ``MALLOC_ARENA_MAX=2`` (issue 20).
The prefetcher's threads are reused now (:mod:`syncd.threads`); the cap is
the second half of the fix: pass workers, webhook fetches and the HTTP
server's threads still each get an arena. ``bench/daemon_rss.py`` measured,
10 sources passing every 0.25 s with 4 new events a second, over 6 minutes on
a busy 2-core machine: 105 -> 196 MB with a thread per pass and glibc's 16
arenas, 97 -> 144 MB with reused threads, 87 -> 111 MB with a thread per pass
and 2 arenas, 89 -> 118 MB with both (the rest of the growth is the passes'
pages growing with the lookback in the first 15 minutes). Two arenas cost
nothing measurable here: the threads spend their time in I/O and in Python,
which holds the GIL around its own allocations.

:func:`limit_malloc_arenas` sets that limit from inside the process (glibc's
``mallopt``), for every way the daemon is started; an explicit
``MALLOC_ARENA_MAX`` in the environment wins (glibc read it at start-up).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["DAEMON_ARENAS", "limit_malloc_arenas"]

DAEMON_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas: int = DAEMON_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; True when this call set the limit.

    Call it before the process starts threads: glibc fixes the limit it uses
    once it has made more arenas than it tests for. Does nothing elsewhere
    than glibc on Linux (musl has no per-thread arenas), or when
    ``MALLOC_ARENA_MAX`` is set.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt is a stub)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
