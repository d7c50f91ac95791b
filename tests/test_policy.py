"""Pure: SPEC's tick steps 2-5 for the ratio policy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.config import default_config
from chalicelib.domain.policy import HOLD, REPAIR, SCALE_IN, SCALE_OUT, Observation, decide, ratio_target


def config(**changes: Any) -> dict[str, Any]:
    return {**default_config(), **changes}


@pytest.mark.parametrize(
    ("changes", "size", "rate", "target"),
    [
        # grow: ⌈N·expand⌉, at least N+1, at most max_pool_size
        ({}, 1, 0.9, 2),
        ({}, 2, 0.9, 4),
        ({}, 4, 0.9, 8),
        ({}, 5, 0.9, 8),
        ({"expand_ratio": 1.2}, 1, 0.9, 2),  # the seed rounded 1.2 to 1 and never grew
        ({"expand_ratio": 1.5}, 3, 0.9, 5),  # 4.5 rounds up
        ({"expand_ratio": 1.4}, 5, 0.9, 7),  # 5 × 1.4 is 7.000000000000001 in floats
        ({"expand_ratio": 1.01}, 7, 0.9, 8),
        ({"max_pool_size": 3}, 2, 0.9, 3),
        # shrink: ⌊N·shrink⌋, at most N−1, at least min_pool_size
        ({}, 8, 0.1, 4),
        ({"shrink_ratio": 0.9}, 2, 0.1, 1),  # the seed rounded 1.8 to 2 and never shrank
        ({"shrink_ratio": 0.9}, 8, 0.1, 7),
        ({"shrink_ratio": 0.29}, 100, 0.1, 29),  # 100 × 0.29 is 28.999999999999996 in floats
        ({"shrink_ratio": 0.1}, 3, 0.1, 1),
        ({"min_pool_size": 3}, 4, 0.1, 3),
        ({}, 1, 0.1, 1),
        # thresholds are strict: equal is no change
        ({}, 4, 0.8, 4),
        ({}, 4, 0.2, 4),
        ({}, 4, 0.5, 4),
        ({}, 4, None, 4),
    ],
)
def test_ratio_rule(changes: dict[str, Any], size: int, rate: float | None, target: int) -> None:
    assert ratio_target(config(**changes), size, rate) == target


@pytest.mark.parametrize(
    ("changes", "observed", "action", "target", "words"),
    [
        ({"min_pool_size": 2}, Observation(0, None), REPAIR, 2, "below min_pool_size"),
        ({"min_pool_size": 2, "auto_mode": False}, Observation(1, 0.0), REPAIR, 2, "below min_pool_size"),
        ({"max_pool_size": 3}, Observation(8, None), SCALE_IN, 3, "above max_pool_size"),
        ({"max_pool_size": 3, "auto_mode": False}, Observation(5, 0.99), SCALE_IN, 3, "above max_pool_size"),
        ({"auto_mode": False}, Observation(2, 0.99), HOLD, 2, "auto_mode is off"),
        ({}, Observation(2, None), HOLD, 2, "no data"),
        ({}, Observation(2, 0.9), SCALE_OUT, 4, "above 0.8"),
        ({}, Observation(2, 0.9, launching=1), HOLD, 2, "still launching"),
        ({}, Observation(8, 0.9), HOLD, 8, "pool at max_pool_size"),
        ({}, Observation(1, 0.1), HOLD, 1, "pool at min_pool_size"),
        ({}, Observation(4, 0.1, recent_miss_rates=(0.1, 0.1, 0.1, 0.1)), SCALE_IN, 2, "below 0.2"),
        ({}, Observation(4, 0.1, recent_miss_rates=(0.1, 0.1, 0.1)), HOLD, 4, "at 4 of the 5 ticks"),
        ({}, Observation(4, 0.1, recent_miss_rates=(0.1, 0.5, 0.1, 0.1)), HOLD, 4, "at 3 of the 5 ticks"),
        ({}, Observation(4, 0.1, recent_miss_rates=(0.5, 0.1, 0.1, 0.1, 0.1)), SCALE_IN, 2, "shrink 4 → 2"),
        ({}, Observation(4, 0.1, draining=1, recent_miss_rates=(0.1,) * 4), HOLD, 4, "still draining"),
        ({"scale_in_window_minutes": 1}, Observation(4, 0.1), SCALE_IN, 2, "shrink"),
        ({}, Observation(4, 0.5), HOLD, 4, "within [0.2, 0.8]"),
    ],
)
def test_decide(changes: dict[str, Any], observed: Observation, action: str, target: int, words: str) -> None:
    decision = decide(config(**changes), observed)
    assert (decision.action, decision.target_size, decision.previous_size) == (
        action,
        target,
        observed.pool_size,
    )
    assert words in decision.reason


def test_the_test_hook_ignores_auto_mode_and_the_safety_rules_but_not_the_bounds() -> None:
    hurried = Observation(4, 0.1, launching=2)
    assert decide(config(auto_mode=False), hurried, safety=False).target_size == 2
    assert decide(config(), Observation(2, 0.9, launching=1), safety=False).target_size == 4
    assert decide(config(min_pool_size=3), Observation(1, 0.5), safety=False).action == REPAIR


configs = st.builds(
    lambda low, span, high_rate, gap, expand, shrink, window, auto: config(
        min_pool_size=low,
        max_pool_size=min(8, low + span),
        max_miss_rate_threshold=high_rate,
        min_miss_rate_threshold=max(0.0, high_rate - gap),
        expand_ratio=expand,
        shrink_ratio=shrink,
        scale_in_window_minutes=window,
        auto_mode=auto,
    ),
    st.integers(1, 8),
    st.integers(0, 7),
    st.floats(0.01, 1.0),
    st.floats(0.001, 1.0),
    st.floats(1.0001, 10.0),
    st.floats(0.001, 0.999),
    st.integers(1, 60),
    st.booleans(),
)
observations = st.builds(
    Observation,
    pool_size=st.integers(0, 8),
    miss_rate=st.none() | st.floats(0.0, 1.0),
    launching=st.integers(0, 8),
    draining=st.integers(0, 8),
    recent_miss_rates=st.lists(st.floats(0.0, 1.0), max_size=70).map(tuple),
)


@given(configs, observations, st.booleans())
def test_the_target_is_always_within_the_bounds(
    cfg: dict[str, Any], observed: Observation, safety: bool
) -> None:
    target = decide(cfg, observed, safety=safety).target_size
    assert cfg["min_pool_size"] <= target <= cfg["max_pool_size"]


@given(configs, observations)
def test_no_data_never_shrinks_a_pool_within_its_bounds(cfg: dict[str, Any], observed: Observation) -> None:
    observed = Observation(
        observed.pool_size, None, observed.launching, observed.draining, observed.recent_miss_rates
    )
    if observed.pool_size <= cfg["max_pool_size"]:
        assert decide(cfg, observed).target_size >= observed.pool_size


@given(configs, observations)
def test_manual_mode_never_resizes_a_pool_within_its_bounds(
    cfg: dict[str, Any], observed: Observation
) -> None:
    cfg = {**cfg, "auto_mode": False}
    if cfg["min_pool_size"] <= observed.pool_size <= cfg["max_pool_size"]:
        decision = decide(cfg, observed)
        assert decision.target_size == observed.pool_size and decision.action == HOLD


@given(configs, observations)
def test_every_move_is_one_of_specs_actions_with_a_reason(cfg: dict[str, Any], observed: Observation) -> None:
    decision = decide(cfg, observed)
    assert decision.action in (SCALE_OUT, SCALE_IN, REPAIR, HOLD)
    assert decision.reason
    assert (decision.action == HOLD) == (decision.target_size == decision.previous_size)
