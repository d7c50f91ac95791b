"""The pool's membership: an ordered list of nodes and their states (pure data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.clock import parse_iso
from chalicelib.domain.instances import Instance
from chalicelib.domain.plan import Plan

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
    # Set when the scaler took an instance it did not launch (cache_list POST).
    adopted: bool = False
    # The tick time (SPEC's T) at which the node entered its state. Routes leave it unset and
    # the next tick stamps its own T: routes do not start clocks.
    since: str | None = None
    # The launch's idempotency token, when the scaler launched the node.
    token: str | None = None
    # For a draining node: the front-end has answered its ``decrease`` (the drain clock runs).
    drain_delivered: bool = False

    @classmethod
    def launching(
        cls, instance: Instance, *, since: str | None = None, token: str | None = None, adopted: bool = False
    ) -> Node:
        """A node for an instance that joins the pool: launched by a plan, or adopted."""
        return cls(
            id=instance.id,
            state=LAUNCHING,
            ip=instance.ip,
            instance_type=instance.instance_type,
            launched_at=instance.launched_at,
            adopted=adopted,
            since=since,
            token=token,
        )

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
    # The newest tick applied, and what it decided (a retried event answers this again).
    last_tick: str | None = None
    last_tick_wall: str | None = None  # the wall clock when that tick wrote (see ``clock``)
    last_decision: dict[str, Any] | None = None
    # Miss rates of the ticks with data since the last resize, oldest first (the scale-in window).
    recent_miss_rates: tuple[float, ...] = ()
    # A plan written before acting on EC2 and cleared after: whoever finds it finishes it.
    pending_plan: Plan | None = None
    # Notifications to the front-end not yet answered with a 2xx, oldest first.
    outbox: tuple[dict[str, Any], ...] = ()
    # Drains the front-end confirmed lately: IP → instance id, so that a repeat answers the same.
    confirmed: dict[str, str] | None = None
    # Instances the pool decided to end whose termination EC2 has not confirmed yet: no longer
    # members, still live. Written before TerminateInstances is called, retried until it succeeds.
    terminating: tuple[str, ...] = ()
    # Tagged instances in no list or plan: id → the tick time that first saw them.
    orphans: dict[str, str] | None = None
    # What a policy keeps between ticks (the predictive policy's recent needs and experience).
    policy_memory: dict[str, Any] | None = None
    # The shadow policy's own: {"policy": its name, "memory": what it keeps}; None without one.
    shadow_memory: dict[str, Any] | None = None

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
    def in_service_ids(self) -> list[str]:
        return [node.id for node in self.nodes if node.state == IN_SERVICE]

    def count(self, state: str) -> int:
        return sum(1 for node in self.nodes if node.state == state)

    @property
    def live_ids(self) -> list[str]:
        """Listed nodes (launching, in service, draining): the pool's instances it still uses."""
        return [node.id for node in self.nodes]

    def ending(self, ids: list[str] | tuple[str, ...]) -> Pool:
        """The intent to terminate ``ids``: they leave the list and wait in ``terminating``."""
        if not ids:
            return self
        gone = set(ids)
        return replace(
            self,
            nodes=tuple(node for node in self.nodes if node.id not in gone),
            terminating=tuple(dict.fromkeys([*self.terminating, *ids])),
        )

    def ended(self, ids: list[str] | tuple[str, ...] | set[str]) -> Pool:
        """EC2 confirmed ``ids`` are terminating (or gone): nothing is owed for them any more."""
        gone = set(ids)
        return replace(self, terminating=tuple(i for i in self.terminating if i not in gone))

    def node(self, node_id: str) -> Node | None:
        return next((node for node in self.nodes if node.id == node_id), None)

    def to_data(self) -> dict[str, Any]:
        return {
            "nodes": [asdict(node) for node in self.nodes],
            "sequence": self.sequence,
            "pending_tag": list(self.pending_tag),
            "pending_untag": list(self.pending_untag),
            "last_tick": self.last_tick,
            "last_tick_wall": self.last_tick_wall,
            "last_decision": self.last_decision,
            "recent_miss_rates": list(self.recent_miss_rates),
            "pending_plan": self.pending_plan.to_data() if self.pending_plan is not None else None,
            "outbox": list(self.outbox),
            "confirmed": self.confirmed or {},
            "orphans": self.orphans or {},
            "terminating": list(self.terminating),
            "policy_memory": self.policy_memory or {},
            "shadow_memory": self.shadow_memory,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any], version: int) -> Pool:
        return cls(
            nodes=tuple(Node.from_dict(node) for node in data.get("nodes", [])),
            version=version,
            sequence=int(data.get("sequence", 0)),
            pending_tag=tuple(data.get("pending_tag", [])),
            pending_untag=tuple(data.get("pending_untag", [])),
            last_tick=data.get("last_tick"),
            last_tick_wall=data.get("last_tick_wall"),
            last_decision=data.get("last_decision"),
            recent_miss_rates=tuple(data.get("recent_miss_rates", [])),
            pending_plan=Plan.from_data(data["pending_plan"]) if data.get("pending_plan") else None,
            outbox=tuple(data.get("outbox", [])),
            confirmed=data.get("confirmed") or None,
            orphans=data.get("orphans") or None,
            terminating=tuple(data.get("terminating", [])),
            policy_memory=data.get("policy_memory") or None,
            shadow_memory=data.get("shadow_memory") or None,
        )

    def history_until(self, wall_now: datetime) -> datetime:
        """Where SPEC's history window ends: the last tick's T, or the wall clock before any tick."""
        return parse_iso(self.last_tick) if self.last_tick is not None else wall_now

    def clock(self, wall_now: datetime) -> datetime:
        """The pool's clock, for records that routes write.

        Ticks run on their event's time, which a simulation may set far from the wall clock;
        records of routes must sort among the tick records. So: the last tick's T, plus the wall
        time passed since that tick wrote, kept within that minute. Before any tick, the wall clock.
        """
        if self.last_tick is None:
            return wall_now
        tick = parse_iso(self.last_tick)
        elapsed = (wall_now - parse_iso(self.last_tick_wall)).total_seconds() if self.last_tick_wall else 0.0
        return tick + timedelta(seconds=min(max(elapsed, 0.0), 59.999))

    def with_nodes(self, nodes: list[Node] | tuple[Node, ...], **changes: Any) -> Pool:
        return replace(self, nodes=tuple(nodes), **changes)


def describe_nodes(pool: Pool) -> list[dict[str, Any]]:
    """SPEC's ``nodes`` of cache_list: every live node with its index (its position)."""
    return [
        {"id": node.id, "ip": node.ip, "index": index, "state": node.state}
        for index, node in enumerate(pool.nodes)
    ]
