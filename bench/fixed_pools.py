"""Fixed, always-on pools of 1..8 nodes replayed over the benchmark's day: the oracle's input.

For each pool size and minute, the GETs and misses a pool of that size would have had, had it
run all day (from the warm-up hour, so it is warm by 00:00) with nothing added or removed. An
oracle picks, minute by minute, the smallest size whose miss rate was acceptable; a scaler's
decisions are scored against it.

Speed is the point: a day is 15 M GETs and each goes through every size. Each node is a
``functools.lru_cache`` around a function that returns nothing: CPython's C implementation is an
exact LRU of ``maxsize`` keys (a hit moves the key to the front, a miss inserts it and drops the
least recent when full), the same as ``sim.lru.LruNode`` (tests hold them equal), and it keeps
the hit and miss counts itself. So a minute's replay for one size is one C-level pass: look up
each key's node in a memo, call it with the key.

    .venv/bin/python -m bench.fixed_pools [--seed 0] [--alpha 0.9 1.2] [--max-miss-rate 0.10]
"""

from __future__ import annotations

import argparse
import operator
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Protocol

from bench.workload import SCORED_MINUTES, TOTAL_MINUTES, DayWorkload
from sim.hashring import HASHINGS, Hashing, make_router
from sim.lru import Key

CAPACITY = 1_250  # keys per node
SIZES = range(1, 9)
ROUTE_MEMO_LIMIT = 1 << 17  # beyond it the memo is rebuilt: one-off keys would grow it all day


class Workload(Protocol):
    def requests(self, minute: int) -> Sequence[Key]: ...


def _fetch(key: Key) -> None:
    """The backing store's answer; the value does not matter, only that the cache calls it on a miss."""


class _Routes(dict[Key, Callable[[Key], None]]):
    """key -> its node, filled on first sight: keys repeat every minute, so few are new after the first."""

    def __init__(self, route: Callable[[Key], Callable[[Key], None]]) -> None:
        super().__init__()
        self.route = route

    def __missing__(self, key: Key) -> Callable[[Key], None]:
        node = self[key] = self.route(key)
        return node


class FixedPool:
    """``size`` LRU nodes of ``capacity`` keys behind a front-end hashing over ``fixed-<size>-<i>``."""

    def __init__(self, size: int, capacity: int = CAPACITY, hashing: Hashing = "consistent") -> None:
        if size < 1 or capacity < 1:
            raise ValueError(f"a pool needs at least one node of at least one key, got {size} x {capacity}")
        self.size = size
        self._router = make_router([f"fixed-{size}-{i}" for i in range(size)], hashing)
        self._nodes = {node_id: lru_cache(maxsize=capacity)(_fetch) for node_id in self._router.node_ids}
        self._routes = _Routes(self._route)

    def misses_of(self, keys: Iterable[Key]) -> int:
        """GET each key, cache-aside, on its node; how many missed."""
        keys = keys if isinstance(keys, Sequence) else list(keys)  # read twice below
        if len(self._routes) > ROUTE_MEMO_LIMIT:
            self._routes.clear()
        before = self._misses()
        deque(map(operator.call, map(self._routes.__getitem__, keys), keys), maxlen=0)
        return self._misses() - before

    def _route(self, key: Key) -> Callable[[Key], None]:
        node_id = self._router.node_for(key)
        assert node_id is not None  # a pool has at least one node
        return self._nodes[node_id]

    def _misses(self) -> int:
        return sum(node.cache_info().misses for node in self._nodes.values())


def replay_fixed(
    workload: Workload,
    sizes: Iterable[int] = SIZES,
    *,
    capacity: int = CAPACITY,
    hashing: Hashing = "consistent",
    minutes: Iterable[int] | None = None,
) -> dict[int, list[tuple[int, int]]]:
    """``{size: [(gets, misses), ...]}``, one pair per minute of ``minutes`` (default: the whole day).

    Each minute's requests are generated once and fed to every size in turn (the pools share
    nothing, so the order of sizes does not matter). ``result[size][i]`` is for the i-th minute
    replayed: with the default, for minute i.
    """
    pools = [FixedPool(size, capacity, hashing) for size in sizes]
    replayed: dict[int, list[tuple[int, int]]] = {pool.size: [] for pool in pools}
    for minute in range(TOTAL_MINUTES) if minutes is None else minutes:
        keys = workload.requests(minute)
        for pool in pools:
            replayed[pool.size].append((len(keys), pool.misses_of(keys)))
    return replayed


def rates(replayed: Mapping[int, Sequence[tuple[int, int]]]) -> dict[int, list[float | None]]:
    """Per size, each minute's misses / gets (None for a minute without GETs)."""
    return {size: [misses / gets if gets else None for gets, misses in per] for size, per in replayed.items()}


def miss_rates(
    workload: Workload,
    sizes: Iterable[int] = SIZES,
    *,
    capacity: int = CAPACITY,
    hashing: Hashing = "consistent",
    minutes: Iterable[int] | None = None,
) -> dict[int, list[float | None]]:
    """``replay_fixed`` as miss rates: ``{size: [misses / gets per minute]}``."""
    return rates(replay_fixed(workload, sizes, capacity=capacity, hashing=hashing, minutes=minutes))


def _summary(replayed: Mapping[int, Sequence[tuple[int, int]]], max_miss_rate: float) -> list[str]:
    """Per size, over the scored minutes: the mean of the minutes' miss rates, all misses / all GETs,
    and how many minutes met the maximum."""
    lines = []
    for size, per_minute in rates(replayed).items():
        scored = [rate for rate in per_minute[SCORED_MINUTES.start :] if rate is not None]
        counts = replayed[size][SCORED_MINUTES.start :]
        overall = sum(misses for _, misses in counts) / sum(gets for gets, _ in counts)
        met, mean = sum(rate <= max_miss_rate for rate in scored), sum(scored) / len(scored)
        lines.append(f"  {size} nodes: mean {mean:.3f}, overall {overall:.3f}, {met:4d} minutes met")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Print each fixed pool's day, for a look at what the oracle will choose from."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.9, 1.2])
    parser.add_argument("--hashing", choices=HASHINGS, default="consistent")
    parser.add_argument("--max-miss-rate", type=float, default=0.10)
    args = parser.parse_args(argv)
    for alpha in args.alpha:
        started = time.perf_counter()
        replayed = replay_fixed(DayWorkload(args.seed, alpha), hashing=args.hashing)
        elapsed = time.perf_counter() - started
        print(f"seed {args.seed}, alpha {alpha}, {args.hashing} hashing: replayed in {elapsed:.1f} s")
        print(f"  (of {len(SCORED_MINUTES)} scored minutes, those at most {args.max_miss_rate})")
        print("\n".join(_summary(replayed, args.max_miss_rate)))


if __name__ == "__main__":
    main()
