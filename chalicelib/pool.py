"""The pool's membership: an ordered list of nodes and their states (pure data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

LAUNCHING = "launching"
IN_SERVICE = "in_service"
DRAINING = "draining"
STATES = (LAUNCHING, IN_SERVICE, DRAINING)


@dataclass(frozen=True)
class Node:
    id: str
    state: str
    ip: str | None = None
    instance_type: str | None = None
    launched_at: str | None = None
    # Set when the scaler took an instance it did not launch (cache_list POST); the next tick
    # stamps its own clock on such a node rather than trusting the instance's launch time.
    adopted: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


@dataclass(frozen=True)
class Pool:
    """Membership as stored: ``nodes`` in index order, plus tag work still owed to EC2.

    ``pending_tag``/``pending_untag`` hold instances whose pool tag must still be written or
    removed after a membership write: the table is written first, so a failed tag call loses
    nothing, and the next writer finishes the work.
    """

    nodes: tuple[Node, ...] = ()
    version: int = 0
    sequence: int = 0
    pending_tag: tuple[str, ...] = ()
    pending_untag: tuple[str, ...] = ()

    @property
    def members(self) -> tuple[Node, ...]:
        """Launching and in-service nodes: the ones that count toward the pool size."""
        return tuple(node for node in self.nodes if node.state in (LAUNCHING, IN_SERVICE))

    @property
    def pool_size(self) -> int:
        return len(self.members)

    @property
    def cache_pool_ids(self) -> list[str]:
        return [node.id for node in self.members]

    @property
    def live_ids(self) -> list[str]:
        return [node.id for node in self.nodes]

    def node(self, node_id: str) -> Node | None:
        return next((node for node in self.nodes if node.id == node_id), None)

    def to_data(self) -> dict[str, Any]:
        return {
            "nodes": [asdict(node) for node in self.nodes],
            "sequence": self.sequence,
            "pending_tag": list(self.pending_tag),
            "pending_untag": list(self.pending_untag),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any], version: int) -> Pool:
        return cls(
            nodes=tuple(Node.from_dict(node) for node in data.get("nodes", [])),
            version=version,
            sequence=int(data.get("sequence", 0)),
            pending_tag=tuple(data.get("pending_tag", [])),
            pending_untag=tuple(data.get("pending_untag", [])),
        )

    def with_nodes(self, nodes: list[Node] | tuple[Node, ...], **changes: Any) -> Pool:
        return replace(self, nodes=tuple(nodes), **changes)


def describe_nodes(pool: Pool) -> list[dict[str, Any]]:
    """SPEC's ``nodes`` of cache_list: every live node with its index (its position)."""
    return [
        {"id": node.id, "ip": node.ip, "index": index, "state": node.state}
        for index, node in enumerate(pool.nodes)
    ]
