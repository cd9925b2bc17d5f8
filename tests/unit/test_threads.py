"""Prefetch threads are reused (issue 20): the threads follow the passes at once,
not the passes made, so glibc's per-thread arenas stop growing the daemon's RSS."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

from syncd.prefetch import prefetched
from syncd.threads import run_in_thread

_fresh = threading.local()


def _mark_thread(new: list[int]) -> None:
    """Count threads that never ran a job before (a thread-local starts empty)."""
    if not getattr(_fresh, "seen", False):
        _fresh.seen = True
        new.append(1)


def test_jobs_one_after_another_run_on_one_thread() -> None:
    new: list[int] = []
    for _ in range(50):
        assert run_in_thread(lambda: _mark_thread(new), name="t").wait(5)
    assert len(new) <= 2  # 50 with a thread per job


def test_fifty_prefetched_passes_reuse_their_threads() -> None:
    new: list[int] = []

    def pages() -> Iterator[int]:
        _mark_thread(new)
        yield from range(3)

    for _ in range(50):
        assert list(prefetched(pages(), depth=2)) == [0, 1, 2]
    assert len(new) <= 2


def test_jobs_at_once_get_threads_of_their_own() -> None:
    barrier = threading.Barrier(3, timeout=5)
    done = [run_in_thread(barrier.wait, name="t") for _ in range(3)]
    assert all(event.wait(5) for event in done)  # none waited for another to end


def test_a_job_sees_nothing_a_job_before_it_bound() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    assert run_in_thread(lambda: var.set("first job"), name="t").wait(5)
    assert run_in_thread(lambda: seen.append(var.get()), name="t").wait(5)
    assert seen == ["unset"]
