"""The history as the routes and the CLI read it, and the clock of the records they write."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.domain.clock import WallClock, wall_clock
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.pool import Pool

DEFAULT_MINUTES = 60
MAX_MINUTES = 7 * 24 * 60
_WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")


def pool_clock(pool: Pool, wall_clock: WallClock = wall_clock) -> datetime:
    """The time stamped on records that routes and operators write: the pool's clock (see
    ``Pool.clock``), so that they sort among the tick records even on a simulated day."""
    return pool.clock(wall_clock())


def parse_minutes(text: str | None) -> int:
    """``minutes`` of a history request, as text (a query parameter, a command-line option)."""
    if text is None:
        return DEFAULT_MINUTES
    if not _WHOLE_NUMBER.fullmatch(text) or not 1 <= int(text) <= MAX_MINUTES:
        raise ValidationError(f"minutes must be an integer from 1 to {MAX_MINUTES}, got {text!r}")
    return int(text)


def read_history(
    store: StateStore, minutes: int, *, wall_clock: WallClock = wall_clock
) -> list[dict[str, Any]]:
    """SPEC's window: the ``minutes`` up to the pool's clock, and any record stamped later."""
    until = store.load_pool().history_until(wall_clock())
    return store.history(minutes, until)
