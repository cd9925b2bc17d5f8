"""Reused threads for short-lived background work (the page prefetcher of each pass).

A new thread per pass made glibc give many of them an arena of their own,
and the daemon's RSS grew with the number of passes (issue 20: 86 to 199 MB
over 11,400 passes of 10 sources, without any growth of the Python heap).
:func:`run_in_thread` hands the job to an idle thread when there is one and
starts a thread only when none is idle, so the number of threads follows the
number of passes running at once, not the number of passes made. A thread
idle for :data:`IDLE_SECONDS` ends.

Each job runs as in a thread of its own: a daemon thread (it never holds the
interpreter's exit), in an empty ``contextvars`` context (nothing bound by
the job before it leaks into it).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable

__all__ = ["IDLE_SECONDS", "run_in_thread"]

IDLE_SECONDS = 60.0

Job = Callable[[], None]

_idle: list[queue.SimpleQueue[Job]] = []  # the inbox of each idle thread
_guard = threading.Lock()


def run_in_thread(job: Job, name: str) -> threading.Event:
    """Run ``job`` in a reused background thread; the event is set when it has returned."""
    done = threading.Event()

    def task() -> None:
        try:
            contextvars.Context().run(job)
        finally:
            done.set()

    with _guard:
        inbox = _idle.pop() if _idle else None
    if inbox is None:
        inbox = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(inbox,), name=name, daemon=True).start()
    inbox.put(task)
    return done


def _serve(inbox: queue.SimpleQueue[Job]) -> None:
    while True:
        try:
            task = inbox.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with _guard:
                if inbox in _idle:
                    _idle.remove(inbox)
                    return
            continue  # taken from the idle list just now: its job is on the way
        task()  # a job that raises ends its thread, as a thread of its own would
        with _guard:
            _idle.append(inbox)
