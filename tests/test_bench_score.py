"""The benchmark's scoring pinned by hand-computed traces, the DP checked against brute force."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.report import figure, last_line, table
from bench.score import (
    MeanScore,
    Oracle,
    Run,
    Score,
    actions_in,
    best_static,
    churn_schedule,
    lower_bound,
    mean_scores,
    oracle,
    reversals,
    scale_ins_during,
    score,
    static_run,
    static_scores,
)

# -- oracle on a tiny trace ----------------------------------------------------------------------

# 6 minutes, pools of 1..3 nodes, (gets, misses) per minute; threshold 10% (inclusive).
TINY = {
    #    m0        m1         m2        m3         m4         m5
    1: [(100, 5), (100, 20), (100, 30), (100, 50), (100, 40), (0, 0)],
    2: [(100, 2), (100, 10), (100, 8), (100, 40), (100, 20), (0, 0)],
    3: [(100, 1), (100, 5), (100, 4), (100, 11), (100, 9), (0, 0)],
}
# m0: size 1 at 5%            -> 1
# m1: size 1 20%, size 2 10%  -> 2 (exactly at the threshold meets it)
# m2: size 2 8%               -> 2
# m3: 50%, 40%, 11%           -> None (unavoidable: even 3 nodes miss 11%)
# m4: 40%, 20%, 9%            -> 3
# m5: no GETs, rate 0         -> 1
TINY_SIZES = (1, 2, 2, None, 3, 1)


def test_oracle_sizes_and_lower_bound_on_a_tiny_trace() -> None:
    result = oracle(TINY, max_size=3)
    assert result.sizes == TINY_SIZES
    # Lower bound: None priced at max_size 3 -> [1, 2, 2, 3, 3, 1], Σ = 12.
    # Nodes added: 1->2 at m1 (+1), 2->3 at m3 (+1), drops add nothing -> 2 nodes × 3 boot min = 6.
    # 12 + 6 = 18.
    assert result.lower_bound == 18
    # The lower-bound schedule [1,2,2,3,3,1] changes size 3 times.
    assert result.changes == 3


def test_churn_aware_oracle_on_the_tiny_trace() -> None:
    # Required (None unconstrained, i.e. >= 1): [1, 2, 2, -, 3, 1], change cost 5.
    #   0 changes: must be 3 throughout (m4)                 Σ 18           -> 18
    #   1 change at p (prefix a, suffix b):
    #     p=1 [1,3,3,3,3,3] 1 + 15 + 5 = 21     p=2 [2,2,3,3,3,3] 4 + 12 + 5 = 21
    #     p=3 [2,2,2,3,3,3] 6 +  9 + 5 = 20     p=4 [2,2,2,2,3,3] 8 +  6 + 5 = 19
    #     p=5 [3,3,3,3,3,1] 15 + 1 + 5 = 21     (prefix holds m4's 3)
    #   >= 2 changes: Σ >= Σ required (1+2+2+1+3+1 = 10) + 10 = 20
    # So holding 3 wins (18): dropping to 1 at m5 saves 2 node-minutes but a change costs 5.
    result = oracle(TINY, max_size=3)
    assert result.churn_sizes == (3, 3, 3, 3, 3, 3)
    assert result.churn_cost == 18
    assert result.churn_changes == 0


def test_churn_schedule_holds_through_a_short_dip_but_takes_a_long_one() -> None:
    required = [1, 1, 1, 3, 1, 3, None, 2]
    # One change, at m3:   [1,1,1,3,3,3,3,3]  Σ 3 + 15 = 18, + 5       -> 23
    # No change:           [3]*8              Σ 24                      -> 24
    # Follow the dip at m4 [1,1,1,3,1,3,3,3]  Σ 16, 3 changes, + 15     -> 31
    #   (dropping to 1 for one minute saves 2 node-minutes but costs two changes = 10)
    # Drop to 2 at m6:     [1,1,1,3,3,3,2,2]  Σ 16, 2 changes, + 10     -> 26
    # Drop to 1 at m6:     [1,1,1,3,3,3,1,2]  Σ 15, 3 changes, + 15     -> 30
    # Any 2-change schedule has Σ >= 14 (Σ required = 13 needs 6 changes) -> >= 24; so 23 is optimal,
    # and the first three minutes at 1 (saving 6) are worth the one change (5).
    sizes, cost, changes = churn_schedule(required, max_size=3, change_cost=5)
    assert sizes == (1, 1, 1, 3, 3, 3, 3, 3)
    assert (cost, changes) == (23, 1)
    # Lower bound of the same oracle sizes: [1,1,1,3,1,3,3,2] Σ 15, adds 2 at m3 and 2 at m5 -> +12 = 27.
    # The churn-aware cost can be below it: its changes are flat-priced and None minutes are free.
    assert lower_bound(required, max_size=3, boot_minutes=3) == 27


def test_churn_schedule_tie_breaks_to_fewer_changes_then_smaller_sizes() -> None:
    # [1,2]: Σ 3 + 1 change at cost 1 = 4; [2,2]: Σ 4, no change = 4 -> fewer changes wins.
    assert churn_schedule([1, 2], max_size=3, change_cost=1) == ((2, 2), 4, 0)
    # Unconstrained: everything at 1.
    assert churn_schedule([None, None], max_size=3, change_cost=5) == ((1, 1), 2, 0)
    assert churn_schedule([], max_size=3) == ((), 0, 0)


def test_oracle_rejects_missing_or_ragged_fixed_pools() -> None:
    with pytest.raises(ValueError, match="missing"):
        oracle({1: [(1, 0)], 2: [(1, 0)]}, max_size=3)
    with pytest.raises(ValueError, match="length"):
        oracle({1: [(1, 0)], 2: [(1, 0), (1, 0)]}, max_size=2)


# -- DP optimality against brute force -----------------------------------------------------------


def _brute_force(
    required: list[int | None], max_size: int, change_cost: int
) -> tuple[tuple[int, ...], int, int]:
    """Cost of *every* schedule, enumerated as an array with one axis per minute (4^12 at most).

    The key cost * 16 + changes (changes <= 11 < 16) orders by cost then changes; np.argmin returns
    the first minimum in C order, which is the lexicographically smallest schedule: the DP's tie-break.
    """
    sizes = np.arange(1, max_size + 1, dtype=np.int32)
    changed = (sizes[:, None] != sizes[None, :]).astype(np.int32)  # [previous, next]
    big = np.int32(1 << 24)
    key = np.zeros((), dtype=np.int32)
    for m, need in enumerate(required):
        step = sizes * 16 if m == 0 else sizes * 16 + changed * (change_cost * 16 + 1)
        key = key[..., None] + step if m == 0 else key[..., :, None] + step
        if need is not None:
            key[..., : need - 1] = big
        np.minimum(key, big, out=key)
    flat = int(np.argmin(key))
    best = int(key.reshape(-1)[flat])
    schedule = tuple(int(i) + 1 for i in np.unravel_index(flat, key.shape))
    return schedule, best // 16, best % 16


@settings(max_examples=60, deadline=None)
@given(
    required=st.lists(st.one_of(st.none(), st.integers(1, 4)), min_size=1, max_size=12),
    change_cost=st.integers(0, 8),
)
def test_churn_dp_equals_brute_force(required: list[int | None], change_cost: int) -> None:
    expected = _brute_force(required, 4, change_cost)
    got = churn_schedule(required, max_size=4, change_cost=change_cost)
    assert got[1] == expected[1]  # optimal cost
    assert got == expected  # and the same tie-break: fewer changes, then lexicographically smallest
    sizes, cost, changes = got
    assert all(need is None or s >= need for s, need in zip(sizes, required, strict=True))
    assert cost == sum(sizes) + change_cost * changes


# -- score() on a hand trace --------------------------------------------------------------------


def _hand_run() -> tuple[Run, Oracle]:
    # 30 minutes. Sizes: 2 ×5, 1 ×10, 2 ×3, 1 ×11, 2 ×1 -> cost 10 + 10 + 6 + 11 + 2 = 39.
    sizes = [2] * 5 + [1] * 10 + [2] * 3 + [1] * 11 + [2]
    gets = [100] * 30
    misses = [5] * 30
    misses[7] = 20  # 20% violation, avoidable
    misses[8] = 11  # 11% violation, avoidable
    misses[10] = 10  # exactly 10%: not a violation
    gets[20], misses[20] = 0, 0  # idle minute: rate 0
    misses[22] = 50  # 50% violation, but the oracle has no size for m22: unavoidable
    # Misses: 25 ordinary minutes × 5 = 125, + 20 + 11 + 10 + 0 + 50 = 216. GETs: 29 × 100 = 2900.
    actions = [
        (5, "scale_in", 2, 1),
        (15, "scale_out", 1, 2),  # 10 minutes after the scale-in at 5: a reversal
        (17, "replace", 2, 2),  # a repair: not a decision
        (18, "scale_in", 2, 1),
        (29, "scale_out", 1, 2),  # 11 minutes after the scale-in at 18: not a reversal
    ]
    run = Run("hand", sizes, gets, misses, actions)
    oracle_sizes: list[int | None] = [1] * 30
    oracle_sizes[22] = None
    fake = Oracle(
        tuple(oracle_sizes), lower_bound=30, churn_sizes=(1,) * 30, churn_changes=0, churn_cost=30, max_size=2
    )
    return run, fake


def test_score_on_a_hand_trace() -> None:
    run, fake = _hand_run()
    assert score(run, fake) == Score(
        name="hand",
        cost=39,
        cost_ratio=39 / 30,
        violation_min=3,  # m7, m8, m22
        avoidable_violation_min=2,  # m22 is unavoidable
        changes=4,  # the replace does not count
        reversals=1,
        misses=216,
        gets=2900,
    )


def test_reversal_window_is_inclusive_at_ten_minutes() -> None:
    assert reversals([(0, "scale_in", 2, 1), (10, "scale_out", 1, 2)]) == 1
    assert reversals([(0, "scale_in", 2, 1), (11, "scale_out", 1, 2)]) == 0
    # Each scale-out counted once; a scale-out before any scale-in is no reversal.
    assert (
        reversals(
            [(0, "scale_out", 1, 2), (1, "scale_in", 2, 1), (2, "scale_out", 1, 2), (3, "scale_out", 2, 3)]
        )
        == 2
    )
    # Size-preserving "scale" actions are not decisions.
    assert reversals([(0, "scale_in", 2, 2), (1, "scale_out", 2, 3)]) == 0


def test_scale_ins_during_the_metrics_gap() -> None:
    run, _ = _hand_run()
    assert scale_ins_during(run, range(16, 20)) == 1  # the scale-in at 18
    assert scale_ins_during(run, range(6, 15)) == 0
    assert actions_in(range(15, 18), run.actions) == ((15, "scale_out", 1, 2),)


def test_run_rejects_ragged_minutes() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        Run("bad", [1, 1], [100], [0, 0], [])


# -- static pools --------------------------------------------------------------------------------


def _static_fixed() -> dict[int, list[tuple[int, int]]]:
    # 100 minutes, budget 2% -> at most 2 avoidable violation minutes.
    fixed = {size: [(100, 1)] * 100 for size in range(1, 5)}
    for m in range(50):
        fixed[1][m] = (100, 30)  # size 1 violates the first half
    for m in (10, 20, 30):
        fixed[2][m] = (100, 30)  # size 2: three avoidable violations -> over budget
    for m in (10, 20):
        fixed[3][m] = (100, 30)  # size 3: two avoidable violations -> within budget
    for size in range(1, 5):
        fixed[size][90] = (100, 50)  # no size copes: unavoidable, free for everyone
    return fixed


def test_best_static_is_the_smallest_size_meeting_the_maximum_over_the_day() -> None:
    fixed = _static_fixed()
    day = oracle(fixed, max_size=4)
    assert day.sizes[10] == day.sizes[20] == 4 and day.sizes[30] == 3 and day.sizes[90] is None
    # Over the day: size 1 misses (50 × 30 + 49 × 1 + 50) / 10 000 = 16 %, size 2
    # (96 × 1 + 3 × 30 + 50) / 10 000 = 2.36 %: size 2 is the smallest within 10 %.
    chosen = best_static(fixed, day)
    assert chosen.name == "static 2"
    assert list(chosen.sizes) == [2] * 100 and not chosen.actions
    assert [s.avoidable_violation_min for s in static_scores(fixed, day)] == [50, 3, 2, 0]
    assert [s.violation_min for s in static_scores(fixed, day)] == [51, 4, 3, 1]
    assert static_scores(fixed, day)[2].cost == 300
    # Within 2 %: size 3 misses (97 + 60 + 50) / 10 000 = 2.07 %, size 4 (99 + 50) = 1.49 %.
    assert best_static(fixed, day, max_miss_rate=0.02).name == "static 4"


def test_best_static_falls_back_to_max_size_when_no_size_fits() -> None:
    # Non-monotone: only 1 node copes at m0, only 2 nodes at m1; both sizes violate avoidably.
    fixed = {1: [(100, 0), (100, 50)], 2: [(100, 50), (100, 0)]}
    day = oracle(fixed, max_size=2)
    assert day.sizes == (1, 2)
    assert best_static(fixed, day).name == "static 2"  # both miss 25 % over the day
    assert static_run(1, fixed).gets == (100, 100)


def test_mean_scores_averages_each_field() -> None:
    a = Score("p", 10, 1.0, 2, 1, 3, 0, 100, 1000)
    b = Score("p", 20, 2.0, 4, 2, 6, 1, 200, 1000)
    mean = mean_scores([a, b], "p mean")
    assert mean == MeanScore("p mean", 15.0, 1.5, 3.0, 1.5, 4.5, 0.5, 150.0, 1000.0, runs=2)
    with pytest.raises(ValueError):
        mean_scores([], "none")


# -- report ----------------------------------------------------------------------------------------

LAST_LINE = re.compile(
    r"^bench: cost_ratio=\d+\.\d\d avoidable_violation_min=[\d.]+ actions=[\d.]+ reversals=[\d.]+$"
)


def test_table_has_a_header_and_a_row_per_score() -> None:
    run, fake = _hand_run()
    scores = [score(run, fake), score(static_run(1, _static_fixed()), oracle(_static_fixed(), max_size=4))]
    text = table(scores, oracle_rows=False)
    lines = text.strip().splitlines()
    assert lines[0] == (
        "| policy | cost ÷ lower bound | avoidable violation min | changes | reversals | misses |"
    )
    assert len(lines) == 2 + len(scores)
    assert lines[2] == "| hand | 1.30 | 2 | 4 | 1 | 216 |"


def test_table_oracle_rows_and_means() -> None:
    day = oracle(TINY, max_size=3)
    mean = mean_scores(
        [Score("p", 10, 1.0, 2, 1, 3, 0, 100, 1000), Score("p", 20, 2.0, 4, 2, 6, 1, 201, 1000)], "p mean"
    )
    lines = table([mean], oracle=day).strip().splitlines()
    assert len(lines) == 2 + 3
    assert lines[2] == "| p mean | 1.50 | 1.5 | 4.5 | 0.5 | 150.5 |"
    assert lines[3] == "| oracle (lower bound) | 1.00 | 0 | 3 | 0 | — |"
    assert lines[4] == "| churn-aware oracle | 1.00 | 0 | 0 | 0 | — |"  # 18 / 18


def test_last_line_format() -> None:
    run, fake = _hand_run()
    line = last_line(score(run, fake))
    assert line == "bench: cost_ratio=1.30 avoidable_violation_min=2 actions=4 reversals=1"
    assert LAST_LINE.match(line)
    mean = mean_scores([score(run, fake), score(run, fake)], "m")
    assert LAST_LINE.match(last_line(mean))
    assert last_line(mean).endswith("avoidable_violation_min=2.0 actions=4.0 reversals=1.0")


def test_figure_writes_a_deterministic_png(tmp_path: Path) -> None:
    fixed = _static_fixed()
    day = oracle(fixed, max_size=4)
    runs = {"static 3": best_static(fixed, day), "static 2": static_run(2, fixed)}
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for path in (first, second):
        figure(path, runs, day, fixed=fixed, title="tiny day", gap_minutes=range(40, 55))
    data = first.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert data == second.read_bytes()
    # 1600 × 900: width and height are the first two fields of the IHDR chunk.
    assert int.from_bytes(data[16:20], "big") == 1600 and int.from_bytes(data[20:24], "big") == 900


def test_the_warm_targets_judge_the_means_and_the_worst_day() -> None:
    from bench.decisions import PREDICTIVE, PREDICTIVE_BLIND, warm_checks

    def day(name: str, cost: float, avoidable: int, changes: int, reversals: int) -> Score:
        return Score(name, 100, cost, avoidable, avoidable, changes, reversals, 0, 0)

    days = [
        [day(PREDICTIVE, 1.02, 2, 10, 0), day(PREDICTIVE_BLIND, 1.05, 5, 12, 0)],
        [day(PREDICTIVE, 1.04, 4, 12, 0), day(PREDICTIVE_BLIND, 1.05, 7, 12, 1)],
    ]
    best, blind = (
        mean_scores([s for scores in days for s in scores if s.name == n], n)
        for n in (PREDICTIVE, PREDICTIVE_BLIND)
    )
    verdicts = [met for met, _ in warm_checks(days, best, blind, churn=10.0)]
    # cost 1.03 ≤ 1.03, avoidable 3 ≤ 3, changes 11 ≤ 12, no reversal; no curve: 6 ≤ 6, but a
    # reversal on one day fails although the mean is 0.5.
    assert verdicts == [True, True, True, True, True, False]
    assert not warm_checks(days, best, blind, churn=9.0)[2][0]  # 11 > 10.8
