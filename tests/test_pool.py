"""Pure: the pool's data and its clock for route records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.domain.plan import Plan
from chalicelib.domain.pool import DRAINING, IN_SERVICE, LAUNCHING, Node, Pool

WALL = datetime(2026, 11, 26, 6, 0, 30, tzinfo=UTC)


def test_sizes_count_launching_and_in_service_only() -> None:
    pool = Pool(nodes=(Node("a", IN_SERVICE), Node("b", LAUNCHING), Node("c", DRAINING)))
    assert (pool.pool_size, pool.cache_pool_ids, pool.live_ids) == (2, ["a", "b"], ["a", "b", "c"])
    assert pool.in_service_ids == ["a"] and pool.count(DRAINING) == 1


def test_the_clock_is_the_wall_clock_before_any_tick() -> None:
    assert Pool().clock(WALL) == WALL


def test_the_clock_follows_a_simulated_tick_clock_within_its_minute() -> None:
    pool = Pool(last_tick="2026-11-26T18:30:00Z", last_tick_wall=(WALL - timedelta(seconds=2)).isoformat())
    assert pool.clock(WALL) == datetime(2026, 11, 26, 18, 30, 2, tzinfo=UTC)
    later = WALL + timedelta(minutes=5)  # the next tick is late: stay within the last tick's minute
    assert pool.clock(later) < datetime(2026, 11, 26, 18, 31, tzinfo=UTC)


def test_the_pool_round_trips_through_its_data() -> None:
    pool = Pool(
        nodes=(Node("a", IN_SERVICE, ip="10.0.0.1", since="2026-11-26T12:00:00Z", token="t"),),
        version=3,
        sequence=2,
        last_tick="2026-11-26T12:00:00Z",
        recent_miss_rates=(0.1, 0.2),
        pending_plan=Plan("tick", "20261126T1200", "2026-11-26T12:00:00Z", {"action": "hold"}),
    )
    assert Pool.from_data(pool.to_data(), 3) == pool
