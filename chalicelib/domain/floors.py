"""Scheduled floors: windows of the week during which ``min_pool_size`` is raised (pure).

What EC2 Auto Scaling's scheduled actions and KEDA's cron scaler do for a known peak: a window
starts at ``start`` (UTC, ``HH:MM``) on each of its ``days`` (every day without them) and lasts
``duration_minutes``; it may run past midnight, and past Sunday into Monday. While windows are
open, the highest of their ``min_pool_size`` raises the config's (capped by ``max_pool_size``).
The tick applies it in SPEC's step 2 (the bounds), at its T: the event's clock, never the wall's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.clock import iso

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
DAY_MINUTES = 24 * 60
WEEK_MINUTES = 7 * DAY_MINUTES
MAX_FLOORS = 24
_START = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_KEYS = ("start", "duration_minutes", "min_pool_size", "days")


@dataclass(frozen=True)
class Floor:
    start: str  # "HH:MM", UTC
    duration_minutes: int
    min_pool_size: int
    days: tuple[str, ...] = ()  # empty: every day

    @property
    def start_minute(self) -> int:
        hours, minutes = self.start.split(":")
        return int(hours) * 60 + int(minutes)

    def describe(self) -> str:
        """The window in words, as the tick's reason names it."""
        days = f"on {', '.join(self.days)}" if self.days else "every day"
        return f"{self.start} UTC for {self.duration_minutes} min {days}"

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "start": self.start,
            "duration_minutes": self.duration_minutes,
            "min_pool_size": self.min_pool_size,
        }
        if self.days:
            data["days"] = list(self.days)
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Floor:
        return cls(
            str(data["start"]),
            int(data["duration_minutes"]),
            int(data["min_pool_size"]),
            tuple(data.get("days") or ()),
        )


@dataclass(frozen=True)
class OpenFloor:
    """A window open at some T: this occurrence's start and end (the end excluded)."""

    floor: Floor
    began: datetime
    ends: datetime


def open_at(floor: Floor, now: datetime) -> OpenFloor | None:
    """The occurrence of ``floor`` open at ``now`` (the one ending last if two overlap), or None."""
    minute = now.replace(second=0, microsecond=0)
    of_week = minute.weekday() * DAY_MINUTES + minute.hour * 60 + minute.minute
    days = [DAYS.index(day) for day in floor.days] if floor.days else range(7)
    offsets = [(of_week - day * DAY_MINUTES - floor.start_minute) % WEEK_MINUTES for day in days]
    open_offsets = [offset for offset in offsets if offset < floor.duration_minutes]
    if not open_offsets:
        return None
    began = minute - timedelta(minutes=min(open_offsets))
    return OpenFloor(floor, began, began + timedelta(minutes=floor.duration_minutes))


def highest_open(floors: Sequence[Mapping[str, Any]], now: datetime) -> OpenFloor | None:
    """The open window with the highest ``min_pool_size`` at ``now`` (ties: the one ending last)."""
    opened = [found for data in floors if (found := open_at(Floor.from_data(data), now)) is not None]
    return max(opened, key=lambda found: (found.floor.min_pool_size, found.ends), default=None)


@dataclass(frozen=True)
class Raised:
    """What an open floor did to a tick's bounds."""

    opened: OpenFloor
    configured: int  # the config's own min_pool_size
    min_pool_size: int  # the one the tick decides with
    max_pool_size: int

    @property
    def note(self) -> str:
        """The clause of the tick's reason that names the floor."""
        floor = self.opened.floor
        capped = (
            f", capped at max_pool_size {self.max_pool_size}"
            if self.min_pool_size < floor.min_pool_size
            else ""
        )
        return (
            f"scheduled floor {floor.min_pool_size} ({floor.describe()}, until {iso(self.opened.ends)}"
            f"{capped}) raises min_pool_size {self.configured} → {self.min_pool_size}"
        )

    def to_data(self) -> dict[str, Any]:
        """The tick record's ``scheduled_floor``."""
        return {
            "min_pool_size": self.min_pool_size,
            "window": self.opened.floor.to_data(),
            "began": iso(self.opened.began),
            "ends": iso(self.opened.ends),
        }


def with_floor(config: Mapping[str, Any], now: datetime) -> tuple[dict[str, Any], Raised | None]:
    """The config the tick decides with at ``now``, and what the open floor did (None if nothing).

    The floor raises ``min_pool_size``, never above ``max_pool_size``; a floor at or below the
    configured minimum changes nothing and is not reported.
    """
    effective = dict(config)
    found = highest_open(config.get("scheduled_floors") or (), now)
    low, high = config["min_pool_size"], config["max_pool_size"]
    if found is None or found.floor.min_pool_size <= low or low >= high:
        return effective, None
    effective["min_pool_size"] = min(found.floor.min_pool_size, high)
    return effective, Raised(found, low, effective["min_pool_size"], high)


class FloorsError(ValueError):
    """Every problem of a ``scheduled_floors`` value, each prefixed with the window's index."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_floors(value: Any, *, max_size: int) -> list[dict[str, Any]]:
    """A ``scheduled_floors`` value checked window by window into its stored shape.

    Raises :class:`FloorsError` with every problem found, not only the first.
    """
    if not isinstance(value, list):
        raise FloorsError(["must be a list of windows"])
    if len(value) > MAX_FLOORS:
        raise FloorsError([f"at most {MAX_FLOORS} windows"])
    problems: list[str] = []
    parsed: list[dict[str, Any]] = []
    for index, window in enumerate(value):
        found = _window_problems(window, max_size)
        if isinstance(found, list):
            problems.extend(f"[{index}]{problem}" for problem in found)
        else:
            parsed.append(found.to_data())
    if problems:
        raise FloorsError(problems)
    return parsed


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _window_problems(window: Any, max_size: int) -> Floor | list[str]:
    """One window as a :class:`Floor`, or the list of what is wrong with it."""
    if not isinstance(window, dict):
        return [": must be an object with start, duration_minutes and min_pool_size"]
    problems = [f".{key}: unknown field" for key in window if key not in _KEYS]
    problems += [f".{key}: required" for key in _KEYS[:3] if key not in window]
    start = window.get("start")
    matched = _START.fullmatch(start.strip()) if isinstance(start, str) else None
    if "start" in window and matched is None:
        problems.append(f".start: must be HH:MM (UTC, 00:00 to 23:59), got {start!r}")
    days = window.get("days")
    if "days" in window:
        if not isinstance(days, list) or not days or not all(isinstance(day, str) for day in days):
            problems.append(f".days: must be a non-empty list of {', '.join(DAYS)} (or left out: every day)")
            days = None
        else:
            unknown = [day for day in days if day not in DAYS]
            if unknown:
                problems.append(f".days: {', '.join(map(repr, unknown))} not one of {', '.join(DAYS)}")
            elif len(set(days)) < len(days):
                problems.append(".days: a day given twice")
    longest = WEEK_MINUTES if "days" in window else DAY_MINUTES
    duration = window.get("duration_minutes")
    if "duration_minutes" in window and not (_is_int(duration) and 1 <= duration <= longest):
        every = "with days: at most a week" if "days" in window else "every day: at most a day"
        problems.append(f".duration_minutes: must be an integer 1..{longest} ({every}), got {duration!r}")
    size = window.get("min_pool_size")
    if "min_pool_size" in window and not (_is_int(size) and 1 <= size <= max_size):
        problems.append(f".min_pool_size: must be an integer 1..{max_size}, got {size!r}")
    if problems or matched is None:
        return problems
    ordered = tuple(sorted(days or (), key=DAYS.index))
    return Floor(f"{int(matched[1]):02d}:{matched[2]}", duration, size, ordered)
