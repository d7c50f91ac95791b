"""The scaling rule: SPEC's tick steps 2-5 for the ``ratio`` policy, as pure arithmetic.

Dataclasses in, a :class:`Decision` out: no boto3, no environment, no clock. Sizes count
launching and in-service nodes; draining nodes are on their way out and do not count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

SCALE_OUT = "scale_out"
SCALE_IN = "scale_in"
REPAIR = "repair"
REPLACE = "replace"
HOLD = "hold"


@dataclass(frozen=True)
class Observation:
    """What one tick knows when it decides."""

    pool_size: int
    miss_rate: float | None
    launching: int = 0
    draining: int = 0
    # Miss rates of the earlier ticks that had data since the last resize, oldest first.
    recent_miss_rates: Sequence[float] = ()


@dataclass(frozen=True)
class Decision:
    previous_size: int
    target_size: int
    action: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _exact(ratio: float) -> Fraction:
    # 5 × 1.4 is 7.000000000000001 in floats, and ⌈⌉ of that is 8: use the decimal the user typed.
    return Fraction(repr(ratio))


def ratio_target(config: Mapping[str, Any], pool_size: int, miss_rate: float | None) -> int:
    """SPEC's ratio rule: ⌈N·expand⌉ (at least N+1) to grow, ⌊N·shrink⌋ (at most N−1) to shrink."""
    low, high = config["min_pool_size"], config["max_pool_size"]
    if miss_rate is None:
        return pool_size
    if miss_rate > config["max_miss_rate_threshold"]:
        grown = math.ceil(pool_size * _exact(config["expand_ratio"]))
        return min(high, max(pool_size + 1, grown))
    if miss_rate < config["min_miss_rate_threshold"]:
        shrunk = math.floor(pool_size * _exact(config["shrink_ratio"]))
        return max(low, min(pool_size - 1, shrunk))
    return pool_size


def bounds(config: Mapping[str, Any], size: int) -> Decision | None:
    low, high = config["min_pool_size"], config["max_pool_size"]
    if size < low:
        return Decision(size, low, REPAIR, f"pool size {size} is below min_pool_size {low}")
    if size > high:
        return Decision(size, high, SCALE_IN, f"pool size {size} is above max_pool_size {high}")
    return None


def _rate(miss_rate: float) -> str:
    return f"{miss_rate:.3f}"


def decide(config: Mapping[str, Any], observed: Observation, *, safety: bool = True) -> Decision:
    """One tick's decision: bounds first, then ``auto_mode``, the ratio rule and its safety rules.

    ``safety=False`` is ``set_test_miss_rate``: the bounds and the ratio rule, whatever the mode
    and without the safety rules. The bounds are hard for everyone.
    """
    size, rate = observed.pool_size, observed.miss_rate
    bounded = bounds(config, size)
    if bounded is not None:
        return bounded
    if safety and not config["auto_mode"]:
        return Decision(size, size, HOLD, "auto_mode is off: observed only")
    if rate is None:
        return Decision(size, size, HOLD, "no data: too few GET requests in the window")
    target = ratio_target(config, size, rate)
    high, low = config["max_miss_rate_threshold"], config["min_miss_rate_threshold"]
    if target > size:
        reason = f"miss rate {_rate(rate)} above {high}: grow {size} → {target}"
        if safety and observed.launching:
            return Decision(size, size, HOLD, f"{reason} waits: {observed.launching} node(s) still launching")
        return Decision(size, target, SCALE_OUT, reason)
    if target < size:
        reason = f"miss rate {_rate(rate)} below {low}: shrink {size} → {target}"
        if safety:
            held = _scale_in_hold(config, observed)
            if held:
                return Decision(size, size, HOLD, f"{reason} waits: {held}")
        return Decision(size, target, SCALE_IN, reason)
    if rate > high:
        return Decision(size, size, HOLD, f"miss rate {_rate(rate)} above {high}, pool at max_pool_size")
    if rate < low:
        return Decision(size, size, HOLD, f"miss rate {_rate(rate)} below {low}, pool at min_pool_size")
    return Decision(size, size, HOLD, f"miss rate {_rate(rate)} within [{low}, {high}]")


def _scale_in_hold(config: Mapping[str, Any], observed: Observation) -> str | None:
    """Why a scale-in must wait, or None: the last ``scale_in_window_minutes`` ticks with data
    since the last resize (this one included) must all be below the minimum."""
    if observed.draining:
        return f"{observed.draining} node(s) still draining"
    needed, low = config["scale_in_window_minutes"], config["min_miss_rate_threshold"]
    streak = 1  # this tick, already known to be below
    for rate in reversed(observed.recent_miss_rates):
        if streak == needed or rate >= low:
            break
        streak += 1
    if streak < needed:
        return f"below the minimum at {streak} of the {needed} ticks with data the window needs"
    return None
