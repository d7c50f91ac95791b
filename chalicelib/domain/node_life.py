"""Step 1 of the tick, pure: bring the pool's view up to date with EC2 and the metrics.

Launching nodes become in service when ready; launches and drains that took too long end;
without a front-end to tell, drains still waiting for their decrease end at once; nodes EC2 no
longer reports leave the list (in-service ones to be replaced); tagged instances nobody listed
(a crash between RunInstances and the state write that no plan accounts for) are terminated at
the second tick that sees them; dead or silent nodes are named for replacement. Nothing here
calls AWS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.clock import iso, parse_iso, seconds_between
from chalicelib.domain.instances import Instance
from chalicelib.domain.pool import DRAINING, IN_SERVICE, LAUNCHING, Node, Pool
from chalicelib.domain.traffic import PoolTraffic

DEAD_STATES = ("stopping", "stopped", "shutting-down", "terminated")


@dataclass(frozen=True)
class Timeouts:
    readiness: str = "metrics"
    launch_seconds: int = 600
    drain_seconds: int = 300
    silent_seconds: int = 300

    @classmethod
    def of(cls, settings: Any) -> Timeouts:
        """The deployment's timeouts (``chalicelib.domain.settings.Settings``)."""
        return cls(
            readiness=settings.node_readiness,
            launch_seconds=settings.launch_timeout_seconds,
            drain_seconds=settings.drain_timeout_seconds,
            silent_seconds=settings.node_silent_seconds,
        )


def deadline(node: Node, timeouts: Timeouts) -> str | None:
    """When the first tick at or after it ends ``node`` unless it moves on first: a launch not
    in service by then, a drain not confirmed by then. None for a node in service, or whose clock
    has not started (a route's node before the next tick, a drain whose decrease is undelivered)."""
    if node.since is None:
        return None
    if node.state == LAUNCHING:
        seconds = timeouts.launch_seconds
    elif node.state == DRAINING and node.drain_delivered:
        seconds = timeouts.drain_seconds
    else:
        return None
    return iso(parse_iso(node.since) + timedelta(seconds=seconds))


@dataclass(frozen=True)
class Observed:
    pool: Pool
    # Human-readable membership events of this tick, for its records.
    events: list[str] = field(default_factory=list)
    # Instances to terminate now: launch or drain timed out, orphans past their grace.
    expired: list[str] = field(default_factory=list)
    # In-service nodes that should be replaced, with why, worst first.
    unhealthy: list[tuple[str, str]] = field(default_factory=list)
    # In-service nodes EC2 no longer reports (terminated out of band): gone, to be replaced.
    vanished: list[str] = field(default_factory=list)


def _drain_timed_out(node: Node, now: datetime, timeout_seconds: int) -> bool:
    return (
        node.drain_delivered
        and node.since is not None
        and seconds_between(node.since, now) >= timeout_seconds
    )


def observe(
    pool: Pool,
    instances: Mapping[str, Instance],
    traffic: PoolTraffic,
    now: datetime,
    timeouts: Timeouts,
    *,
    planned_tokens: frozenset[str] = frozenset(),
    impaired: frozenset[str] = frozenset(),
    notify: bool = True,
) -> Observed:
    """The pool as of tick time ``now``, and what changed to make it so.

    ``notify`` False: no front-end is configured (any more), so nobody is left to tell what is
    queued, and drains that wait for their decrease end at once (SPEC: without
    ``FRONTEND_NOTIFY_URL`` nodes are terminated at once).
    """
    stamp = iso(now)
    result = Observed(pool)
    nodes = [
        node
        for node in (_node(n, instances, traffic, now, stamp, timeouts, result) for n in pool.nodes)
        if node
    ]
    if not notify:
        nodes = _end_stranded_drains(nodes, result)
        if pool.outbox:
            result.events.append(
                f"FRONTEND_NOTIFY_URL is unset: {len(pool.outbox)} queued notification(s) dropped"
            )
    orphans = _orphans(pool, instances, now, stamp, planned_tokens, result)
    _unhealthy(nodes, instances, traffic, now, timeouts, impaired, result)
    observed = replace(pool.with_nodes(nodes), orphans=orphans or None)
    return replace(result, pool=observed if notify else replace(observed, outbox=()))


def _end_stranded_drains(nodes: list[Node], result: Observed) -> list[Node]:
    kept = []
    for node in nodes:
        if node.state == DRAINING and not node.drain_delivered:
            result.expired.append(node.id)
            result.events.append(
                f"{node.id} was draining, its decrease never delivered, and FRONTEND_NOTIFY_URL "
                "is unset: terminated at once"
            )
        else:
            kept.append(node)
    return kept


def _node(
    node: Node,
    instances: Mapping[str, Instance],
    traffic: PoolTraffic,
    now: datetime,
    stamp: str,
    timeouts: Timeouts,
    result: Observed,
) -> Node | None:
    instance = instances.get(node.id)
    # Routes do not start clocks; the tick does. A drain's clock starts when its decrease is delivered.
    if node.since is None and not (node.state == DRAINING and not node.drain_delivered):
        node = replace(node, since=stamp)
    if instance is None and node.state != LAUNCHING:
        if node.state == IN_SERVICE:
            result.vanished.append(node.id)
            result.events.append(f"{node.id} is no longer reported by EC2: removed, to be replaced")
        else:
            result.events.append(f"{node.id} ({node.state}) is no longer reported by EC2: removed")
        return None
    if node.state == LAUNCHING:
        ready = (
            instance is not None
            and instance.state == "running"
            and (timeouts.readiness == "running" or traffic.of(node.id).last_published is not None)
        )
        if ready:
            assert instance is not None
            result.events.append(f"{node.id} is in service")
            return replace(node, state=IN_SERVICE, since=stamp, ip=instance.ip or node.ip)
        if seconds_between(node.since or stamp, now) >= timeouts.launch_seconds:
            result.expired.append(node.id)
            seen = "never appeared in EC2" if instance is None else f"still {instance.state}"
            result.events.append(
                f"{node.id} launch timed out after {timeouts.launch_seconds} s ({seen}): terminated"
            )
            return None
    elif node.state == DRAINING and _drain_timed_out(node, now, timeouts.drain_seconds):
        result.expired.append(node.id)
        result.events.append(
            f"{node.id} not confirmed within {timeouts.drain_seconds} s of its decrease: terminated"
        )
        return None
    if instance is not None and instance.ip and instance.ip != node.ip:
        node = replace(node, ip=instance.ip)
    return node


def _orphans(
    pool: Pool,
    instances: Mapping[str, Instance],
    now: datetime,
    stamp: str,
    planned_tokens: frozenset[str],
    result: Observed,
) -> dict[str, str]:
    """Tagged instances nobody accounts for: first seen now, or terminated when seen before."""
    accounted = {node.id for node in pool.nodes} | set(pool.pending_untag) | set(pool.pending_tag)
    accounted |= set(pool.terminating)
    seen_before = pool.orphans or {}
    orphans: dict[str, str] = {}
    for instance in instances.values():
        if instance.id in accounted or (instance.launch_token and instance.launch_token in planned_tokens):
            continue
        first_seen = seen_before.get(instance.id)
        if first_seen is not None and first_seen < stamp:
            result.expired.append(instance.id)
            result.events.append(f"{instance.id} is tagged for the pool but in no list or plan: terminated")
        else:
            orphans[instance.id] = first_seen or stamp
    return orphans


def _unhealthy(
    nodes: list[Node],
    instances: Mapping[str, Instance],
    traffic: PoolTraffic,
    now: datetime,
    timeouts: Timeouts,
    impaired: frozenset[str],
    result: Observed,
) -> None:
    serving = [node for node in nodes if node.state == IN_SERVICE]
    for node in serving:
        instance = instances.get(node.id)
        if instance is not None and instance.state in DEAD_STATES:
            result.unhealthy.append((node.id, f"EC2 reports it {instance.state}"))
        elif node.id in impaired:
            result.unhealthy.append((node.id, "EC2 reports it impaired"))
    # Silence counts only against peers that did publish: a pool-wide silence is a metrics
    # outage, not dead nodes.
    publishing = [node for node in serving if traffic.of(node.id).last_published is not None]
    if not publishing:
        return
    for node in serving:
        old_enough = node.since is not None and seconds_between(node.since, now) >= timeouts.silent_seconds
        if (
            old_enough
            and traffic.of(node.id).last_published is None
            and node.id not in dict(result.unhealthy)
        ):
            result.unhealthy.append(
                (node.id, f"published nothing for {timeouts.silent_seconds} s while its peers did")
            )
