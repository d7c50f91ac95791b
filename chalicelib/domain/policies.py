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


def shadow_policy_of(config: dict[str, Any]) -> str | None:
    """The policy whose would-be decision a tick records beside the real one, or None.

    With ``auto_mode`` off, ``shadow_policy`` or, unset, the config's ``policy``; with it on,
    only a ``shadow_policy`` that is set (otherwise the shadow would be the decision itself).
    """
    chosen = config.get("shadow_policy")
    return chosen if config["auto_mode"] else chosen or config["policy"]


def shadow_decide(
    name: str,
    config: dict[str, Any],
    observed: Observation,
    evidence: predictive.Evidence,
    memory: PolicyMemory,
    acted: Decision,
) -> tuple[Decision, PolicyMemory]:
    """What the policy ``name`` would decide at this tick with ``auto_mode`` on, beside ``acted``.

    It sees what the acting policy sees and keeps its own memory (the acting policy's is not
    touched). Its decisions are never carried out, so the changes it remembers are the pool's
    real ones (``acted``), not its own.
    """
    decision, kept = policy_named(name)({**config, "auto_mode": True}, observed, evidence, memory)
    if name == predictive.POLICY:
        resized = acted.action if acted.target_size != acted.previous_size else None
        watched = predictive.watched(
            predictive.Memory.from_data(memory), predictive.Memory.from_data(kept), resized, evidence.time
        )
        kept = watched.to_data()
    return decision, kept
