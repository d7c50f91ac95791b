"""The scaling policies by name: the one registry the tick decides with and the config checks.

A policy takes the config, the tick's observation and evidence, and the memory it kept at the
last tick (None at first), and answers its decision and the memory to keep. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chalicelib.domain import predictive
from chalicelib.domain.policy import Decision, Observation, decide

PolicyMemory = dict[str, Any] | None
Policy = Callable[
    [dict[str, Any], Observation, predictive.Evidence, PolicyMemory], tuple[Decision, PolicyMemory]
]
RATIO = "ratio"


def ratio_policy(
    config: dict[str, Any], observed: Observation, evidence: predictive.Evidence, memory: PolicyMemory
) -> tuple[Decision, PolicyMemory]:
    """SPEC's steps 4-5 (its scale-in window lives in ``recent_miss_rates``, not in the memory)."""
    return decide(config, observed), memory


def predictive_policy(
    config: dict[str, Any], observed: Observation, evidence: predictive.Evidence, memory: PolicyMemory
) -> tuple[Decision, PolicyMemory]:
    decision, kept = predictive.decide(
        config, observed, replace(evidence, memory=predictive.Memory.from_data(memory))
    )
    return decision, kept.to_data()


POLICIES: dict[str, Policy] = {RATIO: ratio_policy, predictive.POLICY: predictive_policy}
NAMES: tuple[str, ...] = tuple(POLICIES)


def policy_named(name: str) -> Policy:
    """The policy the config names (the config's rules allow no other; ratio for an old item)."""
    return POLICIES.get(name, ratio_policy)
