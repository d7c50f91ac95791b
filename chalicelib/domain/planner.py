"""The tick's decision, pure: from what the adapters reported to the plan that carries it out.

``plan_tick`` is SPEC's steps 1-6 with no AWS and no clock of its own: the pool brought up to
date with EC2 and the metrics (:func:`chalicelib.domain.node_life.observe`), the miss rate, the bounds
raised by an open scheduled floor (:mod:`chalicelib.domain.floors`), the policy's decision, the
replacement rule, a shadow policy's would-be decision, and the plan (:func:`make_plan`) the executor
(:mod:`chalicelib.service.executor`) writes before it calls EC2. Routes that resize plan with
:func:`make_plan` too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain import policies, predictive
from chalicelib.domain.clock import iso, tick_time
from chalicelib.domain.config import MAX_NODES
from chalicelib.domain.floors import with_floor
from chalicelib.domain.instances import Instance
from chalicelib.domain.node_life import Observed, Timeouts, observe
from chalicelib.domain.notices import announce
from chalicelib.domain.plan import TICK, Launch, Plan
from chalicelib.domain.policies import Policy
from chalicelib.domain.policy import HOLD, REPLACE, Decision, Observation
from chalicelib.domain.pool import DRAINING, IN_SERVICE, LAUNCHING, Pool
from chalicelib.domain.traffic import PoolTraffic, miss_rate

RECENT_LIMIT = 60  # scale_in_window_minutes is at most 60


@dataclass(frozen=True)
class Readings:
    """What the adapters reported for one tick."""

    instances: Mapping[str, Instance]  # the pool's tagged instances, by id
    traffic: PoolTraffic
    impaired: frozenset[str] = frozenset()  # in-service nodes failing EC2's status checks
    metrics_error: str | None = None  # CloudWatch failed: no data, said in the reason


@dataclass(frozen=True)
class Rules:
    """What the deployment's settings say about planning."""

    pool_name: str
    timeouts: Timeouts
    notify: bool  # a front-end is told: nodes drain before they go


@dataclass(frozen=True)
class TickPlan:
    pool: Pool  # the pool as observed: what the plan is written onto
    plan: Plan


def plan_tick(
    pool: Pool, config: Mapping[str, Any], readings: Readings, policy: Policy, now: datetime, rules: Rules
) -> TickPlan:
    """SPEC's steps 1-6 at the tick's T ``now``: observe, measure, decide, plan."""
    config, raised = with_floor(config, now)  # step 2's bounds, on the tick's clock
    planned = pool.pending_plan.launch_tokens if pool.pending_plan else frozenset()
    observed = observe(
        pool,
        readings.instances,
        readings.traffic,
        now,
        rules.timeouts,
        planned_tokens=planned,
        impaired=readings.impaired,
        notify=rules.notify,
    )
    current = announce(pool, observed.pool, "automatic") if rules.notify else observed.pool
    traffic, left_out = readings.traffic.sound()
    rate, requests = miss_rate(traffic, current.in_service_ids, config["min_get_requests"])
    # A node gone out of band still counts until its replacement is launched: the policy
    # decides on the pool as it was, and the plan launches what is missing.
    observation = Observation(
        pool_size=current.pool_size + len(observed.vanished),
        miss_rate=rate,
        launching=current.count(LAUNCHING),
        draining=current.count(DRAINING),
        recent_miss_rates=pool.recent_miss_rates,
    )
    seen = evidence(current, traffic, now, requests)
    decision, memory = policy(dict(config), observation, seen, pool.policy_memory)
    decision, replacing = replacement(decision, observed, current)
    shadow, shadow_memory = _shadow(config, observation, seen, pool, decision)
    notes = [raised.note] if raised else []
    notes += [readings.metrics_error] if readings.metrics_error else []
    notes += [f"{node} left out of the sums: {why} in its window" for node, why in left_out.items()]
    summary: dict[str, Any] = {
        "time": iso(now),
        "miss_rate": rate,
        **decision.to_dict(),
        "requests": requests,
        "policy": config["policy"],
    }
    summary["reason"] = "; ".join([*notes, summary["reason"]])
    if raised:
        summary["scheduled_floor"] = raised.to_data()
    if shadow:
        summary["shadow"] = shadow
    recent = (*pool.recent_miss_rates, rate) if rate is not None else pool.recent_miss_rates
    plan = make_plan(
        current,
        decision,
        pool_name=rules.pool_name,
        label=now.strftime("%Y%m%dT%H%M"),
        source=TICK,
        time=iso(now),
        summary=summary,
        expired=observed.expired,
        recent_miss_rates=recent[-RECENT_LIMIT:],
        events=observed.events,
        notify=rules.notify,
        replacing=replacing,
        policy_memory=memory,
        shadow_memory=shadow_memory,
    )
    return TickPlan(current, plan)


def _shadow(
    config: dict[str, Any], observation: Observation, seen: predictive.Evidence, pool: Pool, acted: Decision
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The shadow policy's would-be decision for the record, and the memory it keeps (with its
    name: a different shadow policy starts afresh); (None, None) when no shadow is watched."""
    name = policies.shadow_policy_of(config)
    if name is None:
        return None, None
    stored = pool.shadow_memory or {}
    memory = stored.get("memory") if stored.get("policy") == name else None
    decision, kept = policies.shadow_decide(name, config, observation, seen, memory, acted)
    shadow = {"policy": name, "action": decision.action, "target_size": decision.target_size}
    return {**shadow, "reason": decision.reason}, {"policy": name, "memory": kept}


def replacement(decision: Decision, observed: Observed, current: Pool) -> tuple[Decision, list[str]]:
    """SPEC's replacement: nodes gone out of band are launched anew; otherwise a dead or silent
    node is drained (or terminated) and replaced, one at a time, when the tick would hold and
    nothing else is on the move."""
    vanished = observed.vanished
    if vanished and decision.action == HOLD:
        size = decision.target_size
        gone = ", ".join(vanished)
        return Decision(size, size, REPLACE, f"{gone} no longer reported by EC2: replaced by a new node"), []
    if decision.action != HOLD or vanished or not observed.unhealthy:
        return decision, []
    if current.count(LAUNCHING) + current.count(DRAINING):
        return decision, []
    node_id, why = observed.unhealthy[0]
    size = current.pool_size
    return Decision(size, size, REPLACE, f"{node_id} {why}: replaced by a new node"), [node_id]


def evidence(pool: Pool, traffic: PoolTraffic, now: datetime, requests: int) -> predictive.Evidence:
    """What the predictive policy reads: the serving nodes, and the curve of the warm ones.

    Warm nodes have been in service ``WARM_MINUTES``; a node that just joined has an empty ghost
    list and would make every size look too small, so its curve is read only when no node is
    warm. The curve counts only when every node read published all of it.
    """
    serving = pool.in_service_ids
    warm_since = now - timedelta(minutes=predictive.WARM_MINUTES)
    warm = [
        node.id
        for node in pool.nodes
        if node.state == IN_SERVICE and node.since is not None and tick_time(node.since) <= warm_since
    ]
    read = warm or serving
    curves = [traffic.of(node_id).within for node_id in read]
    gets = sum(traffic.of(node_id).gets for node_id in read)
    curve = None
    if read and gets > 0 and all(within is not None for within in curves):
        curve = tuple(
            sum(within[index] for within in curves if within is not None) / gets
            for index in range(len(predictive.FACTORS))
        )
    settled = len(warm) == len(serving) and len(serving) == pool.pool_size and not pool.count(DRAINING)
    warm_hits = sum(traffic.of(node_id).hits for node_id in warm)
    warm_gets = sum(traffic.of(node_id).gets for node_id in warm)
    warm_rate = 1.0 - warm_hits / warm_gets if warm_gets > 0 else None
    cold = len(serving) - len(warm) if warm else 0
    return predictive.Evidence(
        iso(now), len(serving), requests, curve, settled, warm_miss_rate=warm_rate, cold=cold
    )


def launch_token(pool_name: str, label: str, slot: int) -> str:
    """RunInstances' ClientToken for one node of one decision (≤ 64 ASCII characters)."""
    digest = hashlib.sha256(pool_name.encode()).hexdigest()[:10]
    return f"msc-{digest}-{label}-{slot}"


def make_plan(
    pool: Pool,
    decision: Decision,
    *,
    pool_name: str,
    label: str,
    source: str,
    time: str | None,
    summary: dict[str, Any],
    expired: list[str] | None = None,
    recent_miss_rates: tuple[float, ...] = (),
    events: list[str] | None = None,
    notify: bool = False,
    replacing: list[str] | None = None,
    policy_memory: dict[str, Any] | None = None,
    shadow_memory: dict[str, Any] | None = None,
) -> Plan:
    """The work a decision means. Growing takes draining nodes back first (their cache is warm),
    then launches at the end of the list; shrinking takes the list's tail, which drains when a
    front-end is to be told (``notify``) and is terminated otherwise. ``replacing`` nodes drain
    the same way, or without a front-end are terminated before their replacements launch."""
    replacing = list(replacing or [])
    members = [node for node in pool.nodes if node.state != DRAINING and node.id not in replacing]
    draining = [node for node in pool.nodes if node.state == DRAINING]
    size, target = len(members), decision.target_size
    take_back = [node.id for node in draining[: max(0, target - size)]] if not replacing else []
    grown = size + len(take_back)
    doomed = [node.id for node in members[target:]] if target < size else []
    # Live instances (draining ones too) never exceed 8 at any EC2 call. Nodes terminated by
    # this plan are counted out here; the executor launches only into room EC2 confirmed.
    staying = len(pool.nodes) - (0 if notify else len(replacing) + len(doomed))
    launch = [
        Launch(launch_token(pool_name, label, slot), slot)
        for slot in range(grown, min(target, grown + MAX_NODES - staying))
    ]
    return Plan(
        source=source,
        label=label,
        time=time,
        summary=summary,
        notify=notify,
        take_back=tuple(take_back),
        launch=tuple(launch),
        drain=(*replacing, *doomed) if notify else (),
        terminate=(*(expired or []), *([] if notify else doomed)),
        replacing=() if notify else tuple(replacing),
        recent_miss_rates=tuple(recent_miss_rates),
        events=tuple(events or []),
        policy_memory=policy_memory,
        shadow_memory=shadow_memory,
    )
