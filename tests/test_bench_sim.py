"""The benchmark's simulation parts: the curve node, the tier's minute, the day's workload, fixed pools.

Small capacities and a few minutes, never a full day: the figures for a whole day are printed by
``python -m bench.fixed_pools``, not asserted here.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fixed_pools import FixedPool, miss_rates, rates, replay_fixed
from bench.workload import (
    BASE_KEYS,
    CROWD_IDS,
    CROWD_KEYS,
    SHIFTED_IDS,
    TOTAL_MINUTES,
    DayWorkload,
    at,
    clock,
    key_kind,
)
from sim.hashring import HashRing, ModuloRing, make_router
from sim.lru import FACTORS, HIT_INDEX, NEW_INDEX, CurveNode, LruNode, factor_capacities
from sim.tier import FRONTENDS, CacheTier, NodeMinute

# Up to 200 keys: more than 8 x 16, so keys also fall off the ghost list's end.
traces = st.lists(st.integers(0, 200), max_size=600)


# -- the curve node --------------------------------------------------------------------------


def _stack_distance_indices(trace: Sequence[Hashable], capacity: int) -> list[int]:
    """The obvious definition: a key's position in the whole LRU stack, against each factor's size."""
    bounds, stack, answers = factor_capacities(capacity), [], []
    for key in trace:
        position = stack.index(key) if key in stack else None
        answers.append(
            next(
                (i for i, bound in enumerate(bounds) if position is not None and position < bound), NEW_INDEX
            )
        )
        if position is not None:
            del stack[position]
        stack.insert(0, key)
    return answers


@settings(max_examples=150, deadline=None)
@given(trace=traces, capacity=st.sampled_from([1, 3, 8, 16]))
def test_curve_node_matches_the_stack_distance_and_the_plain_lru(trace: list[int], capacity: int) -> None:
    curve, plain = CurveNode(capacity), LruNode(capacity)
    answers = [curve.access(key) for key in trace]
    assert answers == _stack_distance_indices(trace, capacity)
    assert [index <= HIT_INDEX for index in answers] == [plain.access(key) for key in trace]
    assert list(curve) == list(plain) and len(curve) == len(plain)  # same keys, same eviction order
    assert all((key in curve) == (key in plain) for key in range(201))


@pytest.mark.parametrize("capacity", [8, 16])
def test_curve_node_on_a_long_skewed_trace(capacity: int) -> None:
    rng = random.Random(capacity)
    trace = rng.choices(range(400), weights=[1 / rank for rank in range(1, 401)], k=5_000)
    answers = CurveNode(capacity).tally(trace)
    expected = Counter(_stack_distance_indices(trace, capacity))
    assert answers == [expected[index] for index in range(NEW_INDEX + 1)]
    assert all(answers)  # every factor, and beyond, occurs: the test covers each segment


@settings(max_examples=100, deadline=None)
@given(trace=traces, capacity=st.sampled_from([1, 8, 16]))
def test_the_curve_nodes_batch_tally_is_access_counted(trace: list[int], capacity: int) -> None:
    one_by_one, batch = CurveNode(capacity), CurveNode(capacity)
    counts = Counter(one_by_one.access(key) for key in trace)
    half = len(trace) // 2  # in two calls, so a batch continues where the last one stopped
    tallied = [a + b for a, b in zip(batch.tally(trace[:half]), batch.tally(trace[half:]), strict=True)]
    assert tallied == [counts[index] for index in range(NEW_INDEX + 1)]
    assert list(batch) == list(one_by_one)
    assert LruNode(capacity).hits_of(trace) == sum(tallied[: HIT_INDEX + 1])


def test_a_ghost_is_a_miss_that_a_bigger_node_would_have_hit() -> None:
    node = CurveNode(2)  # factor capacities 0, 0, 1, 2, 4, 8, 16
    assert [node.access(key) for key in ("a", "b", "c")] == [NEW_INDEX] * 3
    assert "a" not in node and len(node) == 2  # evicted, but still in the ghost list
    assert node.access("a") == FACTORS.index("2")  # position 2: a node twice as big would hit
    assert node.access("a") == FACTORS.index("0.5")  # now on top
    with pytest.raises(ValueError):
        CurveNode(0)


# -- the tier's minute -----------------------------------------------------------------------


def test_a_curve_tier_reports_cumulative_factors_and_the_hits_of_a_plain_one() -> None:
    keys = [n % 180 for n in range(0, 4_000, 7)] * 2
    curve, plain = CacheTier(60, 0, curve=True), CacheTier(60, 0)
    for tier in (curve, plain):
        tier.sync(["i-a", "i-b"], 0)
    measured = curve.serve_minute(keys, ["i-a", "i-b"])
    assert {node: (m.gets, m.hits) for node, m in measured.items()} == plain.serve(keys, ["i-a", "i-b"])
    for node in measured.values():
        assert node.within is not None and len(node.within) == len(FACTORS)
        assert node.within[HIT_INDEX] == node.hits
        assert list(node.within) == sorted(node.within) and node.within[-1] <= node.gets
    assert measured.failed == 0 and measured.requests == len(keys)
    assert all(node.within is None for node in plain.serve_minute(keys, ["i-a"]).values())


def test_booting_nodes_are_absent_and_what_they_were_sent_failed() -> None:
    tier, keys = CacheTier(50, 3, curve=True), list(range(300))
    tier.sync(["i-a"], 0)
    assert tier.serve_minute(keys, ["i-a"]) == {} and tier.serve_minute(keys, ["i-a"]).failed == 300
    tier.sync(["i-a", "i-b"], 3)  # i-a serves from minute 3, i-b from 6
    routing = ["i-a", "i-b", "i-gone"]
    minute = tier.serve_minute(keys, routing)
    ring = HashRing(routing)
    on_a = sum(ring.node_for(key) == "i-a" for key in keys)
    assert set(minute) == {"i-a"} and minute["i-a"] == NodeMinute(on_a, 0, (0,) * len(FACTORS))
    assert minute.failed == len(keys) - on_a > 0 and minute.requests == len(keys)
    assert minute.true_miss_rate == 1.0
    assert tier.serve_minute(keys, []).failed == len(keys)  # nothing to route to: every GET fails
    tier.sync(["i-a", "i-b"], 6)
    assert set(tier.serve_minute([], routing)) == {"i-a", "i-b"}  # zeros included
    assert tier.serve_minute(iter(keys), routing).requests == len(keys)  # any iterable will do


def test_modulo_moves_most_keys_when_a_node_goes_and_consistent_about_one_in_n() -> None:
    five = [f"i-{n}" for n in range(5)]
    keys = range(20_000)
    for hashing, low, high in (("consistent", 0.12, 0.28), ("modulo", 0.7, 0.9)):
        before, after = make_router(five, hashing), make_router(five[:-1], hashing)  # type: ignore[arg-type]
        moved = sum(before.node_for(key) != after.node_for(key) for key in keys) / len(keys)
        assert low < moved < high, (hashing, moved)
    with pytest.raises(ValueError):
        make_router(five, "rendezvous")  # type: ignore[arg-type]


def test_a_modulo_tier_routes_by_the_lists_order_and_ints_hash_as_their_text() -> None:
    tier, routing, keys = CacheTier(1_000, 0, hashing="modulo"), ["i-b", "i-a"], list(range(500))
    tier.sync(routing, 0)
    got = tier.serve_minute(keys, routing)
    assert {node: m.gets for node, m in got.items()} == Counter(map(ModuloRing(routing).node_for, keys))
    assert ModuloRing(["i-a", "i-b"]).node_for(7) != ModuloRing(["i-b", "i-a"]).node_for(7)
    assert HashRing(routing).node_for(42) == HashRing(routing).node_for("42")


# -- the day's workload ----------------------------------------------------------------------


def test_the_workload_is_the_same_per_seed_and_alpha_whatever_the_order() -> None:
    first, second = (
        DayWorkload(3, 0.9, mean_gets_per_minute=2_000),
        DayWorkload(3, 0.9, mean_gets_per_minute=2_000),
    )
    late = first.requests(1_400)
    assert first.requests(61) == second.requests(61) and second.requests(1_400) == late
    assert DayWorkload(4, 0.9, mean_gets_per_minute=2_000).requests(1_400) != late
    assert DayWorkload(3, 1.2, mean_gets_per_minute=2_000).requests(1_400) != late
    assert all(isinstance(key, int) for key in late)
    with pytest.raises(ValueError):
        first.requests(TOTAL_MINUTES)


def test_the_clock_starts_with_the_warm_up_hour() -> None:
    assert (clock(0), clock(59), clock(60), clock(TOTAL_MINUTES - 1)) == ("23:00", "23:59", "00:00", "23:59")
    assert at("20:00") == 1_260 and clock(at("18:30")) == "18:30"
    assert DayWorkload(0, 0.9).gap_minutes == range(1_260, 1_270)


def test_the_day_cycles_three_to_one_with_its_peak_at_eight_in_the_evening() -> None:
    load = DayWorkload(0, 0.9, mean_gets_per_minute=3_000)
    trough, peak = load.shape(at("08:00")), load.shape(at("20:00"))
    assert (trough.active_keys, peak.active_keys) == (4_000, BASE_KEYS)
    assert trough.rate * 3 == pytest.approx(peak.rate)
    assert max(key for key in load.requests(at("08:00")) if key_kind(key) == "base") < 4_000
    morning = sum(len(load.requests(minute)) for minute in range(at("07:55"), at("08:05")))
    evening = sum(len(load.requests(minute)) for minute in range(at("19:50"), at("20:00")))
    assert 2.7 < evening / morning < 3.3
    mean = sum(len(load.requests(minute)) for minute in range(0, TOTAL_MINUTES, 15)) / 100
    assert 0.95 * 3_000 < mean < 1.05 * 3_000


def test_the_flash_crowd_is_a_quarter_of_the_gets_from_half_past_six_to_seven() -> None:
    load = DayWorkload(0, 0.9, mean_gets_per_minute=2_000)
    for minute in (at("18:29"), at("19:00"), at("03:00"), at("21:00")):
        assert not any(key_kind(key) == "crowd" for key in load.requests(minute))
    for minute in (at("18:30"), at("18:45"), at("18:59")):
        kinds = Counter(map(key_kind, load.requests(minute)))
        assert 0.22 < kinds["crowd"] / kinds.total() < 0.28
    crowd = {
        key for minute in load.crowd_minutes for key in load.requests(minute) if key_kind(key) == "crowd"
    }
    assert min(crowd) >= CROWD_IDS and max(crowd) < CROWD_IDS + CROWD_KEYS and len(crowd) > 0.95 * CROWD_KEYS


def test_at_two_the_working_set_shifts_by_thirty_percent() -> None:
    load = DayWorkload(1, 1.2)
    before, after = load.requests(at("13:59")), load.requests(at("14:01"))
    assert not any(key_kind(key) == "shifted" for key in before)

    def rank(key: int) -> int:
        return key - SHIFTED_IDS + 1 if key_kind(key) == "shifted" else key + 1

    hot = {key for key in after if key_kind(key) in ("base", "shifted") and rank(key) <= 500}
    shifted = {key for key in hot if key_kind(key) == "shifted"}
    assert 0.22 < len(shifted) / len(hot) < 0.38
    assert {rank(key) for key in shifted} <= load.shifted_ranks
    assert not shifted & set(before)  # the new keys were never asked before: cold everywhere


def test_two_percent_of_the_gets_are_keys_asked_once() -> None:
    load = DayWorkload(0, 0.9, mean_gets_per_minute=5_000)
    first, second = load.requests(100), load.requests(101)
    one_offs = [key for key in first if key_kind(key) == "one-off"]
    assert len(one_offs) == round(0.02 * len(first)) == len(set(one_offs))
    assert not set(one_offs) & set(second)


# -- fixed pools -----------------------------------------------------------------------------


class _Listed:
    def __init__(self, minutes: list[list[int]]) -> None:
        self.minutes = minutes

    def requests(self, minute: int) -> list[int]:
        return self.minutes[minute]


def test_a_fixed_pool_by_hand() -> None:
    # One node of 2: 1 miss, 2 miss, 1 hit, 3 miss (drops 2), 2 miss (drops 1); then 1 misses again.
    replayed = replay_fixed(_Listed([[1, 2, 1, 3, 2], [1], []]), [1], capacity=2, minutes=range(3))
    assert replayed == {1: [(5, 4), (1, 1), (0, 0)]}
    assert rates(replayed) == {1: [0.8, 1.0, None]}


@settings(max_examples=60, deadline=None)
@given(
    trace=traces,
    size=st.integers(1, 4),
    capacity=st.integers(1, 12),
    hashing=st.sampled_from(["consistent", "modulo"]),
)
def test_a_fixed_pool_is_plain_lru_nodes_behind_the_front_end(
    trace: list[int], size: int, capacity: int, hashing: str
) -> None:
    pool = FixedPool(size, capacity, hashing)  # type: ignore[arg-type]
    router = make_router([f"fixed-{size}-{i}" for i in range(size)], hashing)  # type: ignore[arg-type]
    nodes = {node_id: LruNode(capacity) for node_id in router.node_ids}
    half = len(trace) // 2
    for part in (trace[:half], trace[half:]):
        expected = sum(not nodes[router.node_for(key)].access(key) for key in part)  # type: ignore[index]
        assert pool.misses_of(part) == expected


def test_a_bigger_fixed_pool_misses_less_over_the_day() -> None:
    load = DayWorkload(0, 0.9, mean_gets_per_minute=1_000)
    replayed = replay_fixed(load, range(1, 7), capacity=1_250, minutes=range(0, 240))
    assert all(
        len(per) == 240 and all(gets == len(load.requests(m)) for m, (gets, _) in enumerate(per[:3]))
        for per in replayed.values()
    )
    misses = [sum(m for _, m in replayed[size]) for size in range(1, 7)]
    assert misses == sorted(misses, reverse=True) and misses[0] > 2 * misses[-1]
    modulo = miss_rates(load, [2], capacity=1_250, hashing="modulo", minutes=range(60, 62))
    assert len(modulo[2]) == 2 and all(rate is not None and 0 < rate < 1 for rate in modulo[2])


# -- warm moves ------------------------------------------------------------------------------


def _warm_tier(
    capacity: int = 100, cap: int = 10_000, seconds_per_key: float = 0.0, **kwargs: Any
) -> CacheTier:
    """A warm tier copying at most ``cap`` keys a move, each taking ``seconds_per_key``."""
    rate = 1 / seconds_per_key if seconds_per_key else 1e12
    return CacheTier(
        capacity, 0, frontend="warm", copy_keys_per_second=rate, copy_budget_seconds=cap / rate, **kwargs
    )


def _filled(tier: CacheTier, nodes: list[str], keys: Sequence[int]) -> None:
    tier.sync(nodes, 0)
    tier.serve_minute(keys, nodes)


def test_a_new_node_gets_the_keys_that_map_to_it_hottest_first_up_to_the_cap() -> None:
    tier = _warm_tier(cap=5)
    _filled(tier, ["node-0"], range(60))  # key 59 the most recent
    before = list(tier.node("node-0"))
    tier.sync(["node-0", "node-1"], 1)
    assert list(tier.node("node-1")) == []  # nothing happens until the front-end routes to it
    minute = tier.serve_minute([], ["node-0", "node-1"])
    ring = HashRing(["node-0", "node-1"])
    theirs = [key for key in reversed(range(60)) if ring.node_for(key) == "node-1"]  # hottest first
    # Copied as memcached's add, in copy order: the hottest copied key is the least recent one.
    assert list(tier.node("node-1")) == theirs[:5]
    assert list(tier.node("node-0")) == before  # read with gat: the source's order stays
    (move,) = tier.moves
    assert (move.minute, move.changed, move.copied) == (1, len(theirs), 5) and len(theirs) > 5
    # Copies are no GETs: nothing counted anywhere.
    assert minute == {"node-0": NodeMinute(0, 0), "node-1": NodeMinute(0, 0)} and minute.requests == 0
    got = tier.serve_minute(theirs, ["node-0", "node-1"])
    assert got["node-1"] == NodeMinute(len(theirs), 5) and not tier.moves[1:]  # the same list: no move


def test_the_copy_takes_its_share_of_the_minute_on_the_old_list_and_copies_count_no_gets() -> None:
    # 4 keys a move, 15 s each: the first minute's first GETs go to the old owner.
    tier = _warm_tier(cap=4, seconds_per_key=15.0, curve=True)
    _filled(tier, ["node-0"], range(40))
    ring = HashRing(["node-0", "node-1"])
    theirs = [key for key in reversed(range(40)) if ring.node_for(key) == "node-1"]
    tier.sync(["node-0", "node-1"], 1)
    asked = theirs[:4] + theirs[:4] + theirs[4:8]  # 12 GETs, 4 of them twice
    got = tier.serve_minute(asked, ["node-0", "node-1"])
    # 4 keys × 15 s = 60 s: the whole minute went by the old list, answered warm by node-0.
    assert got["node-0"].gets == got["node-0"].hits == 12 and got["node-1"].gets == 0
    assert got["node-1"].within == (0,) * len(FACTORS)  # copies counted nowhere, not even in the curve
    assert tier.moves[0].seconds == 60.0
    tier = _warm_tier(cap=2, seconds_per_key=15.0)  # 30 s: half the minute
    _filled(tier, ["node-0"], range(40))
    tier.sync(["node-0", "node-1"], 1)
    got = tier.serve_minute(asked, ["node-0", "node-1"])
    # The first 6 GETs on node-0 (hits); then theirs[0..1] copied hit, theirs[2..7] miss on node-1.
    assert got["node-0"] == NodeMinute(6, 6)
    assert got["node-1"] == NodeMinute(6, sum(key in theirs[:2] for key in asked[6:]))


def test_a_leaving_nodes_keys_land_on_their_new_owners_before_it_goes() -> None:
    tier, nodes = _warm_tier(), ["node-0", "node-1", "node-2"]
    keys = list(range(90))
    _filled(tier, nodes, keys)
    ring = HashRing(nodes)
    leaving = [key for key in keys if ring.node_for(key) == "node-2"]
    tier.sync(nodes[:2], 1)  # scaled in: node-2's instance is gone
    assert tier.node_ids == nodes[:2]
    got = tier.serve_minute(leaving, nodes[:2])
    assert set(got) == set(nodes[:2]) and got.hits == got.requests == len(leaving)  # all warm
    after = HashRing(nodes[:2])
    assert all(key in tier.node(after.node_for(key)) for key in leaving)  # type: ignore[arg-type]
    assert tier.moves[0].copied == tier.moves[0].changed == len(leaving)
    tier.sync(nodes[:2], 2)
    assert tier.serve_minute(keys, nodes).failed == len(leaving)  # node-2 is gone for good


def test_a_leaving_node_answers_the_copys_share_of_the_minute_but_publishes_nothing() -> None:
    tier, nodes = _warm_tier(cap=1_000, seconds_per_key=60.0), ["node-0", "node-1"]
    _filled(tier, nodes, range(20))
    tier.sync(["node-0"], 1)
    on_1 = [key for key in range(20) if HashRing(nodes).node_for(key) == "node-1"]
    got = tier.serve_minute(on_1, ["node-0"])  # the copy takes the whole minute
    assert set(got) == {"node-0"} and got["node-0"] == NodeMinute(0, 0)
    assert got.drained == NodeMinute(len(on_1), len(on_1)) and got.hits == got.requests == len(on_1)


def test_a_booting_node_receives_no_copies() -> None:
    tier = CacheTier(100, 2, frontend="warm")
    tier.sync(["node-0"], 0)
    tier.serve_minute(range(50), ["node-0"])  # node-0 boots until minute 2: nothing cached
    tier.sync(["node-0"], 2)
    tier.serve_minute(range(50), ["node-0"])
    tier.sync(["node-0", "node-1"], 3)  # node-1 serves from minute 5
    tier.serve_minute([], ["node-0", "node-1"])
    assert tier.moves[0].changed > 0 and tier.moves[0].copied == 0 and len(tier.node("node-1")) == 0


def test_a_cold_tier_moves_nothing_and_loses_a_leaving_nodes_keys() -> None:
    nodes, keys = ["node-0", "node-1"], list(range(60))
    on_1 = [key for key in keys if HashRing(nodes).node_for(key) == "node-1"]
    for frontend in FRONTENDS:
        grows = CacheTier(100, 0, frontend=frontend)
        _filled(grows, nodes[:1], keys)
        grows.sync(nodes, 1)
        grown = grows.serve_minute(keys, nodes)
        shrinks = CacheTier(100, 0, frontend=frontend)
        _filled(shrinks, nodes, keys)
        shrinks.sync(nodes[:1], 1)
        shrunk = shrinks.serve_minute(keys, nodes[:1])
        if frontend == "cold":
            assert grown["node-1"] == NodeMinute(len(on_1), 0) and grown.hits == len(keys) - len(on_1)
            assert shrunk.hits == len(keys) - len(on_1) and grows.moves == shrinks.moves == []
        else:
            assert grown.hits == shrunk.hits == len(keys) and len(grows.moves) == len(shrinks.moves) == 1
    with pytest.raises(ValueError):
        CacheTier(frontend="lukewarm")  # type: ignore[arg-type]


def test_an_add_leaves_a_cached_key_alone_and_brings_a_ghost_back() -> None:
    for node in (LruNode(3), CurveNode(3)):
        for key in (1, 2, 3):
            node.access(key)
        node.add(1)
        assert list(node) == [1, 2, 3]
        node.add(4)  # evicts 1, the least recent
        assert list(node) == [2, 3, 4] and 1 not in node
        node.add(1)  # a ghost in the curve node: back as the most recent
        assert list(node) == [3, 4, 1]
