"""What the nodes served in a tick's window, and the pool's miss rate from it: plain data and
arithmetic, no AWS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

# SPEC's ``CapacityFactor`` values of the optional miss-ratio curve, smallest first.
CAPACITY_FACTORS = ("0.125", "0.25", "0.5", "1", "2", "4", "8")


@dataclass(frozen=True)
class NodeTraffic:
    """One node's sums over the miss-rate window, and when it last published at all."""

    gets: float = 0.0
    hits: float = 0.0
    last_published: datetime | None = None  # start of the newest minute with a datapoint
    # ``HitsWithin`` summed over the window, one per CAPACITY_FACTORS; None when the node
    # published no curve in the window (or it was not asked for).
    within: tuple[float, ...] | None = None

    @property
    def impossible(self) -> str | None:
        """Why these sums cannot be a window's traffic (a restarted memcached, a broken
        publisher), or None when they can."""
        if self.gets < 0 or self.hits < 0:
            return "negative figures"
        if self.hits > self.gets:
            return "more hits than GET requests"
        return None


@dataclass(frozen=True)
class PoolTraffic:
    nodes: dict[str, NodeTraffic] = field(default_factory=dict)

    def of(self, node_id: str) -> NodeTraffic:
        return self.nodes.get(node_id, NodeTraffic())

    def sound(self) -> tuple[PoolTraffic, dict[str, str]]:
        """The traffic with every impossible window left out, as if that node had published
        nothing in it (SPEC), and why each was left out. When it last published is kept: the
        node is alive, its figures are not."""
        left_out = {node: traffic.impossible for node, traffic in self.nodes.items() if traffic.impossible}
        if not left_out:
            return self, {}
        kept = {
            node: NodeTraffic(last_published=traffic.last_published) if node in left_out else traffic
            for node, traffic in self.nodes.items()
        }
        return PoolTraffic(kept), {node: str(why) for node, why in left_out.items()}


def miss_rate(
    traffic: PoolTraffic, in_service: Sequence[str], min_get_requests: int
) -> tuple[float | None, int]:
    """SPEC's miss rate over the in-service nodes, and the GET requests it stands on.

    Fewer than ``min_get_requests`` GETs is no data (None), and so is no GET at all: a pool that
    served nothing has no miss rate, and must never look like one that missed nothing.
    """
    gets = sum(traffic.of(node).gets for node in in_service)
    hits = sum(traffic.of(node).hits for node in in_service)
    requests = int(gets)
    if gets <= 0 or gets < min_get_requests:
        return None, requests
    return min(1.0, max(0.0, 1.0 - hits / gets)), requests
