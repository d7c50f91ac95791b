"""One cache node: an LRU of a fixed number of items (values are not modelled, only keys).

``LruNode`` answers hit or miss. ``CurveNode`` answers, for every GET, the smallest of
``FACTORS`` × its capacity at which the GET would have hit: LRU has the inclusion property (a
bigger LRU holds everything a smaller one does), so one pass over the traffic gives the hit
count of every size at once, which is what a benchmark needs to say what a bigger or smaller
node would have done without replaying the day once per size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

from node_agent.stack import FACTORS, NEW_INDEX, StackCurve
from node_agent.stack import factor_capacities as factor_capacities  # re-exported for the tests

# What a node caches: a key's name (the local stack's workload) or id (the benchmark's).
Key = str | int

# Capacity factors a CurveNode measures, as text so they print and key results exactly.
HIT_INDEX = FACTORS.index("1")  # access() <= HIT_INDEX: a hit at the node's real capacity


class LruNode:
    """A node holding at most ``capacity`` keys; the least recently used one is evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[Key, None] = OrderedDict()

    def get(self, key: Key) -> bool:
        """True on a hit; a hit makes ``key`` the most recently used."""
        if key in self._items:
            self._items.move_to_end(key)
            return True
        return False

    def set(self, key: Key) -> None:
        self._items[key] = None
        self._items.move_to_end(key)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def add(self, key: Key) -> None:
        """memcached's ``add``: stored as the most recent key unless already cached (then untouched)."""
        if key not in self._items:
            self.set(key)

    def access(self, key: Key) -> bool:
        """A cache-aside GET: a miss is followed by a set (the client fetched the value)."""
        if self.get(key):
            return True
        self.set(key)
        return False

    def hits_of(self, keys: Iterable[Key]) -> int:
        """``access`` each key in turn; the number of hits.

        The same as ``sum(map(self.access, keys))``, inlined because a simulated day makes
        millions of accesses and the two method calls per key were most of their cost.
        """
        items, capacity, hits = self._items, self.capacity, 0
        move_to_end, popitem = items.move_to_end, items.popitem
        for key in keys:
            if key in items:
                move_to_end(key)
                hits += 1
            else:
                items[key] = None
                if len(items) > capacity:
                    popitem(False)
        return hits

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        # A peek: unlike get() it does not touch recency, so tests can look without disturbing.
        return key in self._items

    def __iter__(self) -> Iterator[Key]:
        """Keys from the least to the most recently used (the eviction order)."""
        return iter(self._items)


class CurveNode(StackCurve):
    """An LRU node of ``capacity`` keys that also knows how every GET would have fared at each factor.

    The node agent's stack (``node_agent/stack.py``): one OrderedDict per segment, segment ``i``
    holding the stack positions ``[bound[i-1], bound[i])`` with ``bound = factor_capacities``.
    Segments past ``capacity`` are a ghost list: keys an LRU of ``capacity`` has evicted but one
    of up to 8× would still hold. ``access`` (a cache-aside GET: the index of the smallest factor
    at which it would have hit, ``NEW_INDEX`` when none) is the agent's; the simulation adds
    ``tally`` for its millions of GETs, and reads the stack as a cache.
    """

    def add(self, key: Key) -> None:
        """memcached's ``add``: a key not cached (a ghost or unknown) becomes the most recent, as a
        miss's set would make it; a cached key is left where it is. Nothing is counted."""
        if key not in self:
            self.access(key)  # type: ignore[arg-type]

    def tally(self, keys: Iterable[Key]) -> list[int]:
        """``access`` each key in turn; ``counts[i]``: how many answers were index ``i`` (0..7).

        ``access`` and ``_cascade`` inlined, because a simulated day makes millions of accesses
        and the method calls were a third of their cost; tests hold it equal to ``access``.
        """
        counts = [0] * (NEW_INDEX + 1)
        segments, where, limits = self._segments, self._where, self._limits
        top, lookup = segments[0], where.get
        move_to_top = top.move_to_end
        # (segment, its size limit, the next segment, the next one's index) down the stack.
        steps = [(segments[i], limits[i], segments[i + 1], i + 1) for i in range(NEW_INDEX - 1)]
        last, last_limit = segments[-1], limits[-1]
        for key in keys:
            found = lookup(key, NEW_INDEX)
            counts[found] += 1
            if found == 0:
                move_to_top(key)
                continue
            if found < NEW_INDEX:
                del segments[found][key]
            top[key] = None
            where[key] = 0
            for segment, limit, below, index in steps[:found]:
                if len(segment) <= limit:
                    break
                oldest = segment.popitem(False)[0]
                below[oldest] = None
                where[oldest] = index
            else:
                if found == NEW_INDEX and len(last) > last_limit:
                    del where[last.popitem(False)[0]]
        return counts

    def __len__(self) -> int:
        """The keys really cached (the ghosts past ``capacity`` are not)."""
        return sum(map(len, self._segments[: HIT_INDEX + 1]))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | int) and self._where.get(key, NEW_INDEX) <= HIT_INDEX

    def __iter__(self) -> Iterator[Key]:
        """The cached keys from the least to the most recently used, as ``LruNode`` iterates."""
        for segment in reversed(self._segments[: HIT_INDEX + 1]):
            yield from segment
