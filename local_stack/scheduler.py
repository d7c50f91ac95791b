"""The local scheduler: invokes the real scheduled function every ``TICK_SECONDS`` real seconds.

In a simulation each tick is one simulated minute later than the last (SPEC's clock section:
the event time is the simulation's clock); otherwise the event time is the real clock.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

BeforeTick = Callable[[datetime], dict[str, Any] | None]


def scheduled_event(moment: datetime) -> dict[str, Any]:
    """What EventBridge sends a scheduled Lambda, at ``moment``."""
    return {
        "version": "0",
        "id": f"local-{moment:%Y%m%dT%H%M%S}",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [],
        "detail": {},
    }


class SimulatedClock:
    """One simulated minute per call, from ``start``."""

    def __init__(self, start: datetime) -> None:
        self.next = start

    def __call__(self) -> datetime:
        moment, self.next = self.next, self.next + timedelta(minutes=1)
        return moment


def real_clock() -> datetime:
    return datetime.now(UTC)


def tick_line(decision: dict[str, Any], sim: dict[str, Any] | None) -> str:
    """One terminal line per tick: time, miss rate, pool size, action and reason."""
    rate = decision.get("miss_rate")
    shown = "  -  " if rate is None else f"{rate:5.3f}"
    size = decision.get("target_size", "?")
    traffic = f"  gets {sim['gets']:>5}" if sim and "gets" in sim else ""
    replayed = "  (decided already: same minute)" if decision.get("replayed") else ""
    return (
        f"{decision.get('time', '?')[11:16]}  miss {shown}  pool {size}{traffic}  "
        f"{decision.get('action') or '-':<9}  {decision.get('reason', '')}{replayed}"
    )


class Scheduler(threading.Thread):
    """Calls ``invoke(event)`` every ``interval`` seconds until stopped; prints one line a tick."""

    def __init__(
        self,
        interval: float,
        clock: Callable[[], datetime],
        invoke: Callable[[dict[str, Any]], dict[str, Any]],
        before_tick: BeforeTick | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        super().__init__(name="local-scheduler", daemon=True)
        self.interval, self.clock, self.invoke = interval, clock, invoke
        self.before_tick, self.out = before_tick, out
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.tick_once()

    def tick_once(self) -> None:
        moment = self.clock()
        try:
            sim = self.before_tick(moment) if self.before_tick else None
            decision = self.invoke(scheduled_event(moment))
            self.out(tick_line(decision, sim))
        except Exception:  # a failed tick is reported and the next one still runs
            self.out(f"{moment:%H:%M}  tick failed:\n{traceback.format_exc(limit=3)}")

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=30)
