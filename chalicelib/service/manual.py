"""Resizes asked for through the API: ``resize`` (manual mode) and ``set_test_miss_rate``.

They go through the same plan and EC2 path as the tick. Routes do not start clocks: nodes they
launch get their launch age stamped by the next tick.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from chalicelib.domain.clock import iso
from chalicelib.domain.config import MAX_NODES, Field, parse_patch
from chalicelib.domain.errors import PoolConflictError, ValidationError, retry_on_conflict
from chalicelib.domain.planner import make_plan
from chalicelib.domain.policy import HOLD, SCALE_IN, SCALE_OUT, Decision, Observation, decide
from chalicelib.domain.pool import Pool
from chalicelib.service.executor import claim, needs_ec2, plan_acts, refuse_if_held, settle_tags
from chalicelib.service.tick import TickDeps, by_launch_token

Decide = Callable[[Mapping[str, Any], Pool], Decision]
Clock = Callable[[Pool], datetime]


TEST_MISS_RATE = {"test_miss_rate": Field("number", None, lambda x: 0 <= x <= 1, "in [0, 1]")}
RESIZE = {"target_size": Field("integer", None, lambda x: 1 <= x <= MAX_NODES, f"1..{MAX_NODES}")}


def parse_test_miss_rate(fields: Mapping[str, Any], *, from_form: bool) -> float:
    parsed = parse_patch(
        fields, from_form=from_form, fields=TEST_MISS_RATE, aliases={}, required=("test_miss_rate",)
    )
    return float(parsed["test_miss_rate"])


def parse_target_size(fields: Mapping[str, Any], *, from_form: bool) -> int:
    parsed = parse_patch(fields, from_form=from_form, fields=RESIZE, aliases={}, required=("target_size",))
    return int(parsed["target_size"])


def set_test_miss_rate(deps: TickDeps, miss_rate: float, *, clock: Clock, source_ip: str) -> dict[str, Any]:
    """Run the ratio rule now with ``miss_rate``, ignoring auto_mode and the safety rules; apply it."""

    def rule(config: Mapping[str, Any], pool: Pool) -> Decision:
        observed = Observation(pool_size=pool.pool_size, miss_rate=float(miss_rate))
        return decide(config, observed, safety=False)

    return _resize(
        deps, "set_test_miss_rate", rule, clock=clock, source_ip=source_ip, miss_rate=float(miss_rate)
    )


def resize(deps: TickDeps, target_size: int, *, clock: Clock, source_ip: str) -> dict[str, Any]:
    """Resize to ``target_size`` by hand; only while auto_mode is off."""

    def rule(config: Mapping[str, Any], pool: Pool) -> Decision:
        if config["auto_mode"]:
            raise PoolConflictError("auto_mode is on: set it to false before resizing by hand")
        low, high = config["min_pool_size"], config["max_pool_size"]
        if not low <= target_size <= high:
            raise ValidationError(
                f"target_size: must be within [{low}, {high}] (min_pool_size..max_pool_size)"
            )
        size = pool.pool_size
        action = SCALE_OUT if target_size > size else SCALE_IN if target_size < size else HOLD
        return Decision(size, target_size, action, f"manual resize {size} → {target_size}")

    return _resize(deps, "resize", rule, clock=clock, source_ip=source_ip, miss_rate=None)


def _resize(
    deps: TickDeps, source: str, rule: Decide, *, clock: Clock, source_ip: str, miss_rate: float | None
) -> dict[str, Any]:
    def attempt() -> dict[str, Any]:
        config, _, pool = deps.store.load_state()
        pool = settle_tags(deps.store, deps.ec2, pool, strict=False)
        now = clock(pool)
        refuse_if_held(pool, deps.wall_clock())
        if pool.pending_plan is not None:
            by_token = by_launch_token({i.id: i for i in deps.ec2.list_pool_instances()})
            pool, _ = deps.finish(pool, by_token, at=now, source_ip=source_ip)
        decision = rule(config, pool)
        summary = {"time": iso(now), "miss_rate": miss_rate, **decision.to_dict()}
        plan = make_plan(
            pool,
            decision,
            pool_name=deps.settings.pool_name,
            label=f"v{pool.version}",
            source=source,
            time=None,
            summary=summary,
            recent_miss_rates=pool.recent_miss_rates,
            notify=deps.notifier is not None,
        )
        if not plan_acts(plan, pool):
            return summary
        if not needs_ec2(plan, pool):
            return deps.apply_in_one_write(pool, plan, at=now, source_ip=source_ip)[1]
        ahead = deps.store.save_pool(claim(pool, plan, deps.wall_clock()))
        return deps.finish(ahead, {}, at=now, source_ip=source_ip)[1]

    return retry_on_conflict(attempt)
