"""One tick of the scheduled function: load, observe, decide, apply, record.

Everything works off the tick's clock T (the event's time truncated to the minute), never the
wall clock. A retried event (same T) answers the decision already made; a tick that died after
writing its plan is finished by its retry or by the next tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from chalicelib.adapters.cloudwatch import PoolMetrics
from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.ec2 import Ec2Nodes
from chalicelib.adapters.frontend import Deadline, Notifier
from chalicelib.domain import clock, predictive
from chalicelib.domain.clock import WallClock, iso, tick_time
from chalicelib.domain.errors import DependencyError, RecordExistsError, retry_on_conflict
from chalicelib.domain.instances import Instance
from chalicelib.domain.node_life import Timeouts
from chalicelib.domain.plan import Plan
from chalicelib.domain.planner import Readings, Rules, TickPlan, plan_tick
from chalicelib.domain.policies import Policy, policy_named, shadow_policy_of
from chalicelib.domain.policy import HOLD
from chalicelib.domain.pool import DRAINING, IN_SERVICE, LAUNCHING, Pool
from chalicelib.domain.records import tick_record
from chalicelib.domain.settings import Settings
from chalicelib.domain.traffic import PoolTraffic
from chalicelib.service import executor, wiring
from chalicelib.service.executor import claim, held_by_another, needs_ec2, settle_tags

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
        """Carry out ``pool.pending_plan`` with these adapters (see ``executor.finish``)."""
        return executor.finish(
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
        """A plan that needs no EC2 call, written and told (see ``executor.apply_in_one_write``)."""
        return executor.apply_in_one_write(
            self.store,
            pool,
            plan,
            at=at,
            source_ip=source_ip,
            notifier=self.notifier,
            deadline=self.deadline,
            **changes,
        )

    def rules(self) -> Rules:
        settings = self.settings
        timeouts = Timeouts(
            readiness=settings.node_readiness,
            launch_seconds=settings.launch_timeout_seconds,
            drain_seconds=settings.drain_timeout_seconds,
            silent_seconds=settings.node_silent_seconds,
        )
        return Rules(settings.pool_name, timeouts, notify=self.notifier is not None)

    def policy_for(self, config: dict[str, Any]) -> Policy:
        """The injected policy (the benchmark's baselines), or the one the config names."""
        return self.policy or policy_named(config["policy"])

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
    """One tick at ``at``; answers a JSON-serialisable summary of the decision, with the tick's
    ``figures`` (what the pool holds after it, the limits it ran with) that the tick publishes."""
    now = tick_time(at)
    try:
        # A route that wrote the pool meanwhile makes the tick observe again.
        busy = f"tick {iso(now)}: the pool kept changing"
        return retry_on_conflict(lambda: _tick(deps, now, dry_run), busy=busy)
    except RecordExistsError:
        config, _, pool = deps.store.load_state()
        return {**(pool.last_decision or {}), "replayed": True, "figures": figures(pool, config)}


def figures(pool: Pool, config: dict[str, Any]) -> dict[str, Any]:
    """The pool after a tick and the limits it ran with: alarms compare what the tick publishes,
    never a copy of the config that the manager-app may have changed since."""
    return {
        "in_service": pool.count(IN_SERVICE),
        "launching": pool.count(LAUNCHING),
        "draining": pool.count(DRAINING),
        "notices_queued": len(pool.outbox),
        "max_pool_size": config["max_pool_size"],
        "max_miss_rate_threshold": config["max_miss_rate_threshold"],
    }


def _tick(deps: TickDeps, now: datetime, dry_run: bool) -> dict[str, Any]:
    """Load, then decide and act (a dry run only decides); answer with the tick's figures."""
    config, _, pool = deps.store.load_state()
    answered = _answered_already(pool, iso(now))
    if answered is not None:
        return {**answered, "figures": figures(pool, config)}
    if dry_run:
        return _dry_run(deps, pool, config, now)
    after, summary = _decide_and_act(deps, config, pool, now)
    return {**summary, "figures": figures(after, config)}


def _decide_and_act(
    deps: TickDeps, config: dict[str, Any], pool: Pool, now: datetime
) -> tuple[Pool, dict[str, Any]]:
    """Finish a dead writer's plan → read the adapters → plan → write the plan → act."""
    # Ticks never overlap (reserved concurrency 1): a tick's plan found here is a dead tick's.
    by_a_route = pool.pending_plan is not None and not pool.pending_plan.by_tick
    if by_a_route and held_by_another(pool, deps.wall_clock()):
        return _hold_for_another_writer(deps, pool, now)
    pool = settle_tags(deps.store, deps.ec2, pool, strict=False)
    instances = {instance.id: instance for instance in deps.ec2.list_pool_instances()}
    by_token = by_launch_token(instances)
    if pool.pending_plan is not None:
        # The writer of this plan died (its lease ran out, or this is the retry of its own event).
        plan_time = pool.pending_plan.time
        pool, result = deps.finish(pool, by_token, at=now)
        if plan_time == iso(now):
            return pool, {**result, "replayed": True}
    return _execute(deps, _plan(deps, pool, config, instances, now), by_token, now)


def _plan(
    deps: TickDeps, pool: Pool, config: dict[str, Any], instances: dict[str, Instance], now: datetime
) -> TickPlan:
    """Read what the adapters report now, and plan the tick on it."""
    readings = _read(deps, pool, config, instances, now)
    return plan_tick(pool, config, readings, deps.policy_for(config), now, deps.rules())


def _execute(
    deps: TickDeps, planned: TickPlan, by_token: dict[str, Instance], now: datetime
) -> tuple[Pool, dict[str, Any]]:
    """Write the plan, then act on EC2 and record the outcome; a plan with nothing for EC2 to do
    is written with its outcome and the tick's record in one write."""
    wall = deps.wall_clock()
    current, plan = planned.pool, planned.plan
    if needs_ec2(plan, current):
        ahead = deps.store.save_pool(replace(claim(current, plan, wall), last_tick_wall=wall.isoformat()))
        return deps.finish(ahead, by_token, at=now)
    return deps.apply_in_one_write(current, plan, at=now, last_tick_wall=wall.isoformat())


def _answered_already(pool: Pool, stamp: str) -> dict[str, Any] | None:
    """A retried event answers the decision made; an event older than the last tick is skipped."""
    if pool.last_tick == stamp and pool.last_decision is not None:
        return {**pool.last_decision, "replayed": True}
    if pool.last_tick is not None and stamp < pool.last_tick:
        return {
            "time": stamp,
            "action": None,
            "reason": f"skipped: older than the last tick {pool.last_tick}",
        }
    return None


def _dry_run(deps: TickDeps, pool: Pool, config: dict[str, Any], now: datetime) -> dict[str, Any]:
    """What the tick would decide now, with the plan that carries it out; nothing is written or
    acted on (a dead writer's plan is left for the next real tick)."""
    instances = {instance.id: instance for instance in deps.ec2.list_pool_instances()}
    planned = _plan(deps, pool, config, instances, now)
    plan = planned.plan
    return {
        **plan.summary,
        "dry_run": True,
        "would_launch": len(plan.launch),
        "would_terminate": [*plan.terminate, *plan.replacing, *planned.pool.terminating],
        "plan": plan.to_data(),
    }


def _hold_for_another_writer(deps: TickDeps, pool: Pool, now: datetime) -> tuple[Pool, dict[str, Any]]:
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
    return deps.store.save_pool(done, tick_record(now, {**summary, "events": []})), summary


def by_launch_token(instances: dict[str, Instance]) -> dict[str, Instance]:
    return {instance.launch_token: instance for instance in instances.values() if instance.launch_token}


def _read(
    deps: TickDeps, pool: Pool, config: dict[str, Any], instances: dict[str, Instance], now: datetime
) -> Readings:
    """What the adapters report for this tick. A CloudWatch failure is no data (it never shrinks
    the pool); EC2 not answering its status checks is no impaired node."""
    watched = [node.id for node in pool.nodes if node.state in (LAUNCHING, IN_SERVICE)]
    # HitsWithin only for the predictive policy: the one that acts, or the one in the shadow.
    acting = config["policy"] if deps.policy is None else None
    curve = predictive.POLICY in (acting, shadow_policy_of(config))
    settings = deps.settings
    traffic, error = PoolTraffic(), None
    try:
        window, lookback = settings.metrics_window_seconds, settings.node_silent_seconds
        traffic = deps.metrics.read(watched, now, window, lookback, curve=curve)
    except DependencyError as exc:
        error = f"no data: {exc}"
    serving = [node_id for node_id in pool.in_service_ids if node_id in instances]
    try:
        impaired = frozenset(deps.ec2.impaired(serving))
    except DependencyError:
        impaired = frozenset()
    return Readings(instances, traffic, impaired, error)
