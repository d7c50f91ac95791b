"""The cache tier: one LRU node per running pool instance, and a minute of traffic through it.

Pure: the caller says which instances run (``sync``) and how the front-end routes (``serve``,
``serve_minute``). Keys may be str or int; the hash of an int is that of its decimal text.

**Front-ends.** With ``frontend="cold"`` a change of the routing list just routes by the new list:
keys that change owner start cold on it, and a node that goes takes its keys with it. With
``frontend="warm"`` the tier does what the front-end kit does with a change (*warm moves*): before
it routes by the new list, it copies to their new owners the keys that change owner, from their
current owners, hottest first, one GET + one ``add`` per key, at ``copy_keys_per_second`` and for
at most ``copy_budget_seconds``. At minute granularity:

- *what is copied*: every key cached on its owner under the old list whose owner under the new
  list is another node that serves (a booting node receives nothing), read from each source's LRU
  most recent first and taken from the sources in turn (the i-th most recent of every source before
  the (i+1)-th of any: the simulation keeps no clock per access, memcached's last-access times are
  whole seconds anyway); at most ``copy_keys_per_second × copy_budget_seconds`` keys, the rest stay
  behind and start cold where they land;
- *when*: the copy takes ``keys ÷ copy_keys_per_second`` seconds, the first part of the minute.
  The kit routes by the old list until its copy is done, so that share of the minute's GETs (the
  first ones, in arrival order) goes by the old list: the old owners answer them, a leaving node
  included. Then the copied keys are in place and the rest of the minute goes by the new list.
  (A GET during the copy is thus not a cold miss but a GET the old owner answers; the price of the
  copy is that the new layout starts later, and that keys past the cap start cold.) The list of
  keys is read at the start of the minute and written after the old list's share of GETs;
- *how a copy lands*: as memcached's ``add``: a key the destination already caches stays as it is;
  any other becomes the destination's most recent key (evicting its least recent one when full),
  in copy order, so among the copied keys the hottest ends up the least recent, as with the kit;
- *the source*: the kit reads with ``gat``, a touch, not a GET: copies count as no GET and no hit in
  what any node publishes, and the source's LRU order is left as it is (memcached moves an item
  only when it was last bumped over a minute ago, and the keys worth copying were just read);
- *a node that leaves* (scale-in) is kept by ``sync`` until the next ``serve_minute``: its keys are
  copied to their new owners, it answers the old list's share of the minute, then it is dropped.
  Its GETs count for the users (``TierMinute.hits``) but it publishes nothing more.

Each change of the list's membership is recorded in ``moves`` (keys copied, how long it took).
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, zip_longest
from typing import Literal

from sim.hashring import Hashing, Router, make_router
from sim.lru import FACTORS, HIT_INDEX, CurveNode, Key, LruNode
from sim.workload import NODE_CAPACITY

BOOT_MINUTES = 1
# Route memo entries kept before it is dropped and rebuilt: bounds the memory one-off keys take.
ROUTE_MEMO_LIMIT = 1 << 18

# The front-end kit's warm moves: keys copied a second (one GET + one add each; to be replaced by
# the rate measured against real memcached), and how long a move may copy before it gives up.
COPY_KEYS_PER_SECOND = 20_000
COPY_BUDGET_SECONDS = 20.0
Frontend = Literal["cold", "warm"]
FRONTENDS: tuple[Frontend, ...] = ("cold", "warm")


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

    def __add__(self, other: NodeMinute) -> NodeMinute:
        """Two parts of a minute on one node, as one."""
        within = None
        if self.within is not None and other.within is not None:
            within = tuple(map(operator.add, self.within, other.within))
        return NodeMinute(self.gets + other.gets, self.hits + other.hits, within)


@dataclass(frozen=True)
class Move:
    """One change of the routing list's membership under a warm front-end.

    ``changed``: keys cached on their old owner that the new list gives to another node;
    ``copied``: those copied (to a serving node, within the cap); ``seconds``: the copy's time.
    """

    minute: int
    changed: int
    copied: int
    seconds: float


class TierMinute(dict[str, NodeMinute]):
    """``serve_minute``'s answer: ``{node: NodeMinute}`` for every serving node, plus ``failed``.

    A dict, so it reads like ``serve``'s answer; ``failed`` is what no node saw: the GETs the
    front-end routed to nothing or to a node that does not serve (booting, gone, unknown). They
    are misses for the application, so the minute's true miss rate needs them. ``drained``: the
    GETs answered by nodes that left during the minute (a warm move's sources), which publish
    nothing more but whose hits the users had. ``client_hits``: per node, the hits the front-end
    itself saw, where the tier counts them apart from what the nodes publish (real memcached).
    """

    def __init__(
        self,
        nodes: Mapping[str, NodeMinute],
        failed: int,
        drained: NodeMinute | None = None,
        client_hits: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(nodes)
        self.failed = failed
        self.drained = drained if drained is not None else NodeMinute(0, 0)
        self.client_hits = dict(client_hits or {})

    @property
    def gets(self) -> int:
        """GETs the serving nodes counted (what they publish)."""
        return sum(node.gets for node in self.values())

    @property
    def hits(self) -> int:
        """Hits the users had: the serving nodes' and the leaving nodes'."""
        return sum(node.hits for node in self.values()) + self.drained.hits

    @property
    def requests(self) -> int:
        """Every GET of the minute, the failed and the leaving nodes' included."""
        return self.gets + self.failed + self.drained.gets

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
    "modulo", see ``sim.hashring``); ``frontend`` whether a change of the routing list moves keys
    cold or warm (see the module's docstring).
    """

    def __init__(
        self,
        capacity: int = NODE_CAPACITY,
        boot_minutes: int = BOOT_MINUTES,
        *,
        curve: bool = False,
        hashing: Hashing = "consistent",
        frontend: Frontend = "cold",
        copy_keys_per_second: float = COPY_KEYS_PER_SECOND,
        copy_budget_seconds: float = COPY_BUDGET_SECONDS,
    ) -> None:
        if frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, got {frontend!r}")
        self.capacity, self.boot_minutes = capacity, boot_minutes
        self.curve, self.hashing, self.frontend = curve, hashing, frontend
        self.copy_keys_per_second, self.copy_budget_seconds = copy_keys_per_second, copy_budget_seconds
        self.moves: list[Move] = []
        self._nodes: dict[str, _Node] = {}
        self._leaving: dict[str, _Node] = {}  # gone from EC2, their keys not yet copied away
        self._minute: int | None = None
        self._routes = _RouteMemo(make_router((), hashing))

    @property
    def copy_cap(self) -> int:
        """The most keys one move copies: its rate times its time budget."""
        return int(self.copy_keys_per_second * self.copy_budget_seconds)

    def sync(self, running_ids: Iterable[str], minute: int) -> None:
        """Make the tier match the running instances as of ``minute``.

        With a warm front-end, a serving node the front-end routes to is kept aside until the
        next ``serve_minute`` has copied its keys away; any other node that goes is dropped.
        """
        running = set(running_ids)
        routed = set(self._routes.router.node_ids)
        for node_id in list(self._nodes):
            if node_id not in running:
                node = self._nodes.pop(node_id)
                if self.frontend == "warm" and node_id in routed and node.serving_from <= (self._minute or 0):
                    self._leaving[node_id] = node
        for node_id in sorted(running & self._leaving.keys()):
            self._nodes[node_id] = self._leaving.pop(node_id)  # back before it went: data and all
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
        keys = keys if isinstance(keys, Sequence) else list(keys)  # read twice below
        serving = self.serving_ids
        before = self._routes
        routes = self._routes_for(routing_ids)
        leaving, self._leaving = self._leaving, {}
        if self.frontend == "warm" and self._membership_changed(before, routes):
            return self._serve_moving(keys, before, routes, serving, leaving)
        buckets = self._split(keys, routes, serving)
        answering = set(serving)
        failed = sum(len(bucket) for node_id, bucket in buckets.items() if node_id not in answering)
        return TierMinute({node_id: self._replay(node_id, buckets[node_id]) for node_id in serving}, failed)

    @staticmethod
    def _membership_changed(before: _RouteMemo, after: _RouteMemo) -> bool:
        """Whether nodes joined or left the routing list (from none at all is no move)."""
        old, new = before.router.node_ids, after.router.node_ids
        return after is not before and bool(old) and set(old) != set(new)

    def _serve_moving(
        self,
        keys: Sequence[Key],
        before: _RouteMemo,
        after: _RouteMemo,
        serving: list[str],
        leaving: Mapping[str, _Node],
    ) -> TierMinute:
        """A minute whose routing list changed, with a warm front-end (see the module's docstring)."""
        caches = {node_id: self._nodes[node_id].cache for node_id in serving}
        caches.update((node_id, node.cache) for node_id, node in leaving.items())
        changed = self._owner_changes(before, after, caches)
        receiving = set(serving)
        copyable = [(key, target) for key, target in changed if target in receiving]
        copies = copyable[: self.copy_cap]
        seconds = len(copies) / self.copy_keys_per_second
        self.moves.append(Move(self._minute or 0, len(changed), len(copies), seconds))
        cut = round(len(keys) * min(seconds, 60.0) / 60.0)
        # The copy's share of the minute goes by the old list; the old owners, leaving ones too, answer.
        first = self._split(keys[:cut], before, caches)
        for key, target in copies:
            caches[target].add(key)
        second = self._split(keys[cut:], after, serving)
        failed = sum(len(bucket) for node_id, bucket in first.items() if node_id not in caches)
        failed += sum(len(bucket) for node_id, bucket in second.items() if node_id not in receiving)
        nodes = {
            node_id: self._replay(node_id, first[node_id]) + self._replay(node_id, second[node_id])
            for node_id in serving
        }
        drained = NodeMinute(0, 0)
        for node_id, node in leaving.items():
            drained += self._replay_on(node.cache, first[node_id])
        return TierMinute(nodes, failed, drained)

    def _owner_changes(
        self, before: _RouteMemo, after: _RouteMemo, caches: Mapping[str, LruNode | CurveNode]
    ) -> list[tuple[Key, str]]:
        """``(key, new owner)`` of every key cached on its old owner that the new list moves, in copy
        order: the sources in turn (old list order), each from its most recent key down."""
        per_source = []
        for source in before.router.node_ids:
            if source not in caches:
                continue
            newest_first = reversed(list(caches[source]))
            per_source.append(
                [
                    (key, target)
                    for key in newest_first
                    if before[key] == source and (target := after[key]) is not None and target != source
                ]
            )
        return [pair for pair in chain.from_iterable(zip_longest(*per_source)) if pair is not None]

    def _split(
        self, keys: Sequence[Key], routes: _RouteMemo, serving: Iterable[str]
    ) -> dict[str | None, list[Key]]:
        """The keys per node they route to, in order; None gathers those routed to no node at all."""
        listed = routes.router.node_ids
        buckets: dict[str | None, list[Key]] = {node: [] for node in (*serving, *listed, None)}
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
        return self._replay_on(self._nodes[node_id].cache, keys)

    @staticmethod
    def _replay_on(cache: LruNode | CurveNode, keys: list[Key]) -> NodeMinute:
        if isinstance(cache, LruNode):
            return NodeMinute(len(keys), cache.hits_of(keys))
        within = tuple(accumulate(cache.tally(keys)[: len(FACTORS)]))
        return NodeMinute(len(keys), within[HIT_INDEX], within)
