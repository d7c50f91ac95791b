"""The two clocks, and SPEC's time format, in one place.

SPEC keeps two clocks apart. The *tick clock* (a tick's T, the event's time truncated to the
minute) drives every scaling rule; the *wall clock* only stamps what a person reads before any
tick ran, leases between live writers, and the records' expiry. Whatever needs the wall clock
takes it as a parameter defaulting to :func:`wall_clock`, so tests can move it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

WallClock = Callable[[], datetime]


def wall_clock() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """SPEC's time format: UTC, whole seconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(stamp: str) -> datetime:
    """A stamp in SPEC's format (or any ISO 8601 time) as an aware datetime; naive means UTC."""
    moment = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def tick_time(moment: str | datetime) -> datetime:
    """SPEC's T: the event's time, truncated to the minute, in UTC."""
    if isinstance(moment, str):
        moment = parse_iso(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def seconds_between(earlier: str, later: datetime) -> float:
    """Seconds from the stamp ``earlier`` to ``later``."""
    return (later - parse_iso(earlier)).total_seconds()
