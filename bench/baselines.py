"""The rules the benchmark compares against, each run through the real tick as its decision step.

They have the tick's policy signature (``chalicelib.service.tick.Policy``): the config, the tick's
observation, the predictive evidence (unused here) and the memory the rule kept at the last
tick. Everything else (bounds, launching, booting, terminating, records) is the scaler's own.
The ratio and predictive policies are not here: the benchmark runs them as the service does,
by the config's ``policy``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from chalicelib.domain.policy import HOLD, SCALE_IN, SCALE_OUT, Decision, Observation, bounds
from chalicelib.domain.predictive import HEADROOM, Evidence

# The miss rate the proportional rules steer to, as a share of the maximum threshold: the
# predictive policy's goal, so that the rules aim at the same place.
TARGET_SHARE = HEADROOM
HPA_TOLERANCE = 0.1
HPA_DOWN_STABILISATION_MINUTES = 5
TT_OUT_MINUTES = 3  # AWS target tracking's scale-out alarm: 3 of 3 one-minute datapoints
TT_IN_MINUTES = 15  # and its scale-in alarm: 15 of 15, at 90 % of the target
TT_IN_SHARE = 0.9

Memory = dict[str, Any] | None


def _clamp(config: Mapping[str, Any], size: int) -> int:
    return max(config["min_pool_size"], min(config["max_pool_size"], size))


def _resize(size: int, target: int, reason: str) -> Decision:
    if target > size:
        return Decision(size, target, SCALE_OUT, reason)
    if target < size:
        return Decision(size, target, SCALE_IN, reason)
    return Decision(size, size, HOLD, reason)


def seed_rule(
    config: dict[str, Any], observed: Observation, evidence: Evidence, memory: Memory
) -> tuple[Decision, Memory]:
    """The course systems' rule: ``round`` (half to even) of N × ratio, no data read as a miss
    rate of 0 (so missing metrics shrink the pool), and no safety rules at all."""
    size = observed.pool_size
    rate = observed.miss_rate if observed.miss_rate is not None else 0.0
    if rate > config["max_miss_rate_threshold"]:
        target = round(size * config["expand_ratio"])
    elif rate < config["min_miss_rate_threshold"]:
        target = round(size * config["shrink_ratio"])
    else:
        target = size
    return _resize(size, _clamp(config, target), f"seed rule at miss rate {rate:.3f}"), memory


def hpa_rule(
    config: dict[str, Any], observed: Observation, evidence: Evidence, memory: Memory
) -> tuple[Decision, Memory]:
    """Kubernetes' HPA arithmetic: desired = ⌈N × metric ÷ target⌉, nothing within a 10 %
    tolerance, and a scale-down only to the highest recommendation of the last 5 minutes."""
    size = observed.pool_size
    bounded = bounds(config, size)
    if bounded is not None:
        return bounded, memory
    recommendations = list((memory or {}).get("recommendations", []))
    if observed.miss_rate is None:
        return Decision(size, size, HOLD, "hpa: no data"), memory
    target_rate = TARGET_SHARE * config["max_miss_rate_threshold"]
    ratio = observed.miss_rate / target_rate
    desired = size if abs(ratio - 1) <= HPA_TOLERANCE else _clamp(config, math.ceil(size * ratio))
    recommendations = [*recommendations, desired][-HPA_DOWN_STABILISATION_MINUTES:]
    if desired < size:
        desired = min(size, max(recommendations))
    reason = f"hpa: miss rate {observed.miss_rate:.3f}, ratio {ratio:.2f} → {desired}"
    return _resize(size, desired, reason), {"recommendations": recommendations}


def target_tracking_rule(
    config: dict[str, Any], observed: Observation, evidence: Evidence, memory: Memory
) -> tuple[Decision, Memory]:
    """AWS target tracking's shape: scale out by N × metric ÷ target after 3 minutes above the
    target; scale in one node after 15 minutes below 90 % of it; missing data changes nothing."""
    size = observed.pool_size
    bounded = bounds(config, size)
    if bounded is not None:
        return bounded, memory
    kept = dict(memory or {"above": 0, "below": 0})
    if observed.miss_rate is None:
        return Decision(size, size, HOLD, "target tracking: no data"), kept
    target_rate = TARGET_SHARE * config["max_miss_rate_threshold"]
    rate = observed.miss_rate
    kept["above"] = kept["above"] + 1 if rate > target_rate else 0
    kept["below"] = kept["below"] + 1 if rate < TT_IN_SHARE * target_rate else 0
    target = size
    if kept["above"] >= TT_OUT_MINUTES and not observed.launching:
        target = _clamp(config, max(size + 1, math.ceil(size * rate / target_rate)))
    elif kept["below"] >= TT_IN_MINUTES:
        target = _clamp(config, size - 1)
    if target != size:
        kept = {"above": 0, "below": 0}
    return _resize(size, target, f"target tracking: miss rate {rate:.3f} → {target}"), kept


BASELINES = {
    "seed rule": seed_rule,
    "hpa-style": hpa_rule,
    "target tracking": target_tracking_rule,
}
