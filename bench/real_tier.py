"""The predictive policy fed by the node agent's own curve, on real memcached, next to the model.

    .venv/bin/python -m bench.real_tier                     # seed 0, α 0.9, the first 240 minutes

Replays the first ``--minutes`` of ``bench.decisions``' day (seed 0, α 0.9) twice with the
``predictive`` policy and the curve on: (a) through ``CacheTier(curve=True)``, the simulated
``HitsWithin``, as ``bench.decisions`` does; (b) through ``MemcachedTier``: a real memcached and
a ``python -m node_agent --curve-items`` per running instance, the agents publishing their own
curve to a moto server on a free loopback port, which the in-process scaler reads too.

A node holds what the replay's nodes hold: ``-m 2`` with one slab class of 1,680-byte chunks
(``-o slab_sizes=1680``) and 1,400-byte values is two 1 MB pages of 624 items, 1,248 items, and
the agents' curve is for ``CAPACITY`` (1,250) items. New nodes serve after ``BOOT_MINUTES`` in
both runs. Both runs see the same GETs (``--mean-gets``, scaled down from the day's 10,000 so a
run stays within minutes) and neither withholds metrics (the gap is at 20:00, past 240 minutes).
Costs and violations are scored by ``bench.score`` against the oracle of the simulated fixed pools.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

from bench.fixed_pools import replay_fixed
from bench.replay import BOOT_MINUTES, CAPACITY, ENVIRONMENT, MAX_MISS_RATE, START, Setup, Tier, replay
from bench.score import oracle, score
from bench.workload import WARMUP_MINUTES
from sim.memcached_tier import MemcachedTier

SEED = 0
ALPHA = 0.9
MINUTES = 240
MEAN_GETS = 2_000
MEMORY_MB = 2
VALUE_BYTES = 1_400
CHUNK_BYTES = 1_680  # 1 MB / 1,680 = 624 items a page; an item of 1,400 bytes and its key fits
SIMULATED = "simulated curve"
AGENTS = "agents' curve"


class CurveCount:
    """Per minute, the intervals nodes published (``GetRequests``) and those with a curve
    (``HitsWithin`` at factor 1), read back from the emulator's store after each tick."""

    def __init__(self) -> None:
        self.intervals = 0
        self.curves = 0

    def __call__(self, minute: int, decision: dict[str, Any]) -> None:
        from moto.cloudwatch.models import cloudwatch_backends
        from moto.core import DEFAULT_ACCOUNT_ID

        backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][ENVIRONMENT["AWS_DEFAULT_REGION"]]
        begin = (START + timedelta(minutes=minute)).replace(tzinfo=None)
        end = begin + timedelta(minutes=1)
        for datum in backend.metric_data:
            stamp = (
                datum.timestamp.astimezone(UTC).replace(tzinfo=None)
                if datum.timestamp.tzinfo
                else datum.timestamp
            )
            if not begin <= stamp < end:
                continue
            dimensions = {dimension.name: dimension.value for dimension in datum.dimensions}
            if datum.name == "GetRequests":
                self.intervals += 1
            elif datum.name == "HitsWithin" and dimensions.get("CapacityFactor") == "1":
                self.curves += 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def real_tier_factory(items: list[dict[str, tuple[int, int]]]) -> Callable[[Setup], Tier]:
    """Makes ``MemcachedTier``s sized like the replay's nodes; ``items`` gets each one's."""

    def make(setup: Setup) -> Tier:
        tier = MemcachedTier(
            agent_env={**os.environ, "NODE_AGENT_CURVE_ITEMS": str(CAPACITY)},
            memory_mb=MEMORY_MB,
            value_bytes=VALUE_BYTES,
            memcached_args=("-o", f"slab_sizes={CHUNK_BYTES}"),
            boot_minutes=BOOT_MINUTES,
        )
        stop = tier.stop

        def stop_after_counting() -> None:
            if tier.node_ids:
                items.append(tier.items())
            stop()

        tier.stop = stop_after_counting  # type: ignore[method-assign]
        return tier

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_tier", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=MINUTES, help="warm-up hour included")
    parser.add_argument("--mean-gets", type=int, default=MEAN_GETS, help="GETs a minute at the day's mean")
    args = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request to the moto server
    setup = Setup(SEED, ALPHA, curve=True, gap=False, mean_gets=args.mean_gets, minutes=args.minutes)
    fixed = replay_fixed(setup.workload(), range(1, 9), capacity=CAPACITY, minutes=range(args.minutes))
    best = oracle({size: rows[WARMUP_MINUTES:] for size, rows in fixed.items()}, MAX_MISS_RATE, BOOT_MINUTES)
    rows = []
    items: list[dict[str, tuple[int, int]]] = []
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    for name in (SIMULATED, AGENTS):
        counted = CurveCount()
        began = time.perf_counter()
        if name == SIMULATED:
            outcome = replay(setup, name, policy="predictive", progress=counted)
        else:
            server.start()
            try:
                endpoint = f"http://127.0.0.1:{port}"
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
                outcome = replay(
                    setup,
                    name,
                    policy="predictive",
                    progress=counted,
                    tier=real_tier_factory(items),
                    endpoint=endpoint,
                )
            finally:
                server.stop()
        seconds = time.perf_counter() - began
        rows.append((score(outcome.run, best, MAX_MISS_RATE), counted, seconds, outcome.median_tick_ms))
    scored = args.minutes - WARMUP_MINUTES
    print(
        f"\n### seed {SEED}, α {ALPHA}, predictive with the curve: minutes 0-{args.minutes} "
        f"({scored} scored), {args.mean_gets:,} GETs a minute at the mean\n"
    )
    print(
        "| curve | cost (node-min) | SLO-violation min | avoidable | actions | misses "
        "| intervals with a curve | without | wall time |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for result, counted, seconds, _ in rows:
        print(
            f"| {result.name} | {result.cost} | {result.violation_min} | {result.avoidable_violation_min} "
            f"| {result.changes} | {result.misses} | {counted.curves} | {counted.intervals - counted.curves} "
            f"| {seconds:.0f} s |"
        )
    print(f"\noracle lower bound: {best.lower_bound} node-minutes over the {scored} scored minutes")
    for node_items in items:
        counts = [count for count, _ in node_items.values()]
        limit = {maxbytes for _, maxbytes in node_items.values()}
        print(
            f"memcached at the end: {len(counts)} nodes, curr_items {min(counts)}-{max(counts)} "
            f"(median {statistics.median(counts):.0f}) of limit_maxbytes {sorted(limit)}; "
            f"the agents' curve is for {CAPACITY} items"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
