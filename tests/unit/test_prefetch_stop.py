"""A stop ends the wait for the next item at once; the producer is not waited for."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from syncd.prefetch import prefetched_batches


def test_a_stop_ends_the_wait_for_a_slow_producer() -> None:
    release = threading.Event()
    stop = threading.Event()

    def slow() -> Iterator[int]:
        yield 1
        release.wait(30)  # a request that takes its time
        yield 2

    batches = prefetched_batches(slow(), depth=2, limit=10, stop=stop)
    try:
        assert next(batches) == [1]
        threading.Timer(0.2, stop.set).start()
        began = time.monotonic()
        assert list(batches) == []  # ended, without the item in progress
        assert time.monotonic() - began < 1.0
    finally:
        release.set()


def test_without_a_stop_every_item_arrives() -> None:
    stop = threading.Event()
    batches = prefetched_batches(iter(range(5)), depth=2, limit=1, stop=stop)
    assert [item for batch in batches for item in batch] == [0, 1, 2, 3, 4]
