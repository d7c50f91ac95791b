"""A day of GET traffic, deterministic per seed: Zipf popularity, a daily cycle, a flash crowd.

The day is short (``DAY_MINUTES`` = 240) so that someone watching the local stack, at one
simulated minute per 1-2 real seconds, sees the pool grow and shrink again within about five
real minutes. The shape, interpolated linearly between the points of ``DAY_SHAPE``:

    minute   GETs/min        base keys      crowd share  meant to
    0-30        600             150            0         quiet morning: one node holds every key
    30-55    600 -> 2 400    150 -> 2 500      0         ramp: one node is too few, grow to 2, 4
    55-62    2 400 -> 3 000     2 500       0 -> 0.5     a flash crowd of 1 500 new keys arrives
    62-85       3 000           2 500         0.5        the crowd: grow to 8
    85-100   3 000 -> 2 400     2 500       0.5 -> 0     the crowd passes
    100-115  2 400 -> 300    2 500 -> 150      0         evening: traffic and key set fall, shrink
    115-240      300             150           0         night: back to 1 node, long enough to see

2 % of GETs go to keys asked once and never again (compulsory misses), so a quiet pool's miss
rate is about 0.02, not a suspicious 0. Every minute has at least 50 GETs (the default
``min_get_requests``), so the night always has data and can shrink the pool.

Miss rates with seed 0 and nodes of ``NODE_CAPACITY`` = 250 items, the pool held at 1 / 2 / 4 / 8
nodes from minute 0 (mean over the minutes named; the worst minute in brackets):

    quiet (5-30)       0.02 / 0.02 / 0.02 / 0.02   (0.03 at any size)
    ramp (40-45)       0.31 / 0.20 / 0.09 / 0.07
    ramp end (50-55)   0.38 / 0.28 / 0.16 / 0.06
    crowd (65-85)      0.72 / 0.62 / 0.47 / 0.23   (8 nodes: 0.26)
    after it (95-100)  0.48 / 0.39 / 0.29 / 0.18
    evening (105-115)  0.27 / 0.17 / 0.08 / 0.03
    night (120-240)    0.02 / 0.02 / 0.02 / 0.02   (0.04 at any size)

Run against the real tick with max 0.3 / min 0.1 (ratios 2 and 0.5, window 5, one minute of
boot), the pool is 1 until minute 40, then 2, 4 at 42 (the new nodes start cold, so the miss rate
stays high while they warm), 8 at 57, and shrinks to 4 at 105, 2 at 113 and 1 at 119. The
8-node rate in the crowd sits inside the band, so the pool holds rather than flaps. With the
defaults (0.8 / 0.2) nothing here exceeds 0.8 and the pool stays at its minimum.

Popularity is Zipf (alpha 1.0) over ranks: base keys ``k:<rank>`` keep their ranks all day, so
the night's keys are the day's hottest (still cached in the morning) and the ramp adds colder
ones. The crowd's keys ``f<day>:<n>`` are new each day and equally popular (a sale of
``FLASH_KEYS`` new items): with Zipf's skew, its few hot keys would fit in any one node and the
crowd would need no more capacity. Nodes are small (250 items) so that a few thousand GETs a
minute warm a new node within a minute or two; what matters is the key sets' size relative to it.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

DAY_MINUTES = 240
NODE_CAPACITY = 250  # items per node
ZIPF_ALPHA = 1.0
FLASH_KEYS = 1_500
# Keys asked once and never again (compulsory misses): why a quiet pool's miss rate is not 0.
ONE_OFF_SHARE = 0.02
# Minute-to-minute wobble of the request count, so the curve does not look drawn with a ruler.
RATE_NOISE = 0.05

# (minute of day, GETs per minute, active base keys, share of GETs that go to the flash crowd)
DAY_SHAPE: tuple[tuple[int, float, float, float], ...] = (
    (0, 600, 150, 0.0),
    (30, 600, 150, 0.0),
    (55, 2_400, 2_500, 0.0),
    (62, 3_000, 2_500, 0.5),
    (85, 3_000, 2_500, 0.5),
    (100, 2_400, 2_500, 0.0),
    (115, 300, 150, 0.0),
    (DAY_MINUTES, 300, 150, 0.0),
)


@dataclass(frozen=True)
class MinuteShape:
    rate: int  # GETs in the minute, before the noise
    active_keys: int
    flash_share: float


def shape(minute: int) -> MinuteShape:
    """The day's shape at ``minute`` (any integer: the day repeats every ``DAY_MINUTES``)."""
    minute_of_day = minute % DAY_MINUTES
    for (m0, *low), (m1, *high) in itertools.pairwise(DAY_SHAPE):
        if m0 <= minute_of_day <= m1:
            f = (minute_of_day - m0) / (m1 - m0)
            rate, active, flash = (a + (b - a) * f for a, b in zip(low, high, strict=True))
            return MinuteShape(round(rate), round(active), flash)
    raise AssertionError("DAY_SHAPE must cover the whole day")


def _zipf_cumulative(size: int, alpha: float) -> list[float]:
    return list(itertools.accumulate(1.0 / rank**alpha for rank in range(1, size + 1)))


def _rank(cumulative: Sequence[float], point: float, size: int) -> int:
    return bisect.bisect_right(cumulative, point, 0, size) + 1


class Workload:
    """``requests(minute)`` is the same list for the same seed and minute, whatever ran before."""

    def __init__(self, seed: int = 0, alpha: float = ZIPF_ALPHA) -> None:
        self.seed = seed
        self._base = _zipf_cumulative(max(int(point[2]) for point in DAY_SHAPE), alpha)

    def requests(self, minute: int) -> list[str]:
        """The keys GET in ``minute`` (counted from the simulation's start), in arrival order."""
        now = shape(minute)
        # One generator per (seed, minute): a minute's keys never depend on which minutes ran before.
        rng = random.Random(self.seed * 1_000_003 + minute)
        count = max(0, round(now.rate * (1 + rng.gauss(0, RATE_NOISE))))
        day = minute // DAY_MINUTES
        base_total = self._base[now.active_keys - 1]
        keys = []
        for index in range(count):
            if rng.random() < ONE_OFF_SHARE:
                keys.append(f"o:{minute}:{index}")
            elif rng.random() < now.flash_share:
                keys.append(f"f{day}:{rng.randrange(FLASH_KEYS)}")
            else:
                keys.append(f"k:{_rank(self._base, rng.random() * base_total, now.active_keys)}")
        return keys
