"""Step 1 of the tick, pure: bring the pool's view up to date with EC2 and the metrics.

Launching nodes become in service when ready, launches that took too long end, nodes EC2 no
longer reports leave the list. Nothing here calls AWS; the tick carries out what it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from chalicelib.ec2 import Instance
from chalicelib.metrics import PoolTraffic
from chalicelib.pool import DRAINING, IN_SERVICE, LAUNCHING, Node, Pool
from chalicelib.records import iso


@dataclass(frozen=True)
class Observed:
    pool: Pool
    # Human-readable membership events of this tick, for its records.
    events: list[str] = field(default_factory=list)
    # Instances to terminate because their launch timed out.
    expired: list[str] = field(default_factory=list)
    in_service: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


def _age_seconds(since: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()


def _drain_timed_out(node: Node, now: datetime, timeout_seconds: int) -> bool:
    return (
        node.drain_delivered and node.since is not None and _age_seconds(node.since, now) >= timeout_seconds
    )


def observe(
    pool: Pool,
    instances: Mapping[str, Instance],
    traffic: PoolTraffic,
    now: datetime,
    *,
    readiness: str,
    launch_timeout_seconds: int,
    drain_timeout_seconds: int = 300,
) -> Observed:
    """The pool as of tick time ``now``, and what changed to make it so."""
    stamp = iso(now)
    nodes: list[Node] = []
    result = Observed(pool)
    for node in pool.nodes:
        instance = instances.get(node.id)
        # Routes do not start clocks; the tick does. A drain's clock starts at delivery.
        undelivered_drain = node.state == DRAINING and not node.drain_delivered
        if node.since is None and not undelivered_drain:
            node = replace(node, since=stamp)
        if instance is None and node.state != LAUNCHING:
            result.gone.append(node.id)
            result.events.append(f"{node.id} ({node.state}) is no longer reported by EC2: removed")
            continue
        if node.state == LAUNCHING:
            ready = (
                instance is not None
                and instance.state == "running"
                and (readiness == "running" or traffic.of(node.id).last_published is not None)
            )
            if ready:
                assert instance is not None
                node = replace(node, state=IN_SERVICE, since=stamp, ip=instance.ip or node.ip)
                result.in_service.append(node.id)
                result.events.append(f"{node.id} is in service")
            elif _age_seconds(node.since or stamp, now) >= launch_timeout_seconds:
                result.expired.append(node.id)
                seen = "never appeared in EC2" if instance is None else f"still {instance.state}"
                result.events.append(
                    f"{node.id} launch timed out after {launch_timeout_seconds} s ({seen}): terminated"
                )
                continue
        elif node.state == DRAINING and _drain_timed_out(node, now, drain_timeout_seconds):
            result.expired.append(node.id)
            result.events.append(
                f"{node.id} not confirmed within {drain_timeout_seconds} s of its decrease: terminated"
            )
            continue
        if instance is not None and instance.ip and instance.ip != node.ip:
            node = replace(node, ip=instance.ip)
        nodes.append(node)
    return replace(result, pool=pool.with_nodes(nodes))
