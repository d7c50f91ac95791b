"""The local scheduler, with its clock and the function it invokes injected."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from local_stack.scheduler import Scheduler, SimulatedClock, scheduled_event, tick_line

START = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


def test_a_simulated_clock_advances_one_minute_per_tick() -> None:
    clock = SimulatedClock(START)
    assert [clock().strftime("%H:%M") for _ in range(3)] == ["00:00", "00:01", "00:02"]


def test_each_tick_steps_the_simulation_then_invokes_the_function_at_that_time() -> None:
    calls: list[tuple[str, Any]] = []
    lines: list[str] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        calls.append(("tick", event["time"]))
        return {
            "time": event["time"],
            "miss_rate": 0.25,
            "target_size": 2,
            "action": "scale_out",
            "reason": "r",
        }

    def step(moment: datetime) -> dict[str, Any]:
        calls.append(("sim", moment.isoformat()))
        return {"gets": 1200}

    scheduler = Scheduler(1.0, SimulatedClock(START), invoke, step, out=lines.append)
    scheduler.tick_once()
    scheduler.tick_once()
    assert calls == [
        ("sim", "2026-11-26T00:00:00+00:00"),
        ("tick", "2026-11-26T00:00:00Z"),
        ("sim", "2026-11-26T00:01:00+00:00"),
        ("tick", "2026-11-26T00:01:00Z"),
    ]
    assert lines[0] == "00:00  miss 0.250  pool 2  gets  1200  scale_out  r"


def test_a_failing_tick_is_reported_and_does_not_stop_the_scheduler() -> None:
    lines: list[str] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("table gone")

    scheduler = Scheduler(1.0, SimulatedClock(START), invoke, out=lines.append)
    scheduler.tick_once()
    scheduler.tick_once()
    assert len(lines) == 2 and "tick failed" in lines[0] and "table gone" in lines[0]


def test_no_data_shows_a_dash() -> None:
    line = tick_line(
        {"time": "2026-11-26T00:05:00Z", "miss_rate": None, "target_size": 1, "action": "hold"}, None
    )
    assert line.startswith("00:05  miss   -    pool 1  hold")


def test_the_event_is_what_eventbridge_sends() -> None:
    event = scheduled_event(START)
    assert event["detail-type"] == "Scheduled Event" and event["time"] == "2026-11-26T00:00:00Z"
