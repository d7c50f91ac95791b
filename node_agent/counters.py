"""Per-interval deltas from memcached's life-long counters, across restarts (pure).

The rule for a reset: when memcached restarted (its ``pid`` changed, its ``uptime`` went down)
or a counter went down (``stats reset``), the new counters ARE the interval's figures: they count
exactly what the new process (or the reset counters) saw since it began, none of which was
published before, since the old baseline belonged to the old process. So nothing is negative
and nothing is counted twice; what the old process served between the last sample and its end
is lost, an undercount of at most one interval. Publishing nothing for that interval instead
would lose the new process's first GETs as well, and the scaler would read a quieter node than
the truth for no gain.
"""

from __future__ import annotations

from dataclasses import dataclass

from node_agent.memcached import Counters


@dataclass(frozen=True)
class IntervalCounts:
    gets: int
    hits: int
    restarted: bool = False


def restarted(previous: Counters, current: Counters) -> bool:
    """Whether ``current`` cannot continue ``previous``: another process, or counters that went back."""
    return (
        current.pid != previous.pid
        or current.uptime < previous.uptime
        or current.cmd_get < previous.cmd_get
        or current.get_hits < previous.get_hits
    )


def interval_counts(previous: Counters | None, current: Counters) -> IntervalCounts | None:
    """The GETs and hits since ``previous``; None for the first sample (it is only a baseline)."""
    if previous is None:
        return None
    if restarted(previous, current):
        gets, hits, reset = current.cmd_get, current.get_hits, True
    else:
        gets, hits, reset = current.cmd_get - previous.cmd_get, current.get_hits - previous.get_hits, False
    # Two counters read at one instant cannot have more hits than GETs; never publish it if they did.
    return IntervalCounts(gets, min(hits, gets), reset)
