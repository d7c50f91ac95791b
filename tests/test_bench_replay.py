"""The benchmark's replay through the real scheduled function, and its baseline rules."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from bench import baselines
from bench.replay import Setup, replay
from bench.workload import WARMUP_MINUTES
from chalicelib.domain.config import default_config
from chalicelib.domain.policy import HOLD, REPAIR, SCALE_IN, SCALE_OUT, Observation
from chalicelib.domain.predictive import Evidence
from sim.tier import COPY_KEYS_PER_SECOND

# A short, light day: the warm-up hour and 20 scored minutes at 2,000 GETs a minute.
SHORT = Setup(seed=3, alpha=0.9, curve=True, mean_gets=2_000, minutes=WARMUP_MINUTES + 20)


@pytest.fixture(scope="module")
def predictive_day() -> Any:
    return replay(SHORT, "predictive", policy="predictive")


def test_the_same_seed_gives_the_same_figures(predictive_day: Any) -> None:
    again = replay(SHORT, "predictive", policy="predictive")
    assert again.run == predictive_day.run
    assert [d["reason"] for d in again.decisions] == [d["reason"] for d in predictive_day.decisions]


def test_another_seed_gives_other_figures(predictive_day: Any) -> None:
    other = replay(replace(SHORT, seed=4), "predictive", policy="predictive")
    assert other.run.misses != predictive_day.run.misses


def test_the_replay_runs_the_deployed_function_with_the_configs_policy(predictive_day: Any) -> None:
    run, decisions = predictive_day.run, predictive_day.decisions
    assert len(decisions) == SHORT.minutes and len(run.sizes) == SHORT.minutes - WARMUP_MINUTES
    assert {d["policy"] for d in decisions} == {"predictive"}
    assert decisions[0]["action"] == REPAIR  # the empty pool's first tick: up to min_pool_size
    # The pool grew from one cold node, reading the curve the simulated nodes publish.
    assert any(d["action"] == SCALE_OUT and "curve predicts" in d["reason"] for d in decisions)
    assert max(run.sizes) > 1 and all(1 <= size <= 8 for size in run.sizes)
    assert all(0 <= misses <= gets for gets, misses in zip(run.gets, run.misses, strict=True))


def test_a_baseline_runs_through_the_same_tick_as_its_decision_step() -> None:
    day = replay(
        replace(SHORT, curve=False, minutes=WARMUP_MINUTES), "seed rule", baseline=baselines.seed_rule
    )
    reasons = [d["reason"] for d in day.decisions if d["action"] in (SCALE_OUT, SCALE_IN)]
    assert reasons and all(reason.startswith("seed rule") for reason in reasons)


@pytest.mark.parametrize(
    ("frontend", "curve", "rule"),
    [("warm", True, None), ("cold", False, None), ("cold", False, baselines.seed_rule)],
)
def test_the_in_memory_aws_replays_the_same_decisions_as_moto(frontend: str, curve: bool, rule: Any) -> None:
    # The full rate, 80 scored minutes of seed 0: the pool grows in the warm-up hour and (under
    # the predictive policy) then shrinks: launches, terminations and both front-ends' moves.
    day = Setup(seed=0, alpha=0.9, curve=curve, frontend=frontend, minutes=WARMUP_MINUTES + 80)
    days = [
        replay(day, "p", policy="predictive", baseline=rule, aws_in=aws_in) for aws_in in ("moto", "memory")
    ]
    on_moto, in_memory = days
    assert any(d["action"] == SCALE_OUT for d in on_moto.decisions)
    assert rule or any(action[1] == SCALE_IN for action in on_moto.run.actions)
    assert in_memory.run == on_moto.run
    assert [d["reason"] for d in in_memory.decisions] == [d["reason"] for d in on_moto.decisions]
    assert in_memory.moves == on_moto.moves


# --- the baseline rules ---------------------------------------------------------------------


def _config(**changes: Any) -> dict[str, Any]:
    return {**default_config(), "max_miss_rate_threshold": 0.10, "min_miss_rate_threshold": 0.03, **changes}


EVIDENCE = Evidence("2026-11-26T12:00:00Z", 4, 1000)


@pytest.mark.parametrize(
    ("size", "rate", "target"),
    [
        (3, 0.01, 2),  # 3 × 0.5 = 1.5 rounds half to even: 2
        (5, 0.01, 2),  # 2.5 → 2
        (1, 0.01, 1),  # 0.5 → 0, held at min_pool_size
        (3, None, 2),  # no data read as 0: the seed shrank on missing metrics
        (3, 0.5, 6),
        (5, 0.5, 8),  # 10, held at max_pool_size
        (4, 0.05, 4),
    ],
)
def test_the_seed_rule(size: int, rate: float | None, target: int) -> None:
    decision, _ = baselines.seed_rule(_config(), Observation(size, rate, launching=2), EVIDENCE, None)
    assert decision.target_size == target  # launching nodes change nothing: no safety rules


def test_hpa_tolerance_and_scale_down_stabilisation() -> None:
    observed = Observation(4, 0.1)  # target 0.095: ratio 1.05, within the 10 % tolerance
    assert baselines.hpa_rule(_config(), observed, EVIDENCE, None)[0].action == HOLD
    grow, memory = baselines.hpa_rule(_config(), Observation(4, 0.133), EVIDENCE, None)
    assert (grow.action, grow.target_size) == (SCALE_OUT, 6)  # ⌈4 × 1.4⌉
    actions = []
    for _ in range(6):
        decision, memory = baselines.hpa_rule(_config(), Observation(6, 0.02), EVIDENCE, memory)
        actions.append(decision.target_size)
    # The recommendation of 6 (from the growth) holds the pool for the 5-minute window.
    assert actions[:4] == [6, 6, 6, 6] and actions[-1] == 2


def test_target_tracking_needs_3_minutes_above_and_15_below() -> None:
    memory = None
    actions = []
    for _ in range(3):
        decision, memory = baselines.target_tracking_rule(_config(), Observation(4, 0.16), EVIDENCE, memory)
        actions.append(decision.target_size)
    assert actions == [4, 4, 7]  # ⌈4 × 0.16 / 0.095⌉
    memory, actions = None, []
    for _ in range(15):
        decision, memory = baselines.target_tracking_rule(_config(), Observation(4, 0.01), EVIDENCE, memory)
        actions.append(decision.target_size)
    assert actions == [4] * 14 + [3]
    decision, _ = baselines.target_tracking_rule(
        _config(), Observation(4, None), EVIDENCE, {"above": 2, "below": 14}
    )
    assert decision.action == HOLD


def test_the_command_prints_the_tables_and_its_last_line_and_reads_back_what_it_saved(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import decisions

    saved = tmp_path / "days.json"
    args = ["--seeds", "1", "--alphas", "1.2", "--policies", "predictive (curve)", "--jobs", "1"]
    args += ["--minutes", str(WARMUP_MINUTES + 15), "--mean-gets", "1000", "--png", str(tmp_path / "day.png")]
    assert decisions.main([*args, "--save", str(saved)]) == 0
    first = capsys.readouterr().out
    lines = first.strip().splitlines()
    assert re.fullmatch(
        r"bench: cost_ratio=\d+\.\d\d avoidable_violation_min=[\d.]+ actions=[\d.]+ reversals=[\d.]+",
        lines[-1],
    )
    assert (
        "| predictive (curve) |" in first and "| best static |" in first and "| churn-aware oracle |" in first
    )
    assert (
        "median tick under moto" in first and (tmp_path / "day.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    )
    assert decisions.main([*args, "--load", str(saved), "--png", ""]) == 0
    again = capsys.readouterr().out
    table = [line for line in first.splitlines() if line.startswith("|")]
    assert table == [line for line in again.splitlines() if line.startswith("|")]
    assert again.strip().splitlines()[-1] == lines[-1]


def test_a_shadow_day_records_would_be_decisions_and_changes_nothing() -> None:
    """Manual mode with the predictive policy in the shadow: every tick records what it would
    have done, and the pool stays where the bounds put it."""
    watched = {"auto_mode": False, "shadow_policy": "predictive", "min_pool_size": 2}
    day = replay(replace(SHORT, minutes=12), "shadow", policy="ratio", config=watched)
    assert (day.decisions[0]["action"], day.decisions[0]["target_size"]) == (REPAIR, 2)
    assert all(d["action"] == HOLD and d["target_size"] == 2 for d in day.decisions[1:])
    assert all("observed only" in d["reason"] for d in day.decisions[1:])
    shadows = [d["shadow"] for d in day.decisions]
    assert {shadow["policy"] for shadow in shadows} == {"predictive"}
    assert any(shadow["action"] == SCALE_OUT and shadow["target_size"] > 2 for shadow in shadows), shadows
    # The shadow reads the curve the nodes publish, although the acting ratio policy does not.
    assert any("curve predicts" in shadow["reason"] for shadow in shadows)


def test_a_warm_front_end_copies_the_keys_that_change_owner_as_the_pool_grows() -> None:
    day = replay(replace(SHORT, frontend="warm", minutes=WARMUP_MINUTES + 5), "warm", policy="predictive")
    assert day.moves and all(0 < copied <= changed for _, changed, copied, _ in day.moves)
    assert all(seconds == copied / COPY_KEYS_PER_SECOND for _, _, copied, seconds in day.moves)
    assert day.run.extra == {"moves": tuple(move for move in day.moves if move[0] >= 0)}


def test_the_command_replays_with_the_front_end_asked_for_and_saves_it(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import decisions

    saved = tmp_path / "days.json"
    args = ["--seeds", "7", "--alphas", "0.9", "--policies", "predictive (curve)", "--jobs", "1", "--png", ""]
    args += ["--minutes", str(WARMUP_MINUTES + 3), "--mean-gets", "1000", "--frontend", "warm"]
    assert decisions.main([*args, "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "### seed 7, α 0.9 (consistent hashing, warm front-end)" in out
    assert [day["frontend"] for day in json.loads(saved.read_text())] == ["warm"]
    (day,) = decisions.load(saved)
    assert (
        day.frontend == "warm" and "moves" in json.loads(saved.read_text())[0]["runs"]["predictive (curve)"]
    )
    with pytest.raises(SystemExit):
        decisions.main([*args, "--frontend", "tepid"])
