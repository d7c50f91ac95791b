"""A day of cache traffic for the decision-quality benchmark, minute by minute, deterministic per seed.

The day runs from 23:00 the evening before (a warm-up hour, never scored) to 24:00: minute
``m`` is the clock time ``clock(m)``, minute 60 is 00:00 of the scored day. Its shape:

    clock         GETs/min (mean M)   active base keys    what happens
    23:00-24:00   1.35 M -> 1.25 M    10 800 -> 10 000    warm-up hour (the evening before)
    00:00-08:00   1.25 M -> 0.5 M     10 000 -> 4 000     night: the trough is at 08:00
    08:00-14:00   0.5 M -> 1.0 M      4 000 -> 8 000      the day builds up
    14:00         1.0 M               8 000               working-set shift: 30 % of ranks get new keys
    14:00-20:00   1.0 M -> 1.5 M      8 000 -> 12 000     up to the peak at 20:00
    18:30-19:00   + a third           ~11 800             flash crowd: 4 000 new keys, 25 % of GETs
    20:00-20:10   1.5 M               12 000              the benchmark withholds metrics (a gap)
    20:00-24:00   1.5 M -> 1.25 M     12 000 -> 10 000    evening

Both the GET rate and the active set follow one cosine with its peak at 20:00 and its trough
(a third of the peak) at 08:00; the rate wobbles by ``RATE_NOISE`` (3 %) minute to minute.
Popularity is Zipf(``alpha``, 0.9 or 1.2) over ranks 1..12 000, and only the active top ranks
are asked for: a small night set that a few nodes hold, a wide evening one that needs many.

At 14:00 a seeded 30 % of the ranks change key (a new catalogue, a deploy that changes key
names): those ranks' keys are cold everywhere at once. The flash crowd (a sale, 18:30-19:00)
asks 4 000 new keys, all equally popular: with Zipf's skew a few hot keys would fit anywhere
and need no capacity, while a flat crowd does. It comes on top of the day's traffic (the
regular GETs keep their rate, the crowd adds a third, so it is 25 % of the minute), as a sale's
visitors add to the usual ones. About 2 % of each minute's GETs are one-off keys, asked once and
never again: compulsory misses, so even an ample pool's miss rate is not 0.

Key ids are ints in disjoint ranges (``key_kind`` names them): base key of rank r is r - 1,
its replacement after the shift ``SHIFTED_IDS + r - 1``, crowd key j ``CROWD_IDS + j``, and
one-off i of minute m ``ONE_OFF_IDS + m * ONE_OFF_STRIDE + i``.

``mean_gets_per_minute`` defaults to 10 000, the rate the benchmark's spec asks for (the regular
traffic's mean; with the crowd the day averages about 10 200, 15.3 M GETs in its 1 500 minutes).
Measured on a 2-core machine: the day through a 4-node tier measuring the curve takes 12 s
(alpha 0.9; 8.5 s at 1.2), the fixed-pool replay of sizes 1..8 17 s (14 s), generating the
requests 3.5 s of either. The scaler's ticks under moto cost far more than the traffic, so the
full rate stays.

A minute's requests come from a generator seeded with (seed, alpha, minute) alone, so they are
the same whatever was asked before and in any order.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from functools import lru_cache

WARMUP_MINUTES = 60  # 23:00-24:00 of the day before: fills the caches, never scored
DAY_MINUTES = 1_440
TOTAL_MINUTES = WARMUP_MINUTES + DAY_MINUTES
SCORED_MINUTES = range(WARMUP_MINUTES, TOTAL_MINUTES)

MEAN_GETS_PER_MINUTE = 10_000
BASE_KEYS = 12_000  # ranks; the active set at the peak
TROUGH_SHARE = 1 / 3  # trough / peak, for both the GET rate and the active set
PEAK_AT = 20 * 60  # minute of the day (20:00); the trough is 12 h before, at 08:00
RATE_NOISE = 0.03

SHIFT_AT = 14 * 60
SHIFT_SHARE = 0.30
CROWD_AT, CROWD_MINUTES = 18 * 60 + 30, 30
CROWD_KEYS = 4_000
CROWD_SHARE = 0.25  # of the minute's GETs, the regular ones keeping their rate
ONE_OFF_SHARE = 0.02
GAP_AT, GAP_MINUTES = 20 * 60, 10

SHIFTED_IDS = 100_000
CROWD_IDS = 200_000
ONE_OFF_IDS = 1_000_000
ONE_OFF_STRIDE = 100_000  # one-off ids per minute; no minute comes near so many GETs


def minute_of_day(minute: int) -> int:
    """Minutes since the scored day's 00:00, wrapping: the warm-up hour is 1380..1439 (23:xx)."""
    return (minute - WARMUP_MINUTES) % DAY_MINUTES


def clock(minute: int) -> str:
    """The wall-clock time of a benchmark minute, "HH:MM": minute 0 is "23:00", 60 is "00:00"."""
    hours, minutes = divmod(minute_of_day(minute), 60)
    return f"{hours:02d}:{minutes:02d}"


def at(hh_mm: str) -> int:
    """The scored day's minute at clock time "HH:MM" (the inverse of ``clock`` past the warm-up)."""
    hours, minutes = map(int, hh_mm.split(":"))
    return WARMUP_MINUTES + hours * 60 + minutes


def key_kind(key: int) -> str:
    """Which part of the workload a key id comes from: "base", "shifted", "crowd" or "one-off"."""
    if key >= ONE_OFF_IDS:
        return "one-off"
    if key >= CROWD_IDS:
        return "crowd"
    return "shifted" if key >= SHIFTED_IDS else "base"


def daily_cycle(minute: int) -> float:
    """1 at the 20:00 peak, ``TROUGH_SHARE`` at the 08:00 trough, a cosine in between."""
    phase = 2 * math.pi * (minute_of_day(minute) - PEAK_AT) / DAY_MINUTES
    return (1 + TROUGH_SHARE) / 2 + (1 - TROUGH_SHARE) / 2 * math.cos(phase)


@dataclass(frozen=True)
class MinuteShape:
    rate: float  # regular GETs in the minute, before the noise (the crowd's come on top)
    active_keys: int  # the top ranks asked for
    crowd: bool
    shifted: bool


@lru_cache(maxsize=4)
def _zipf_cumulative(alpha: float) -> tuple[float, ...]:
    # Cached: the weights of 12 000 ranks are the same for every minute of the day.
    return tuple(itertools.accumulate(rank**-alpha for rank in range(1, BASE_KEYS + 1)))


class DayWorkload:
    """``requests(minute)``: the int keys GET in that minute, the same for the same (seed, alpha)."""

    def __init__(self, seed: int, alpha: float, *, mean_gets_per_minute: int = MEAN_GETS_PER_MINUTE) -> None:
        self.seed, self.alpha, self.mean_gets_per_minute = seed, alpha, mean_gets_per_minute
        self._cumulative = list(_zipf_cumulative(alpha))
        shift_rng = random.Random(f"{seed}:{alpha}:shift")
        self.shifted_ranks = frozenset(
            index + 1 for index in shift_rng.sample(range(BASE_KEYS), round(BASE_KEYS * SHIFT_SHARE))
        )
        self._before = list(range(BASE_KEYS))  # key id by rank - 1
        self._after = [SHIFTED_IDS + i if i + 1 in self.shifted_ranks else i for i in range(BASE_KEYS)]

    @property
    def gap_minutes(self) -> range:
        """20:00-20:10 of the scored day, when the benchmark withholds metrics; traffic is as usual."""
        return range(at("20:00"), at("20:00") + GAP_MINUTES)

    @property
    def crowd_minutes(self) -> range:
        """18:30-19:00 of the scored day: the flash crowd's 30 minutes."""
        return range(at("18:30"), at("18:30") + CROWD_MINUTES)

    def shape(self, minute: int) -> MinuteShape:
        """The day's shape at ``minute`` (0 .. ``TOTAL_MINUTES`` - 1)."""
        if not 0 <= minute < TOTAL_MINUTES:
            raise ValueError(f"minute must be in 0..{TOTAL_MINUTES - 1}, got {minute}")
        cycle = daily_cycle(minute)
        return MinuteShape(
            rate=self.mean_gets_per_minute * cycle / ((1 + TROUGH_SHARE) / 2),
            active_keys=round(BASE_KEYS * cycle),
            crowd=minute in self.crowd_minutes,
            shifted=minute >= at("14:00"),
        )

    def requests(self, minute: int) -> list[int]:
        """The keys GET in ``minute``, in arrival order."""
        now = self.shape(minute)
        # One generator per (seed, alpha, minute): a minute never depends on which ran before.
        rng = random.Random(f"{self.seed}:{self.alpha}:{minute}")
        regular = max(0, round(now.rate * (1 + rng.gauss(0, RATE_NOISE))))
        population = (self._after if now.shifted else self._before)[: now.active_keys]
        cumulative = self._cumulative[: now.active_keys]
        count = regular
        if now.crowd:
            population, cumulative = self._with_crowd(population, cumulative)
            count = round(regular / (1 - CROWD_SHARE))
        keys = rng.choices(population, cum_weights=cumulative, k=count)
        self._add_one_offs(keys, rng, minute)
        return keys

    @staticmethod
    def _with_crowd(population: list[int], cumulative: list[float]) -> tuple[list[int], list[float]]:
        """The crowd's keys appended, equally weighted, with ``CROWD_SHARE`` of the total weight."""
        base_total = cumulative[-1]
        each = base_total * CROWD_SHARE / (1 - CROWD_SHARE) / CROWD_KEYS
        crowd_cumulative = [base_total + each * (j + 1) for j in range(CROWD_KEYS)]
        return population + list(range(CROWD_IDS, CROWD_IDS + CROWD_KEYS)), cumulative + crowd_cumulative

    @staticmethod
    def _add_one_offs(keys: list[int], rng: random.Random, minute: int) -> None:
        """Replace ``ONE_OFF_SHARE`` of the GETs, at random places, by keys asked only this once."""
        places = rng.sample(range(len(keys)), round(len(keys) * ONE_OFF_SHARE))
        first = ONE_OFF_IDS + minute * ONE_OFF_STRIDE
        for index, place in enumerate(places):
            keys[place] = first + index
