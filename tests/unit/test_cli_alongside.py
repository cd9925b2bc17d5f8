"""``syncd sync`` writes the BI calendars alongside its passes on PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from syncd.cli import _alongside


def test_concurrent_work_runs_during_the_block_and_is_joined() -> None:
    started = threading.Event()
    release = threading.Event()
    done: list[str] = []

    def work() -> None:
        started.set()
        release.wait(5)
        done.append("work")

    with _alongside(work, concurrent=True):
        assert started.wait(5), "the work did not start while the block ran"
        done.append("block")
        release.set()
    assert done == ["block", "work"], "the block must not return before the work ends"


def test_sequential_work_runs_after_the_block() -> None:
    order: list[str] = []
    with _alongside(lambda: order.append("work"), concurrent=False):
        order.append("block")
    assert order == ["block", "work"]


@pytest.mark.parametrize("concurrent", [True, False])
def test_an_error_in_the_work_reaches_the_caller(concurrent: bool) -> None:
    def work() -> None:
        raise RuntimeError("calendar write failed")

    with (
        pytest.raises(RuntimeError, match="calendar write failed"),
        _alongside(work, concurrent=concurrent),
    ):
        pass
