"""Run a page generator one page ahead, in a thread of its own.

While the engine commits page N (the database works, Python waits), the
connector already fetches and normalizes page N+1 (the vendor works, Python
parses). Memory stays bounded: one page being written, at most ``depth``
waiting, one being built.

Cursor safety does not change: page N+1's cursor is only committed after page
N's, by the consumer, in order. A page fetched ahead and never committed (the
pass failed or stopped) is simply fetched again next time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` in order, produced ahead by a background thread.

    An exception raised by ``items`` is re-raised here, at the point it was
    reached. Closing this iterator early closes ``items`` in its thread.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
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

    thread = threading.Thread(target=produce, name="syncd-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
