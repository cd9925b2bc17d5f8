"""The one-page-ahead producer thread: order, errors, early close."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from syncd.prefetch import prefetched, prefetched_batches


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


def test_batches_hold_what_is_ready_up_to_the_limit_and_never_wait_for_more() -> None:
    built = threading.Event()

    def items() -> Iterator[int]:
        yield from range(4)
        built.set()  # reached once 0..3 are all queued (depth 4)

    calls: list[int] = []

    def weight(item: int) -> int:
        # A consumer busy elsewhere while the producer runs ahead: the first
        # weighing waits until every item is queued.
        if not calls:
            assert built.wait(5)
        calls.append(item)
        return 1

    batches = list(prefetched_batches(items(), depth=4, limit=3, weight=weight))
    assert batches == [[0, 1, 2], [3]]


def test_a_batch_is_handed_over_before_the_error_that_follows_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("page 3 broke")

    stream = prefetched_batches(items(), depth=4, limit=10)
    got = next(stream)
    while len(got) < 2:  # the producer may not have queued item 2 yet
        got += next(stream)
    assert got == [1, 2]
    with pytest.raises(ValueError, match="page 3 broke"):
        next(stream)
