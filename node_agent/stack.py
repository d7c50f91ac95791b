"""An LRU stack with a ghost list: for each GET, the smallest capacity factor at which it would hit.

The simulation's ``CurveNode`` (``sim/lru.py``) is this stack with a faster batch path; the
agent ships alone, so the stack lives here and the simulation imports it. LRU has the inclusion
property (a bigger LRU holds all a smaller one does), so one pass over the GETs gives the hits of
every factor: the stack is cut into one segment per factor, segments past the real capacity
being the ghosts of keys an LRU of that capacity has evicted. O(factors) a GET.
"""

from __future__ import annotations

from collections import OrderedDict

FACTORS: tuple[str, ...] = ("0.125", "0.25", "0.5", "1", "2", "4", "8")
NEW_INDEX = len(FACTORS)  # a key no factor's capacity would hold


def factor_capacities(capacity: int) -> tuple[int, ...]:
    """The capacity at each of ``FACTORS``: ``round(capacity * factor)`` (0 for a tiny node's 1/8)."""
    return tuple(round(capacity * float(factor)) for factor in FACTORS)


class StackCurve:
    """``capacity`` in items (not bytes; see the README for why)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        bounds = factor_capacities(capacity)
        self._limits = tuple(high - low for low, high in zip((0, *bounds), bounds, strict=False))
        self._segments: tuple[OrderedDict[str, None], ...] = tuple(OrderedDict() for _ in FACTORS)
        self._where: dict[str, int] = {}

    def access(self, key: str) -> int:
        """A GET of ``key``: the index of the smallest factor holding it (``NEW_INDEX``: none)."""
        found = self._where.get(key, NEW_INDEX)
        if found == 0:
            self._segments[0].move_to_end(key)
            return 0
        if found < NEW_INDEX:
            del self._segments[found][key]
        self._segments[0][key] = None
        self._where[key] = 0
        # Each segment above the one the key left is now one too full: pass its oldest key down.
        for index in range(found):
            segment = self._segments[index]
            if len(segment) <= self._limits[index]:
                break
            oldest, _ = segment.popitem(last=False)
            if index == NEW_INDEX - 1:
                del self._where[oldest]
            else:
                self._segments[index + 1][oldest] = None
                self._where[oldest] = index + 1
        return found
