"""A list of events kept sorted by key, with a parallel key list for bisect."""

from __future__ import annotations

from bisect import bisect_right
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar


class Keyed(Protocol):
    @property
    def key(self) -> Any: ...


E = TypeVar("E", bound=Keyed)

_by_key = attrgetter("key")
_INSORT_MAX = 32


class SortedIndex(Generic[E]):
    """``items`` sorted by ``item.key``; ``keys[i] == items[i].key``."""

    __slots__ = ("items", "keys")

    def __init__(self, items: list[E] | None = None) -> None:
        self.items: list[E] = items if items is not None else []
        self.keys: list[Any] = [item.key for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def add(self, batch: list[E]) -> None:
        """Add ``batch`` (sorted by key). Appends are O(batch); a few
        out-of-order items are inserted in place; many cause a merge sort."""
        if not batch:
            return
        items, keys = self.items, self.keys
        if keys:
            last = keys[-1]
            split = 0
            while split < len(batch) and batch[split].key < last:
                split += 1
            early, batch = batch[:split], batch[split:]
            if len(early) <= _INSORT_MAX:
                for item in early:
                    at = bisect_right(keys, item.key)
                    items.insert(at, item)
                    keys.insert(at, item.key)
            else:
                items.extend(early)
                items.sort(key=_by_key)
                keys[:] = [item.key for item in items]
        items.extend(batch)
        keys.extend(item.key for item in batch)
