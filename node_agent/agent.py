"""The agent's loop: every interval, sample memcached and publish that interval's figures at once.

Each interval's datapoint is sent right after it is sampled, stamped with the interval's end.
The scaler reads each minute's window [T − 60 s, T) once, at T: a datapoint that reaches
CloudWatch after that read is stored but never counted by any tick. So the agent never holds
figures back to batch them, and a backlog resent late (see ``publisher``) keeps its own
timestamps: it fills CloudWatch's record, not a later window.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from node_agent.counters import IntervalCounts, interval_counts
from node_agent.memcached import Counters, MemcachedDownError
from node_agent.publisher import Datum, Publisher

LOG = logging.getLogger(__name__)

FACTORS: tuple[str, ...] = ("0.125", "0.25", "0.5", "1", "2", "4", "8")
CURVE_DIMENSION = "CapacityFactor"
# Of an interval, the share the publisher may spend retrying; the rest is the next sample's.
SEND_BUDGET_SHARE = 0.8

# What the curve gives for an interval (None: the first sample, a baseline): HitsWithin per
# factor, or None (no curve this time).
CurveSource = Callable[[IntervalCounts | None], Sequence[int] | None]


@dataclass(frozen=True)
class MetricNames:
    """SPEC's metric names, each overridable by the same environment variable as the scaler's."""

    namespace: str = "Memcache"
    dimension: str = "NodeId"
    gets: str = "GetRequests"
    hits: str = "Hits"
    hits_within: str = "HitsWithin"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> MetricNames:
        return cls(
            namespace=env.get("METRICS_NAMESPACE") or cls.namespace,
            dimension=env.get("METRICS_DIMENSION") or cls.dimension,
            gets=env.get("METRIC_GETS") or cls.gets,
            hits=env.get("METRIC_HITS") or cls.hits,
            hits_within=env.get("METRIC_HITS_WITHIN") or cls.hits_within,
        )


def interval_datums(
    names: MetricNames, node_id: str, at: datetime, counts: IntervalCounts, within: Sequence[int] | None
) -> list[Datum]:
    """``GetRequests`` and ``Hits`` (and ``HitsWithin`` per factor when given), stamped ``at``."""
    node = {"Name": names.dimension, "Value": node_id}

    def datum(metric: str, value: int, extra: tuple[dict[str, str], ...] = ()) -> Datum:
        return {
            "MetricName": metric,
            "Dimensions": [node, *extra],
            "Timestamp": at,
            "Value": float(value),
            "Unit": "Count",
        }

    data = [datum(names.gets, counts.gets), datum(names.hits, counts.hits)]
    if within is not None:
        data.extend(
            datum(names.hits_within, value, ({"Name": CURVE_DIMENSION, "Value": factor},))
            for factor, value in zip(FACTORS, within, strict=True)
        )
    return data


class Agent:
    """One node's sampler and publisher; ``now`` and ``sleep`` are injected so tests step time."""

    def __init__(
        self,
        *,
        read_counters: Callable[[], Counters],
        publisher: Publisher,
        node_id: str,
        names: MetricNames,
        interval_seconds: float,
        now: Callable[[], datetime],
        sleep: Callable[[float], None],
        curve: CurveSource | None = None,
    ) -> None:
        self._read_counters = read_counters
        self.publisher = publisher
        self.node_id = node_id
        self.names = names
        self.interval = timedelta(seconds=interval_seconds)
        self._now = now
        self._sleep = sleep
        self._curve = curve
        self.baseline: Counters | None = None

    def step(self, stamp: datetime | None = None) -> list[Datum]:
        """Sample once and send that interval's datums (and any kept ones); the datums made.

        ``stamp`` is the datums' timestamp when the interval's time is not the wall clock's (an
        external clock, see ``node_agent.clock_file``); the retry budget is always real time.
        """
        at = self._now()
        deadline = at + self.interval * SEND_BUDGET_SHARE
        try:
            counters = self._read_counters()
        except MemcachedDownError as exc:
            # Nothing for this interval: the scaler sees a silent node, which is the truth.
            LOG.warning("memcached unreachable, nothing published for this interval: %s", exc)
            if self.publisher.backlog:
                self.publisher.send([], deadline)
            return []
        counts = interval_counts(self.baseline, counters)
        if counts is not None and counts.restarted:
            LOG.warning(
                "memcached restarted or reset (pid %s, uptime %ss): new baseline",
                counters.pid,
                counters.uptime,
            )
        elif self.baseline is None:
            LOG.info(
                "baseline: memcached pid %s, uptime %ss, %s items, %s bytes",
                counters.pid,
                counters.uptime,
                counters.curr_items,
                counters.limit_maxbytes,
            )
        self.baseline = counters
        within = self._curve(counts) if self._curve is not None else None
        if counts is None:
            return []
        datums = interval_datums(self.names, self.node_id, stamp or at, counts, within)
        LOG.debug(
            "gets=%d hits=%d items=%d evictions=%d curve=%s",
            counts.gets,
            counts.hits,
            counters.curr_items,
            counters.evictions,
            within,
        )
        self.publisher.send(datums, deadline)
        return datums

    def run(self, intervals: int | None = None) -> None:
        """Step every interval on a fixed grid (``intervals`` times, or for ever)."""
        next_at = self._now()
        done = 0
        while intervals is None or done < intervals:
            self.step()
            done += 1
            next_at += self.interval
            now = self._now()
            while next_at <= now:
                # A step that overran (a slow retry, a suspended host) skips the grid points it missed.
                next_at += self.interval
            if intervals is None or done < intervals:
                self._sleep((next_at - now).total_seconds())
