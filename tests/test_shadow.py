"""Pure: shadow decisions and scheduled floors in the tick's plan (``plan_tick``), on plain data.

A shadow is what a policy would have done at a tick, recorded beside what was done; it decides
with its own memory and changes nothing. A scheduled floor raises the bounds of SPEC's step 2.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from chalicelib.domain import predictive
from chalicelib.domain.clock import iso
from chalicelib.domain.planner import Readings, TickPlan
from chalicelib.domain.policy import HOLD, REPAIR, SCALE_IN, SCALE_OUT
from chalicelib.domain.pool import Pool
from chalicelib.service.executor import Outcome, apply_outcome
from tests.test_planner import NOW, plan, running, serving, traffic

WARM = iso(NOW - timedelta(hours=1))
ENOUGH_HISTORY = (0.5,) * 10


def tick(pool: Pool, miss_rate: float, **config: Any) -> TickPlan:
    return plan(pool, Readings(running(pool), traffic(pool, miss_rate)), **config)


def after(planned: TickPlan) -> Pool:
    """The pool once the plan is applied with nothing for EC2 to do (a hold)."""
    return apply_outcome(planned.pool, planned.plan, Outcome())


def test_with_auto_mode_off_the_configured_policy_is_the_shadow() -> None:
    planned = tick(serving(4), 0.95, auto_mode=False)
    summary = planned.plan.summary
    assert (summary["action"], summary["target_size"]) == (HOLD, 4)
    assert summary["reason"] == "auto_mode is off: observed only"
    assert summary["shadow"] == {
        "policy": "ratio",
        "action": SCALE_OUT,
        "target_size": 8,
        "reason": "miss rate 0.950 above 0.8: grow 4 → 8",
    }
    assert not planned.plan.launch and not planned.plan.drain, "a shadow changes nothing"


def test_shadow_policy_picks_the_shadow_in_manual_mode() -> None:
    planned = tick(serving(4), 0.95, auto_mode=False, shadow_policy="predictive")
    shadow = planned.plan.summary["shadow"]
    assert shadow["policy"] == "predictive" and shadow["action"] == SCALE_OUT
    assert shadow["reason"].startswith("miss rate 0.950; experience predicts")


def test_in_auto_mode_a_shadow_is_recorded_only_when_shadow_policy_is_set() -> None:
    unset = tick(serving(4), 0.95)
    assert "shadow" not in unset.plan.summary and unset.plan.shadow_memory is None
    watched = tick(serving(4), 0.95, shadow_policy="predictive")
    assert watched.plan.summary["action"] == SCALE_OUT and watched.plan.summary["policy"] == "ratio"
    assert watched.plan.summary["shadow"]["policy"] == "predictive"
    assert len(watched.plan.launch) == 4, "the acting policy acts: ratio's 4 → 8"


def test_the_shadow_keeps_its_own_memory_and_leaves_the_acting_policys_alone() -> None:
    acting = {"needs": [3, 3], "seen": [], "spike": 0.15}
    pool = replace(serving(4), policy_memory=acting, recent_miss_rates=ENOUGH_HISTORY)
    planned = tick(pool, 0.5, shadow_policy="predictive")
    assert planned.plan.policy_memory == acting, "ratio acts: the pool's policy memory passes through"
    stored = planned.plan.shadow_memory
    assert stored is not None and stored["policy"] == "predictive"
    assert stored["memory"]["needs"] == [planned_need(planned)]
    kept = after(planned)
    assert kept.policy_memory == acting and kept.shadow_memory == stored
    # The next tick's shadow reads its memory back: its needs go on from there.
    again = tick(replace(kept, last_tick=None), 0.5, shadow_policy="predictive")
    assert again.plan.shadow_memory is not None
    assert len(again.plan.shadow_memory["memory"]["needs"]) == 2


def planned_need(planned: TickPlan) -> int | None:
    reason = planned.plan.summary["shadow"]["reason"]
    return int(reason.split(" at ")[1].split(":")[0])


def test_with_predictive_acting_in_manual_mode_both_memories_stay_apart() -> None:
    pool = serving(4)
    planned = tick(pool, 0.5, auto_mode=False, policy="predictive")
    assert planned.plan.policy_memory is not None and planned.plan.shadow_memory is not None
    # The acting policy, off, remembers a tick without a need; its shadow remembers the need.
    assert planned.plan.policy_memory["needs"] == [None]
    assert planned.plan.shadow_memory["memory"]["needs"] == [planned_need(planned)]


def test_a_shadows_would_be_changes_are_not_remembered_as_changes() -> None:
    """The predictive shadow would grow; the pool did not, so its memory says nothing grew, and
    it keeps saying what it would do."""
    pool = serving(2)
    planned = tick(pool, 0.95, auto_mode=False, policy="predictive")
    assert planned.plan.summary["shadow"]["action"] == SCALE_OUT
    memory = predictive.Memory.from_data(planned.plan.shadow_memory["memory"])
    assert memory.grown is None and memory.shrunk is None and memory.pending is None
    again = tick(after(planned), 0.95, auto_mode=False, policy="predictive")
    assert again.plan.summary["shadow"]["action"] == SCALE_OUT


def test_the_pools_real_changes_are_what_a_shadow_remembers() -> None:
    planned = tick(serving(2), 0.95, shadow_policy="predictive")  # ratio grows 2 → 4
    assert planned.plan.summary["action"] == SCALE_OUT
    memory = predictive.Memory.from_data(planned.plan.shadow_memory["memory"])
    assert memory.grown == iso(NOW)


def test_another_shadow_policy_starts_afresh_and_none_forgets() -> None:
    pool = replace(serving(4), shadow_memory={"policy": "ratio", "memory": {"needs": [1] * 5}})
    planned = tick(pool, 0.5, shadow_policy="predictive")
    assert len(planned.plan.shadow_memory["memory"]["needs"]) == 1
    assert after(tick(pool, 0.5)).shadow_memory is None


def test_a_shadow_sees_the_bounds_and_the_safety_rules() -> None:
    """It decides in the same tick's terms: a shrink waits for the window like the real one would."""
    planned = tick(serving(4), 0.05, auto_mode=False)
    assert planned.plan.summary["shadow"]["action"] == HOLD
    assert "waits: below the minimum at 1 of the 5 ticks" in planned.plan.summary["shadow"]["reason"]
    window = replace(serving(4), recent_miss_rates=(0.05,) * 4)
    shrinking = tick(window, 0.05, auto_mode=False)
    assert (shrinking.plan.summary["shadow"]["action"], shrinking.plan.summary["shadow"]["target_size"]) == (
        SCALE_IN,
        2,
    )
    assert shrinking.plan.summary["action"] == HOLD and not shrinking.plan.drain


# -- scheduled floors ------------------------------------------------------------------------------

EVENING = {"start": "12:00", "duration_minutes": 60, "min_pool_size": 3}  # NOW is 12:00 UTC


def test_an_open_floor_repairs_the_pool_up_to_it_and_is_named() -> None:
    planned = tick(serving(1), 0.5, scheduled_floors=[EVENING])
    summary = planned.plan.summary
    assert (summary["action"], summary["target_size"]) == (REPAIR, 3)
    assert summary["reason"] == (
        "scheduled floor 3 (12:00 UTC for 60 min every day, until 2026-11-26T13:00:00Z) raises "
        "min_pool_size 1 → 3; pool size 1 is below min_pool_size 3"
    )
    assert summary["scheduled_floor"]["ends"] == "2026-11-26T13:00:00Z"
    assert len(planned.plan.launch) == 2


def test_a_floor_applies_in_manual_mode_too() -> None:
    planned = tick(serving(1), 0.5, scheduled_floors=[EVENING], auto_mode=False)
    assert (planned.plan.summary["action"], planned.plan.summary["target_size"]) == (REPAIR, 3)


def test_a_floor_holds_a_shrink_at_it_and_a_closed_one_does_not() -> None:
    pool = replace(serving(4), recent_miss_rates=(0.05,) * 4)
    held = tick(pool, 0.05, scheduled_floors=[EVENING])
    assert (held.plan.summary["action"], held.plan.summary["target_size"]) == (SCALE_IN, 3)
    later = {**EVENING, "start": "11:00"}  # closed at 12:00
    shrunk = tick(pool, 0.05, scheduled_floors=[later])
    assert (shrunk.plan.summary["action"], shrunk.plan.summary["target_size"]) == (SCALE_IN, 2)
    assert "scheduled_floor" not in shrunk.plan.summary and "floor" not in shrunk.plan.summary["reason"]
