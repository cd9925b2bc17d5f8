"""The one-page-ahead producer thread: order, errors, early close."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from syncd.prefetch import prefetched


def test_items_arrive_in_order_and_all_of_them() -> None:
    assert list(prefetched(iter(range(100)))) == list(range(100))


def test_an_error_is_raised_where_it_was_reached() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("page 3 broke")

    stream = prefetched(items())
    assert [next(stream), next(stream)] == [1, 2]
    with pytest.raises(ValueError, match="page 3 broke"):
        next(stream)


def test_the_producer_runs_at_most_one_item_ahead_and_is_closed_early() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            for n in range(1000):
                produced.append(n)
                yield n
        finally:
            closed.set()

    stream = prefetched(items(), depth=1)
    assert next(stream) == 0
    stream.close()  # e.g. the pass was asked to stop
    assert closed.wait(2)
    # 0 consumed, 1 queued, 2 built and waiting to be queued: bounded.
    assert len(produced) <= 3
