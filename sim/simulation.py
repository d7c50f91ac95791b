"""One simulated minute at a time: the front-end, the cache tier, the workload and the metrics.

The local stack calls ``step(T)`` and then runs the scaler's tick at T, so every tick reads the
minute [T − 60 s, T) that the step just published.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sim.aws import Cloud
from sim.frontend import Frontend
from sim.memcached_tier import MemcachedTier
from sim.tier import BOOT_MINUTES, CacheTier
from sim.workload import NODE_CAPACITY, Workload

MINUTE = timedelta(minutes=1)


def _minute_of(moment: datetime) -> datetime:
    # A naive time is taken as UTC, like the scaler's own tick times.
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(second=0, microsecond=0)


class Simulation:
    """A cache tier with its workload, run against the scaler's API and its AWS (or moto).

    ``step(t)`` simulates workload minute ``(t − start) // 1 min`` in the window [t − 60 s, t):
    so the first ``step(start)`` is minute 0. ``start`` defaults to the first step's ``t``.
    """

    def __init__(
        self,
        pool_name: str,
        api_url: str,
        token: str | None,
        *,
        seed: int = 0,
        start: datetime | None = None,
        frontend_port: int = 0,
        secret: str | None = None,
        capacity: int = NODE_CAPACITY,
        boot_minutes: int = BOOT_MINUTES,
        cloud: Cloud | None = None,
        tier: CacheTier | MemcachedTier | None = None,
    ) -> None:
        self.pool_name = pool_name
        self.start_time = None if start is None else _minute_of(start)
        self.workload = Workload(seed)
        # A MemcachedTier's nodes are real memcached processes whose own agents publish.
        self.tier = tier if tier is not None else CacheTier(capacity, boot_minutes)
        self.cloud = cloud if cloud is not None else Cloud()
        self.frontend = Frontend(api_url, token, port=frontend_port, secret=secret)

    @property
    def url(self) -> str:
        """The front-end's notification URL, for the scaler's ``FRONTEND_NOTIFY_URL``."""
        return self.frontend.url

    def start(self) -> None:
        self.frontend.start()

    def stop(self) -> None:
        self.frontend.stop()
        if isinstance(self.tier, MemcachedTier):
            self.tier.stop()

    def __enter__(self) -> Simulation:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def step(self, t: datetime) -> dict[str, Any]:
        """Simulate the minute before ``t`` and publish it; a summary of what the nodes saw.

        Order matters: drains are confirmed first, so the scaler terminates those nodes and the
        sync that follows drops them; traffic is routed by the list the front-end holds now.
        AWS errors propagate (the caller decides whether to skip the minute); the API's do not.
        """
        end = _minute_of(t)
        if self.start_time is None:
            self.start_time = end
        minute = (end - self.start_time) // MINUTE
        confirmed = self.frontend.confirm_drains()
        self.tier.sync(self.cloud.running_pool_instances(self.pool_name), minute)
        routing = self.frontend.routing_ids()
        keys = self.workload.requests(minute)
        counts = self.tier.serve(keys, routing)
        if isinstance(self.tier, MemcachedTier):
            self.tier.publish(end)  # each node's agent samples memcached and publishes
        else:
            self.cloud.publish(counts, end)
        gets = sum(node_gets for node_gets, _ in counts.values())
        hits = sum(node_hits for _, node_hits in counts.values())
        return {
            "minute": minute,
            "requests": len(keys),  # all GETs, those that failed at the front-end included
            "gets": gets,  # what the nodes counted and published
            "hits": hits,
            "miss_rate": round(1 - hits / gets, 4) if gets else None,
            "nodes": len(counts),  # serving (booted) nodes
            "booting": len(self.tier.node_ids) - len(counts),
            "routing": len(routing),
            "confirmed": confirmed,
        }
