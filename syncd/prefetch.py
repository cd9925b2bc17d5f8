"""Run a page generator ahead of its consumer, in a thread of its own.

While the engine commits (the database works, Python waits), the connector
already fetches and normalizes the next pages (the vendor works, Python
parses). Memory stays bounded: what is being written, at most ``depth``
items waiting, one being built.

:func:`prefetched_batches` hands the consumer everything that is already
waiting (at least one item, up to a weight limit) in one go, so a consumer
that writes slower than the producer reads commits several pages at once,
and one that keeps up commits each page as soon as it arrives: a page never
waits for a later one.

Cursor safety does not change: items reach the consumer in order, and a
page's cursor is only committed with or after every page before it. A page
fetched ahead and never committed (the pass failed or stopped) is simply
fetched again next time.

A ``stop`` event ends the wait for the next item at once: the consumer does
not sit out a request (or a retry wait) in progress in the producer. The
producer is then abandoned, not joined for long: it is a daemon thread, its
next hand-over sees the stop and it ends (its retry waits end on the same
stop when the caller wired it into them, :class:`syncd.sources.http.RetryHooks`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar, cast

from syncd.threads import run_in_thread

T = TypeVar("T")

_END = object()
POLL = 0.1  # seconds between looks at ``stop`` while waiting for the producer
JOIN_WAIT = 0.25  # seconds the producer gets to end after the consumer is done


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` in order, produced ahead by a background thread.

    An exception raised by ``items`` is re-raised here, at the point it was
    reached. Closing this iterator early closes ``items`` in its thread.
    """
    batches = prefetched_batches(items, depth=depth, limit=1)
    try:
        for batch in batches:
            yield from batch
    finally:
        batches.close()


def prefetched_batches(
    items: Iterator[T],
    *,
    depth: int,
    limit: int,
    weight: Callable[[T], int] = lambda _item: 1,
    stop: threading.Event | None = None,
) -> Generator[list[T], None, None]:
    """Yield ``items`` in order, in lists of whatever the producer has ready.

    Each list holds at least one item; more are added, without waiting, while
    they are already produced and the list's total ``weight`` stays within
    ``limit``. At most ``depth`` items wait in between. Errors and early close
    behave as in :func:`prefetched`: an error raised by ``items`` comes after
    the items produced before it. ``stop`` set: the iteration ends (without
    an error) as soon as the consumer is waiting, before the next item.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    done = threading.Event()  # the consumer is gone: the producer stops handing over

    def put(item: object) -> bool:
        while not done.is_set():
            try:
                buffer.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(_Failed(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    # A reused thread: one new thread per pass grew the daemon's RSS (syncd.threads).
    produced = run_in_thread(produce, name="syncd-prefetch")
    held: object = None  # an item taken from the buffer that did not fit the last list
    try:
        while True:
            item = _next(buffer, stop) if held is None else held
            if item is None:  # stopped while waiting
                return
            if isinstance(item, _Failed):
                raise item.error
            if item is _END:
                return
            batch, held = _fill(buffer, cast(T, item), limit, weight)
            yield batch
    finally:
        done.set()
        # Bounded: a producer inside a request ends at its deadline, and is a
        # daemon thread either way; a shutdown never waits on it.
        produced.wait(JOIN_WAIT)


def _next(buffer: queue.Queue[object], stop: threading.Event | None) -> object | None:
    """The next item, or None once ``stop`` is set while none is there."""
    if stop is None:
        return buffer.get()
    while True:
        try:
            return buffer.get(timeout=POLL)
        except queue.Empty:
            if stop.is_set():
                return None


def _fill(
    buffer: queue.Queue[object], first: T, limit: int, weight: Callable[[T], int]
) -> tuple[list[T], object]:
    """``first`` and what else is already waiting, within ``limit``; and the item held back."""
    batch = [first]
    total = weight(first)
    while total < limit:
        try:
            item = buffer.get_nowait()
        except queue.Empty:
            return batch, None
        if item is _END or isinstance(item, _Failed):
            return batch, item  # handed on after the items before it
        size = weight(item)  # type: ignore[arg-type]
        if total + size > limit:
            return batch, item
        batch.append(item)  # type: ignore[arg-type]
        total += size
    return batch, None
