"""One tick of the scheduled function: load, observe, decide, apply, record.

Everything works off the tick's clock T (the event's time truncated to the minute), never the
wall clock. A retried event (same T) answers the decision already made; a tick that died after
writing its plan is finished by its retry or by the next tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from chalicelib import clock, predictive, scaling, wiring
from chalicelib.clock import WallClock, iso, tick_time
from chalicelib.ec2 import Ec2Nodes
from chalicelib.errors import DependencyError, RecordExistsError, retry_on_conflict
from chalicelib.instances import Instance
from chalicelib.lifecycle import Observed, Timeouts, observe
from chalicelib.membership import settle_tags
from chalicelib.metrics import PoolMetrics
from chalicelib.notifier import Deadline, Notifier, announce
from chalicelib.plan import Plan
from chalicelib.policies import Policy, policy_named
from chalicelib.policy import HOLD, REPLACE, Decision, Observation
from chalicelib.pool import DRAINING, IN_SERVICE, LAUNCHING, Pool
from chalicelib.records import tick_record
from chalicelib.scaling import (
    RECENT_LIMIT,
    claim,
    held_by_another,
    make_plan,
    needs_ec2,
)
from chalicelib.settings import Settings
from chalicelib.store import StateStore
from chalicelib.traffic import PoolTraffic, miss_rate

# How long a tick invoked without a Lambda context (the local scheduler, the CLI) may deliver.
NO_CONTEXT_SECONDS = 60.0


@dataclass(frozen=True)
class TickDeps:
    settings: Settings
    store: StateStore
    ec2: Ec2Nodes
    metrics: PoolMetrics
    notifier: Notifier | None = None
    # Stamps ``Pool.last_tick_wall`` and reads writers' leases; no scaling rule reads it.
    wall_clock: WallClock = clock.wall_clock
    # Decides instead of the config's ``policy`` (the benchmark's baselines); None in service.
    policy: Policy | None = None
    # When this invocation must stop starting notification attempts.
    deadline: Deadline = field(default_factory=lambda: Deadline(None))

    def finish(
        self, pool: Pool, by_token: dict[str, Instance], *, at: datetime, source_ip: str | None = None
    ) -> tuple[Pool, dict[str, Any]]:
        """Carry out ``pool.pending_plan`` with these adapters (see ``scaling.finish``)."""
        return scaling.finish(
            self.store,
            self.ec2,
            self.settings,
            pool,
            by_token,
            at=at,
            source_ip=source_ip,
            notifier=self.notifier,
            deadline=self.deadline,
        )

    def apply_in_one_write(
        self, pool: Pool, plan: Plan, *, at: datetime, source_ip: str | None = None, **changes: Any
    ) -> tuple[Pool, dict[str, Any]]:
        """A plan that needs no EC2 call, written and told (see ``scaling.apply_in_one_write``)."""
        return scaling.apply_in_one_write(
            self.store,
            pool,
            plan,
            at=at,
            source_ip=source_ip,
            notifier=self.notifier,
            deadline=self.deadline,
            **changes,
        )

    @classmethod
    def from_settings(cls, settings: Settings, deadline: Deadline | None = None) -> TickDeps:
        built = wiring.adapters(settings)
        return cls(
            settings=settings,
            store=built.store,
            ec2=built.ec2,
            metrics=built.metrics,
            notifier=built.notifier,
            deadline=deadline or Deadline(None),
        )


def scheduled_tick(event_time: str, context: Any = None) -> dict[str, Any]:
    """The scheduled function's body: one tick at the event's time, within the invocation's time."""
    deadline = Deadline.of_invocation(context, cap_seconds=None if context else NO_CONTEXT_SECONDS)
    return run_tick(TickDeps.from_settings(Settings.from_env(), deadline), event_time)


def run_tick(deps: TickDeps, at: str | datetime, *, dry_run: bool = False) -> dict[str, Any]:
    """One tick at ``at``; answers a JSON-serialisable summary of the decision."""
    now = tick_time(at)
    try:
        # A route that wrote the pool meanwhile makes the tick observe again.
        busy = f"tick {iso(now)}: the pool kept changing"
        return retry_on_conflict(lambda: _tick(deps, now, dry_run), busy=busy)
    except RecordExistsError:
        pool = deps.store.load_pool()
        return {**(pool.last_decision or {}), "replayed": True}


def _tick(deps: TickDeps, now: datetime, dry_run: bool) -> dict[str, Any]:
    stamp, settings = iso(now), deps.settings
    config, _, pool = deps.store.load_state()
    if pool.last_tick == stamp and pool.last_decision is not None:
        return {**pool.last_decision, "replayed": True}
    if pool.last_tick is not None and stamp < pool.last_tick:
        return {
            "time": stamp,
            "action": None,
            "reason": f"skipped: older than the last tick {pool.last_tick}",
        }
    plan_time = pool.pending_plan.time if pool.pending_plan else None
    # Ticks never overlap (reserved concurrency 1): a tick's plan found here is a dead tick's.
    route_plan = pool.pending_plan is not None and not pool.pending_plan.by_tick
    if route_plan and held_by_another(pool, deps.wall_clock()) and not dry_run:
        return _hold_for_another_writer(deps, pool, now)
    if not dry_run:
        pool = settle_tags(deps.store, deps.ec2, pool, strict=False)
    instances = {instance.id: instance for instance in deps.ec2.list_pool_instances()}
    if pool.pending_plan is not None and not dry_run:
        # The writer of this plan died (its lease ran out, or this is the retry of its own event).
        pool, result = deps.finish(pool, by_launch_token(instances), at=now)
        if plan_time == stamp:
            return {**result, "replayed": True}

    wants_curve = deps.policy is None and config["policy"] == predictive.POLICY
    read, metrics_error = _read_metrics(deps, pool, now, curve=wants_curve)
    timeouts = Timeouts(
        readiness=settings.node_readiness,
        launch_seconds=settings.launch_timeout_seconds,
        drain_seconds=settings.drain_timeout_seconds,
        silent_seconds=settings.node_silent_seconds,
    )
    planned = pool.pending_plan.launch_tokens if pool.pending_plan else frozenset()
    impaired = _impaired(deps, pool, instances)
    observed = observe(
        pool,
        instances,
        read,
        now,
        timeouts,
        planned_tokens=planned,
        impaired=impaired,
        notify=deps.notifier is not None,
    )
    current = observed.pool
    if deps.notifier is not None:
        current = announce(pool, current, "automatic")
    traffic, left_out = read.sound()
    rate, requests = miss_rate(traffic, current.in_service_ids, config["min_get_requests"])
    # A node gone out of band still counts until its replacement is launched: the policy
    # decides on the pool as it was, and the plan launches what is missing.
    vanished = observed.vanished
    observation = Observation(
        pool_size=current.pool_size + len(vanished),
        miss_rate=rate,
        launching=current.count(LAUNCHING),
        draining=current.count(DRAINING),
        recent_miss_rates=pool.recent_miss_rates,
    )
    policy = deps.policy or policy_named(config["policy"])
    seen = evidence(current, traffic, now, requests)
    decision, memory = policy(config, observation, seen, pool.policy_memory)
    decision, replacing = _replacement(decision, observed, current)
    summary: dict[str, Any] = {
        "time": stamp,
        "miss_rate": rate,
        **decision.to_dict(),
        "requests": requests,
        "policy": config["policy"],
    }
    notes = [metrics_error] if metrics_error else []
    notes += [f"{node} left out of the sums: {why} in its window" for node, why in left_out.items()]
    if notes:
        summary["reason"] = "; ".join([*notes, summary["reason"]])
    recent = (*pool.recent_miss_rates, rate) if rate is not None else pool.recent_miss_rates
    plan = make_plan(
        current,
        decision,
        pool_name=settings.pool_name,
        label=now.strftime("%Y%m%dT%H%M"),
        source="tick",
        time=stamp,
        summary=summary,
        expired=observed.expired,
        recent_miss_rates=recent[-RECENT_LIMIT:],
        events=observed.events,
        notify=deps.notifier is not None,
        replacing=replacing,
        policy_memory=memory,
    )
    if dry_run:
        return {
            **summary,
            "dry_run": True,
            "would_launch": len(plan.launch),
            "would_terminate": [*plan.terminate, *plan.replacing, *current.terminating],
        }
    wall = deps.wall_clock()
    if needs_ec2(plan, current):
        ahead = deps.store.save_pool(replace(claim(current, plan, wall), last_tick_wall=wall.isoformat()))
        return deps.finish(ahead, by_launch_token(instances), at=now)[1]
    # Nothing for EC2 to do: the observed pool, its changes and the tick's record, in one write.
    return deps.apply_in_one_write(current, plan, at=now, last_tick_wall=wall.isoformat())[1]


def _replacement(decision: Decision, observed: Observed, current: Pool) -> tuple[Decision, list[str]]:
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


def _hold_for_another_writer(deps: TickDeps, pool: Pool, now: datetime) -> dict[str, Any]:
    """A route is resizing right now: leave the pool to it, and record that this tick held."""
    stamp = iso(now)
    source = pool.pending_plan.source if pool.pending_plan else None
    summary = {
        "time": stamp,
        "miss_rate": None,
        "previous_size": pool.pool_size,
        "target_size": pool.pool_size,
        "action": HOLD,
        "reason": f"another writer holds the pool ({source} in progress)",
        "requests": 0,
        "policy": None,
    }
    done = replace(pool, last_tick=stamp, last_tick_wall=deps.wall_clock().isoformat(), last_decision=summary)
    deps.store.save_pool(done, tick_record(now, {**summary, "events": []}))
    return summary


def by_launch_token(instances: dict[str, Instance]) -> dict[str, Instance]:
    return {instance.launch_token: instance for instance in instances.values() if instance.launch_token}


def _impaired(deps: TickDeps, pool: Pool, instances: dict[str, Instance]) -> frozenset[str]:
    """In-service nodes failing EC2's status checks; unknown (none) when EC2 does not answer."""
    serving = [node_id for node_id in pool.in_service_ids if node_id in instances]
    try:
        return frozenset(deps.ec2.impaired(serving))
    except DependencyError:
        return frozenset()


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


def _read_metrics(
    deps: TickDeps, pool: Pool, now: datetime, *, curve: bool = False
) -> tuple[PoolTraffic, str | None]:
    """The nodes' traffic; a CloudWatch failure is no data (it never shrinks the pool)."""
    watched = [node.id for node in pool.nodes if node.state in (LAUNCHING, IN_SERVICE)]
    settings = deps.settings
    try:
        window, lookback = settings.metrics_window_seconds, settings.node_silent_seconds
        return deps.metrics.read(watched, now, window, lookback, curve=curve), None
    except DependencyError as exc:
        return PoolTraffic(), f"no data: {exc}"
