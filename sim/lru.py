"""One cache node: an LRU of a fixed number of items (values are not modelled, only keys)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator


class LruNode:
    """A node holding at most ``capacity`` keys; the least recently used one is evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, None] = OrderedDict()

    def get(self, key: str) -> bool:
        """True on a hit; a hit makes ``key`` the most recently used."""
        if key in self._items:
            self._items.move_to_end(key)
            return True
        return False

    def set(self, key: str) -> None:
        self._items[key] = None
        self._items.move_to_end(key)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def access(self, key: str) -> bool:
        """A cache-aside GET: a miss is followed by a set (the client fetched the value)."""
        if self.get(key):
            return True
        self.set(key)
        return False

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        # A peek: unlike get() it does not touch recency, so tests can look without disturbing.
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        """Keys from the least to the most recently used (the eviction order)."""
        return iter(self._items)
