"""The wall clock, in one place.

SPEC keeps two clocks apart. The *tick clock* (a tick's T, the event's time) drives every
scaling rule; the *wall clock* only stamps what a person reads before any tick ran, leases
between live writers, and the records' expiry. Whatever needs the wall clock takes it as a
parameter defaulting to :func:`wall_clock`, so tests can move it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

WallClock = Callable[[], datetime]


def wall_clock() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)
