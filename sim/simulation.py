"""One simulated minute at a time: the front-end, the cache tier, the workload and the metrics.

The local stack calls ``step(T)`` and then runs the scaler's tick at T, so every tick reads the
minute [T − 60 s, T) that the step just published.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sim.aws import Cloud
from sim.frontend import Frontend
from sim.kit_frontend import KitFrontend
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
        # Real memcached gets the real front-end: the kit, which moves keys warm before it
        # switches. The model tier keeps the simulated one, which switches cold.
        self.frontend: Frontend | KitFrontend
        if isinstance(self.tier, MemcachedTier):
            tier = self.tier
            self.frontend = KitFrontend(
                api_url, token, lambda node: tier.address(node.id), port=frontend_port, secret=secret
            )
        else:
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
        if isinstance(self.frontend, KitFrontend):
            return self._kit_step(end, minute)
        confirmed = self.frontend.confirm_drains()
        self.tier.sync(self.cloud.running_pool_instances(self.pool_name), minute)
        routing = self.frontend.routing_ids()
        keys = self.workload.requests(minute)
        counts = self.tier.serve(keys, routing)
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

    def _kit_step(self, end: datetime, minute: int) -> dict[str, Any]:
        """The minute on real memcached behind the kit: the new instances' memcached start, the
        kit applies the notices (copying keys to a new node, or off a draining one and then
        confirming it), the minute's GETs follow the kit's ring, and each agent publishes."""
        assert isinstance(self.frontend, KitFrontend) and isinstance(self.tier, MemcachedTier)
        self.tier.sync(self.cloud.running_pool_instances(self.pool_name), minute)
        moves = self.frontend.apply()
        router = self.frontend.router()
        keys = self.workload.requests(minute)
        served = self.tier.serve_minute(keys, router)
        self.tier.publish(end)  # each node's agent samples memcached and publishes
        client_hits = sum(served.client_hits.values())
        return {
            "minute": minute,
            "requests": len(keys),
            "gets": served.gets,
            "hits": served.hits,
            "miss_rate": round(1 - served.hits / served.gets, 4) if served.gets else None,
            # What the front-end itself saw: the miss rate its users had, memcached's counters aside.
            "client_miss_rate": round(1 - client_hits / len(keys), 4) if keys else None,
            "nodes": len(served),
            "booting": len(self.tier.node_ids) - len(served),
            "routing": len(router.node_ids),
            "per_node": {
                node_id: [node.gets, node.hits, served.client_hits.get(node_id, 0)]
                for node_id, node in served.items()
            },
            "moves": [
                {
                    "change": move.change,
                    "sequence": move.sequence,
                    "copied": move.keys_copied,
                    "left": move.keys_left,
                    "seconds": round(move.seconds, 3),
                }
                for move in moves
            ],
            "confirmed": [],  # the kit confirms drains itself, in apply()
        }
