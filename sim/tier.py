"""The cache tier: one LRU node per running pool instance, and a minute of traffic through it.

Pure: the caller says which instances run (``sync``) and how the front-end routes (``serve``,
``serve_minute``). Keys may be str or int; the hash of an int is that of its decimal text.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from sim.hashring import Hashing, Router, make_router
from sim.lru import FACTORS, HIT_INDEX, CurveNode, Key, LruNode
from sim.workload import NODE_CAPACITY

BOOT_MINUTES = 1
# Route memo entries kept before it is dropped and rebuilt: bounds the memory one-off keys take.
ROUTE_MEMO_LIMIT = 1 << 18


@dataclass
class _Node:
    cache: LruNode | CurveNode
    serving_from: int  # the first minute in which memcached answers (and publishes)


@dataclass(frozen=True)
class NodeMinute:
    """What one serving node saw in a minute.

    ``within[i]``: the GETs that would have hit had the node held ``FACTORS[i]`` × its capacity,
    cumulative (``within[HIT_INDEX] == hits``); None when the tier does not measure the curve.
    """

    gets: int
    hits: int
    within: tuple[int, ...] | None = None


class TierMinute(dict[str, NodeMinute]):
    """``serve_minute``'s answer: ``{node: NodeMinute}`` for every serving node, plus ``failed``.

    A dict, so it reads like ``serve``'s answer; ``failed`` is what no node saw: the GETs the
    front-end routed to nothing or to a node that does not serve (booting, gone, unknown). They
    are misses for the application, so the minute's true miss rate needs them.
    """

    def __init__(self, nodes: Mapping[str, NodeMinute], failed: int) -> None:
        super().__init__(nodes)
        self.failed = failed

    @property
    def gets(self) -> int:
        """GETs the nodes counted (what they publish)."""
        return sum(node.gets for node in self.values())

    @property
    def hits(self) -> int:
        return sum(node.hits for node in self.values())

    @property
    def requests(self) -> int:
        """Every GET of the minute, the failed included."""
        return self.gets + self.failed

    @property
    def true_miss_rate(self) -> float | None:
        """Misses over every GET, the failed included (None for a minute without GETs)."""
        return 1 - self.hits / self.requests if self.requests else None


class _RouteMemo(dict[Key, str | None]):
    """key -> node under one routing list: keys repeat every minute, hashing them once is enough."""

    def __init__(self, router: Router) -> None:
        super().__init__()
        self.router = router

    def __missing__(self, key: Key) -> str | None:
        node_id = self[key] = self.router.node_for(key)
        return node_id


class CacheTier:
    """Nodes appear cold when their instance starts running and vanish, data and all, with it.

    ``curve=True`` makes the nodes ``CurveNode``s, so ``serve_minute`` also says what bigger or
    smaller nodes would have hit; ``hashing`` is how the front-end maps keys ("consistent" or
    "modulo", see ``sim.hashring``).
    """

    def __init__(
        self,
        capacity: int = NODE_CAPACITY,
        boot_minutes: int = BOOT_MINUTES,
        *,
        curve: bool = False,
        hashing: Hashing = "consistent",
    ) -> None:
        self.capacity, self.boot_minutes = capacity, boot_minutes
        self.curve, self.hashing = curve, hashing
        self._nodes: dict[str, _Node] = {}
        self._minute: int | None = None
        self._routes = _RouteMemo(make_router((), hashing))

    def sync(self, running_ids: Iterable[str], minute: int) -> None:
        """Make the tier match the running instances as of ``minute``."""
        running = set(running_ids)
        for node_id in list(self._nodes):
            if node_id not in running:
                del self._nodes[node_id]
        for node_id in sorted(running - self._nodes.keys()):
            cache = CurveNode(self.capacity) if self.curve else LruNode(self.capacity)
            self._nodes[node_id] = _Node(cache, minute + self.boot_minutes)
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

    def node(self, node_id: str) -> LruNode | CurveNode:
        return self._nodes[node_id].cache

    def serve(self, keys: Iterable[Key], routing_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """GET each key on the node the front-end routes it to; ``{node: (gets, hits)}``.

        A key routed to a node that does not serve (booting, gone, or unknown) fails at the
        front-end: a miss that no node sees, so no node counts it. Every serving node is in the
        answer, zeros included, because a node publishes every interval whether asked or not.
        """
        served = self.serve_minute(keys, routing_ids)
        return {node_id: (node.gets, node.hits) for node_id, node in served.items()}

    def serve_minute(self, keys: Iterable[Key], routing_ids: Sequence[str]) -> TierMinute:
        """``serve`` with more said: per node a ``NodeMinute``, and the GETs that failed.

        Each node's GETs are replayed in their arrival order, one node after the other: the nodes
        share nothing, so this gives what the interleaved arrivals would, in far fewer steps.
        """
        serving = self.serving_ids
        buckets = self._split(keys, routing_ids, serving)
        answering = set(serving)
        failed = sum(len(bucket) for node_id, bucket in buckets.items() if node_id not in answering)
        return TierMinute({node_id: self._replay(node_id, buckets[node_id]) for node_id in serving}, failed)

    def _split(
        self, keys: Iterable[Key], routing_ids: Sequence[str], serving: Iterable[str]
    ) -> dict[str | None, list[Key]]:
        """The keys per node they route to, in order; None gathers those routed to no node at all."""
        keys = keys if isinstance(keys, Sequence) else list(keys)  # read twice below
        routes = self._routes_for(routing_ids)
        buckets: dict[str | None, list[Key]] = {node: [] for node in (*serving, *routing_ids, None)}
        appenders = {node_id: bucket.append for node_id, bucket in buckets.items()}
        # All in C: look each key's node up, then append the key to that node's list.
        deque(map(operator.call, map(appenders.__getitem__, map(routes.__getitem__, keys)), keys), maxlen=0)
        return buckets

    def _routes_for(self, routing_ids: Sequence[str]) -> _RouteMemo:
        """The memo for this routing list, rebuilt when the list changes or has grown too big."""
        routing = tuple(routing_ids)
        if routing != self._routes.router.node_ids or len(self._routes) > ROUTE_MEMO_LIMIT:
            self._routes = _RouteMemo(make_router(routing, self.hashing))
        return self._routes

    def _replay(self, node_id: str, keys: list[Key]) -> NodeMinute:
        cache = self._nodes[node_id].cache
        if isinstance(cache, LruNode):
            return NodeMinute(len(keys), cache.hits_of(keys))
        within = tuple(accumulate(cache.tally(keys)[: len(FACTORS)]))
        return NodeMinute(len(keys), within[HIT_INDEX], within)
