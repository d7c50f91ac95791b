"""The cache tier: one LRU node per running pool instance, and a minute of traffic through it.

Pure: the caller says which instances run (``sync``) and how the front-end routes (``serve``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sim.hashring import HashRing
from sim.lru import LruNode
from sim.workload import NODE_CAPACITY

BOOT_MINUTES = 1


@dataclass
class _Node:
    cache: LruNode
    serving_from: int  # the first minute in which memcached answers (and publishes)


class CacheTier:
    """Nodes appear cold when their instance starts running and vanish, data and all, with it."""

    def __init__(self, capacity: int = NODE_CAPACITY, boot_minutes: int = BOOT_MINUTES) -> None:
        self.capacity, self.boot_minutes = capacity, boot_minutes
        self._nodes: dict[str, _Node] = {}
        self._minute: int | None = None
        self._ring = HashRing(())

    def sync(self, running_ids: Iterable[str], minute: int) -> None:
        """Make the tier match the running instances as of ``minute``."""
        running = set(running_ids)
        for node_id in list(self._nodes):
            if node_id not in running:
                del self._nodes[node_id]
        for node_id in sorted(running - self._nodes.keys()):
            self._nodes[node_id] = _Node(LruNode(self.capacity), minute + self.boot_minutes)
        self._minute = minute

    @property
    def node_ids(self) -> list[str]:
        return sorted(self._nodes)

    @property
    def serving_ids(self) -> list[str]:
        """Nodes that have booted by the current minute: they answer GETs and publish metrics."""
        if self._minute is None:
            return []
        return sorted(node_id for node_id, node in self._nodes.items() if node.serving_from <= self._minute)

    def node(self, node_id: str) -> LruNode:
        return self._nodes[node_id].cache

    def serve(self, keys: Iterable[str], routing_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """GET each key on the node the front-end routes it to; ``{node: (gets, hits)}``.

        A key routed to a node that does not serve (booting, gone, or unknown) fails at the
        front-end: a miss that no node sees, so no node counts it. Every serving node is in the
        answer, zeros included, because a node publishes every interval whether asked or not.
        """
        if tuple(routing_ids) != self._ring.node_ids:
            self._ring = HashRing(routing_ids)
        serving = self.serving_ids
        counts = {node_id: [0, 0] for node_id in serving}
        for key in keys:
            node_id = self._ring.node_for(key)
            if node_id is None or node_id not in counts:
                continue
            tally = counts[node_id]
            tally[0] += 1
            tally[1] += self._nodes[node_id].cache.access(key)
        return {node_id: (gets, hits) for node_id, (gets, hits) in counts.items()}
