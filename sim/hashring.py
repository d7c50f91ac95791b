"""Consistent hashing with virtual nodes, as a front-end spreads keys over the cache nodes.

The hash is blake2b, never Python's ``hash`` (salted per process), so a key maps to the same node
in every run and every process. Adding a node to N moves about 1/(N+1) of the keys, all to it.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from functools import lru_cache

VIRTUAL_NODES = 100


@lru_cache(maxsize=1 << 17)
def _point(text: str) -> int:
    # Keys repeat minute after minute, so memoising their points keeps a minute's routing cheap.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Maps keys onto ``node_ids`` (order does not change the mapping, only the list's content)."""

    def __init__(self, node_ids: Sequence[str], virtual_nodes: int = VIRTUAL_NODES) -> None:
        # A repeated id would only add the same virtual nodes twice; the mapping is the same without.
        self.node_ids = tuple(dict.fromkeys(node_ids))
        pairs = sorted(
            (_point(f"{node}#{replica}"), node) for node in self.node_ids for replica in range(virtual_nodes)
        )
        self._points = [point for point, _ in pairs]
        self._owners = [node for _, node in pairs]

    def node_for(self, key: str) -> str | None:
        """The node owning ``key``: the first virtual node clockwise from its point; None when empty."""
        if not self._points:
            return None
        index = bisect.bisect_right(self._points, _point(key))
        return self._owners[index % len(self._owners)]
