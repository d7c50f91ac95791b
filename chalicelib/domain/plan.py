"""A plan: what one decision means for the pool's members and for EC2, written to the pool item
before EC2 is called (write first, act second) and carried out by whoever loads it next.

Pure data. ``to_data``/``from_data`` keep the stored shape that earlier versions wrote, so a plan
in flight across a deployment is still finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TICK = "tick"


@dataclass(frozen=True)
class Launch:
    """One node to launch: RunInstances' ClientToken, and its place in the pool's list."""

    token: str
    slot: int


@dataclass(frozen=True)
class Plan:
    source: str  # "tick", or the route that wrote it ("resize", "set_test_miss_rate")
    label: str  # the decision's label, part of every launch token
    time: str | None  # the tick's T; None for a route's plan
    summary: Mapping[str, Any]  # the decision as SPEC's tick record shows it
    notify: bool = False  # a front-end is told (drain before terminate)
    take_back: tuple[str, ...] = ()  # draining nodes back into service, cache still warm
    launch: tuple[Launch, ...] = ()
    drain: tuple[str, ...] = ()
    # Ended at once: they leave the list, into ``Pool.terminating``, when the plan is written.
    terminate: tuple[str, ...] = ()
    # Without a front-end a replaced node stays listed until EC2 confirms its end; only then is
    # its replacement launched, so a failed terminate never makes a ninth node.
    replacing: tuple[str, ...] = ()
    recent_miss_rates: tuple[float, ...] = ()
    events: tuple[str, ...] = ()  # what the tick observed (launches ready, drains timed out, ...)
    policy_memory: Mapping[str, Any] | None = None
    # The shadow policy's memory after this tick (see ``Pool.shadow_memory``); None: no shadow.
    shadow_memory: Mapping[str, Any] | None = None
    # When its writer wrote it (wall clock): the writer's lease; None until it is claimed.
    claimed_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys a later version may add

    @property
    def mode(self) -> str:
        """SPEC's notification ``mode``."""
        return "automatic" if self.source == TICK else "manual"

    @property
    def by_tick(self) -> bool:
        return self.source == TICK

    @property
    def launch_tokens(self) -> frozenset[str]:
        return frozenset(launch.token for launch in self.launch)

    def to_data(self) -> dict[str, Any]:
        return {
            **self.extra,
            "source": self.source,
            "mode": self.mode,
            "notify": self.notify,
            "time": self.time,
            "label": self.label,
            "summary": dict(self.summary),
            "take_back": list(self.take_back),
            "launch": [{"token": launch.token, "slot": launch.slot} for launch in self.launch],
            "drain": list(self.drain),
            "terminate": list(self.terminate),
            "replacing": list(self.replacing),
            "recent_miss_rates": list(self.recent_miss_rates),
            "events": list(self.events),
            "policy_memory": None if self.policy_memory is None else dict(self.policy_memory),
            "shadow_memory": None if self.shadow_memory is None else dict(self.shadow_memory),
            **({"claimed_at": self.claimed_at} if self.claimed_at is not None else {}),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Plan:
        known = {*cls.__dataclass_fields__, "mode"}
        memory = data.get("policy_memory")
        shadow = data.get("shadow_memory")
        return cls(
            source=str(data.get("source", TICK)),
            label=str(data.get("label", "")),
            time=data.get("time"),
            summary=dict(data.get("summary") or {}),
            notify=bool(data.get("notify", False)),
            take_back=tuple(data.get("take_back", ())),
            launch=tuple(Launch(str(x["token"]), int(x["slot"])) for x in data.get("launch", ())),
            drain=tuple(data.get("drain", ())),
            terminate=tuple(data.get("terminate", ())),
            replacing=tuple(data.get("replacing", ())),
            recent_miss_rates=tuple(float(rate) for rate in data.get("recent_miss_rates", ())),
            events=tuple(data.get("events", ())),
            policy_memory=None if memory is None else dict(memory),
            shadow_memory=None if shadow is None else dict(shadow),
            claimed_at=data.get("claimed_at"),
            extra={key: value for key, value in data.items() if key not in known},
        )
