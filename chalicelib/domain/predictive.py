"""The ``predictive`` policy: the smallest pool predicted to keep the miss rate under the maximum.

Pure, like :mod:`chalicelib.domain.policy`: evidence in, a decision and the policy's small memory out.

The ratio rule reacts to the miss rate it sees, and what it sees right after it grows is the
misses of its own cold nodes, so it grows again, then shrinks, then grows. This policy asks a
different question each tick: *which size would keep the miss rate under the maximum?*, and goes
there in one step. The answer comes from, in order of preference:

1. **the miss-ratio curve** (SPEC's optional ``HitsWithin`` by ``CapacityFactor``): with keys spread
   by consistent hashing, a pool of ``n`` nodes gives each of today's ``s`` serving nodes the
   keys of ``s/n`` of a node, which is the same as each node having ``n/s`` times its capacity;
   the curve says how many of the window's GETs would have hit then. Only *warm* nodes (in
   service for ``WARM_MINUTES``) are read when there are any: a node that just joined has an
   empty ghost list and would make every size look too small.
2. **experience**, without a curve: the miss rate that warm, settled pools showed at each load
   per node (GET requests ÷ serving nodes), kept in the policy's memory on the pool item. Today's
   miss rate is carried to ``n`` nodes along the slope those figures show on log-log axes
   (``(s/n) ** slope``; until they span enough load, a shallow slope to grow and a steep one to
   shrink, steeper still where the figures gathered so far show it). Experience errs most where
   it matters, shrinking, so without a curve the policy also learns from its own scale-ins:

   - each scale-in's first settled tick is compared with what was predicted for it, and later
     predictions of a smaller size are multiplied by the running mean of those ratios (``bias``),
     unless the ratio had fallen by more than ``1 - DECAYED`` five minutes later: then that
     first tick was mostly the moved keys' cold misses (a cold front-end), and the later ratio
     counts;
   - a size the pool grew from is not shrunk to again within ``SMALL_KEPT_MINUTES`` unless its
     load per node would be a band lower than when it grew (``small``);
   - it shrinks one node at a time, where experience is surest.

Its rule, in SPEC's terms (steps 1-3 and 6 are the tick's, as for every policy):

- the goal is ``HEADROOM`` × ``max_miss_rate_threshold``; the *need* is the smallest size in
  ``[min_pool_size, max_pool_size]`` predicted to meet it (``max_pool_size`` when none does);
- need above the pool size → scale out to the need at once (launching nodes count toward the
  size, so a further scale-out while they boot adds only what the prediction still misses);
- need below the pool size → scale in to the largest need of the last ``scale_in_window_minutes``
  ticks (a need below today's size is reckoned with ``SHRINK_HEADROOM_CURVE`` or, from
  experience, ``SHRINK_HEADROOM``, instead of ``HEADROOM``), only when every one of those ticks
  had data, predicted a size below the current one, and the pool is settled (nothing launching or
  draining, every serving node warm). A tick without data breaks the run, so a metrics gap never
  shrinks the pool;
- otherwise hold. ``min_miss_rate_threshold`` and the ratios are the ratio policy's and are not
  used here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib.domain.clock import parse_iso, seconds_between
from chalicelib.domain.policy import HOLD, SCALE_IN, SCALE_OUT, Decision, Observation, bounds

POLICY = "predictive"
FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # SPEC's CapacityFactor values
HEADROOM = 0.95  # aim below the maximum: predictions err, and moved keys start cold
# A smaller size must be predicted this far under the maximum: between the two, the pool holds
# (without the gap a prediction that wobbles around the goal would shrink and grow in turn).
# The curve measures the smaller size; experience carries today's figure there, and errs more.
SHRINK_HEADROOM_CURVE = 0.94
SHRINK_HEADROOM = 0.9
# After growing, no shrink for this long: the need that made it grow rarely vanishes so soon.
GROWN_SETTLE_MINUTES = 15
WARM_MINUTES = 5  # a node in service this long has filled its share of the keys
# After a scale-in the keys of the removed nodes start cold on the others (and after a growth
# on the new nodes, while they are not warm): meanwhile only a miss rate above the maximum at
# SETTLE_OVER ticks in a row (not a prediction, not the first minute's spike alone) grows it.
SETTLE_MINUTES = 10
SETTLE_OVER = 2
NEEDS_KEPT = 60  # scale_in_window_minutes is at most 60
SEEN_KEPT_MINUTES = 24 * 60
LOAD_BUCKET = 1.1  # experience keeps the newest figure per 10 % band of load per node
# Without a curve, misses are taken to scale as (load per node) ** slope; until experience
# shows the slope, growing assumes a shallow one and shrinking a steep one (both err safe).
SLOPE_GROWING, SLOPE_SHRINKING = 1.0, 2.0
SLOPE_LIMITS = (0.5, 3.0)
# The load span a fit needs before it is trusted both ways (FIT_SPAN), and before it may make a
# shrink more careful than SLOPE_SHRINKING (EARLY_SPAN): the night's experience spans little
# load, and the curve steepens where a node holds less of the keys.
FIT_SPAN = 1.5
EARLY_SPAN = 1.2
# The extra miss rate of the first minute after a scale-in, per share of the keys it moved
# (they start cold on the nodes that inherit them); learnt from each scale-in. A shrink may
# take that first minute up to SPIKE_LIMIT × the maximum: one minute over it, to save a node
# for as long as the smaller size holds, is a trade an error budget makes.
SPIKE_PER_SHARE = 0.15
SPIKE_LIMIT = 1.5
# Without a curve: how far experience's predictions of a smaller size turned out off, measured
# on the first tick after each scale-in, is held within these limits; and a size the pool grew
# from is not shrunk to again at that load per node for this long.
BIAS_LIMITS = (0.5, 2.0)
SMALL_KEPT_MINUTES = 30
DECAYED = 0.85  # a ratio this much lower WARM_MINUTES after a scale-in: its first tick was transient


@dataclass(frozen=True)
class Seen:
    """A warm, settled pool's miss rate at one load per node (GET requests per serving node)."""

    load: float
    miss_rate: float
    time: str

    def to_data(self) -> list[Any]:
        return [round(self.load, 2), round(self.miss_rate, 5), self.time]


@dataclass(frozen=True)
class Memory:
    """What the policy keeps between ticks (in the pool's item, beside the scale-in window)."""

    needs: tuple[int | None, ...] = ()  # the need of each recent tick, None without data
    seen: tuple[Seen, ...] = ()
    shrunk: str | None = None  # when this policy last scaled in
    grown: str | None = None  # when it last scaled out
    spike: float = SPIKE_PER_SHARE
    # The last scale-in's share of keys moved and predicted miss rate, until its spike is measured.
    pending: tuple[float, float] | None = None
    over: int = 0  # ticks in a row with the miss rate above the maximum
    # Per size the pool grew from: the load per node at which it did, and when.
    small: tuple[tuple[int, float, str], ...] = ()
    # Without a curve: measured ÷ predicted miss rate after each scale-in (a running mean), by
    # which experience's predictions of a smaller size are multiplied; and the last scale-in's
    # time, prediction (before that factor) and first tick's ratio, until it is measured.
    bias: float = 1.0
    check: tuple[str, float, float | None] | None = None

    @property
    def changed(self) -> str | None:
        """When this policy last resized the pool (moved keys start cold): its later change."""
        return max((stamp for stamp in (self.shrunk, self.grown) if stamp is not None), default=None)

    def to_data(self) -> dict[str, Any]:
        return {
            "needs": list(self.needs),
            "seen": [point.to_data() for point in self.seen],
            "changed": self.changed,
            "shrunk": self.shrunk,
            "grown": self.grown,
            "spike": round(self.spike, 5),
            "pending": list(self.pending) if self.pending else None,
            "over": self.over,
            "small": [[size, round(load, 2), time] for size, load, time in self.small],
            "bias": round(self.bias, 4),
            "check": list(self.check) if self.check else None,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Memory:
        if not data:
            return cls()
        seen = tuple(Seen(float(load), float(rate), str(time)) for load, rate, time in data.get("seen", []))
        pending = data.get("pending")
        return cls(
            tuple(data.get("needs", [])),
            seen,
            data.get("shrunk"),
            data.get("grown"),
            float(data.get("spike", SPIKE_PER_SHARE)),
            (float(pending[0]), float(pending[1])) if pending else None,
            int(data.get("over", 0)),
            tuple((int(size), float(load), str(time)) for size, load, time in data.get("small", [])),
            float(data.get("bias", 1.0)),
            _check_from_data(data.get("check")),
        )


def _check_from_data(data: Sequence[Any] | None) -> tuple[str, float, float | None] | None:
    if not data:
        return None
    when, predicted, first = data
    return str(when), float(predicted), None if first is None else float(first)


@dataclass(frozen=True)
class Evidence:
    """What this policy reads at a tick, beyond the ratio policy's :class:`Observation`."""

    time: str
    serving: int  # in-service nodes: the ones the front-end spreads keys over
    requests: int
    # Hit ratio at each of FACTORS (ΣHitsWithin ÷ ΣGetRequests over the nodes read), or None.
    curve: tuple[float, ...] | None = None
    settled: bool = False  # every serving node warm, nothing launching or draining
    memory: Memory = field(default_factory=Memory)
    # The miss rate of the warm nodes alone (None when none is warm): cold ones overstate it.
    warm_miss_rate: float | None = None
    cold: int = 0  # serving nodes not yet warm


def curve_miss_rate(curve: Sequence[float], factor: float) -> float:
    """The miss rate at ``factor`` × today's capacity, linear in log2(factor) between points.

    Outside 1/8..8 the nearest end stands; a curve that is not monotone (noise in a short
    window) is read as its running maximum, since more capacity never loses a hit under LRU.
    """
    hits = list(curve)
    for index in range(1, len(hits)):
        hits[index] = max(hits[index], hits[index - 1])
    position = min(max(math.log2(factor), -3.0), 3.0) + 3.0
    low = min(int(position), len(FACTORS) - 2)
    share = position - low
    hit_ratio = hits[low] * (1 - share) + hits[low + 1] * share
    return min(1.0, max(0.0, 1.0 - hit_ratio))


def learn(memory: Memory, load: float, miss_rate: float, time: str) -> tuple[Seen, ...]:
    """Experience with the newest settled figure in: one per band of load, none older than a day."""
    band = _band(load)
    kept = [
        point
        for point in memory.seen
        if _band(point.load) != band and _minutes_between(point.time, time) < SEEN_KEPT_MINUTES
    ]
    return tuple(sorted([*kept, Seen(load, miss_rate, time)], key=lambda point: point.load))


def _band(load: float) -> int:
    return math.floor(math.log(max(load, 1e-9), LOAD_BUCKET))


def _minutes_between(earlier: str, later: str) -> float:
    return seconds_between(earlier, parse_iso(later)) / 60


def slope(seen: Sequence[Seen], span: float | None = None) -> float | None:
    """How steeply the miss rate grows with the load per node, fitted on log-log experience.

    None until there are three figures spanning loads at least ``span`` (``FIT_SPAN``) apart.
    """
    span = FIT_SPAN if span is None else span
    points = [(math.log(point.load), math.log(point.miss_rate)) for point in seen if point.miss_rate > 1e-3]
    if len(points) < 3 or points[-1][0] - points[0][0] < math.log(span):
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    fitted = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return min(max(fitted, SLOPE_LIMITS[0]), SLOPE_LIMITS[1])


def experience_miss_rate(
    miss_rate: float, serving: int, size: int, fitted_slope: float | None, early_slope: float | None = None
) -> float:
    """Today's miss rate at ``serving`` nodes, carried to ``size`` by the slope (or a safe guess).

    Without a slope, growing assumes a shallow one and shrinking a steep one, or ``early_slope``
    (a fit over a shorter span of load) where that is steeper still: it may only make a shrink
    more careful.
    """
    if fitted_slope is None:
        fitted_slope = SLOPE_GROWING if size >= serving else max(SLOPE_SHRINKING, early_slope or 0.0)
    return min(1.0, miss_rate * (serving / size) ** fitted_slope)


def predict(size: int, evidence: Evidence, miss_rate: float) -> float:
    """The miss rate a pool of ``size`` serving nodes would have had over this window."""
    serving = max(evidence.serving, 1)
    if evidence.curve is not None:
        return curve_miss_rate(evidence.curve, size / serving)
    anchor = evidence.warm_miss_rate if evidence.warm_miss_rate is not None else miss_rate
    seen = evidence.memory.seen
    carried = experience_miss_rate(anchor, serving, size, slope(seen), slope(seen, EARLY_SPAN))
    return min(1.0, carried * evidence.memory.bias) if size < serving else carried


def spike(evidence: Evidence, size: int) -> float:
    """The extra misses expected in the first minute after shrinking to ``size``."""
    serving = max(evidence.serving, 1)
    return evidence.memory.spike * max(0, serving - size) / serving


def too_small(evidence: Evidence, size: int) -> bool:
    """Whether the pool grew from ``size`` in the last ``SMALL_KEPT_MINUTES`` at about this load
    per node or a lower one: it missed too much then, and would again, whatever experience says."""
    load = evidence.requests / max(size, 1)
    return any(
        grown_from == size
        and load * LOAD_BUCKET >= grown_at
        and _minutes_between(time, evidence.time) < SMALL_KEPT_MINUTES
        for grown_from, grown_at, time in evidence.memory.small
    )


def remember_small(memory: Memory, evidence: Evidence) -> tuple[tuple[int, float, str], ...]:
    """The sizes found too small, with today's serving size at today's load per node in."""
    serving = max(evidence.serving, 1)
    kept = [entry for entry in memory.small if entry[0] != serving]
    return tuple(sorted([*kept, (serving, evidence.requests / serving, evidence.time)]))


def need(config: Mapping[str, Any], evidence: Evidence, miss_rate: float, headroom: float = HEADROOM) -> int:
    """The smallest size within the bounds predicted to meet the goal (the maximum if none does).

    A size below today's must also keep its first minute, cold keys and all, within the spike
    limit; without a curve, it must not be one the pool just grew from at this load per node.
    """
    goal = headroom * config["max_miss_rate_threshold"]
    spike_limit = SPIKE_LIMIT * config["max_miss_rate_threshold"]
    low, high = config["min_pool_size"], config["max_pool_size"]
    for size in range(low, high + 1):
        predicted = predict(size, evidence, miss_rate)
        if size < evidence.serving and evidence.curve is None and too_small(evidence, size):
            continue
        if predicted <= goal and predicted + spike(evidence, size) <= spike_limit:
            return size
    return high


def _measure_bias(memory: Memory, evidence: Evidence, rate: float) -> Memory:
    """A scale-in without a curve, measured: its miss rate against experience's prediction for it,
    on the first settled tick after it and again ``WARM_MINUTES`` later.

    The first ratio goes into the running mean: with keys moved warm it is how far experience
    erred (five minutes later the day's trend has moved the rate too). When the second is more
    than ``1 - DECAYED`` lower, the first was mostly the moved keys' cold misses (a cold
    front-end), gone since, and the second counts instead. A scale-in undone before the second
    (the pool grew) counts with its first ratio: it failed as that tick showed (and ``small``
    keeps its lesson).
    """
    if memory.check is None:
        return memory
    when, predicted, first = memory.check
    if memory.grown is not None and memory.grown > when:
        return replace(memory, check=None) if first is None else _biased(memory, first)
    if not evidence.settled or predicted <= 0:
        return memory
    ratio = min(max(rate / predicted, BIAS_LIMITS[0]), BIAS_LIMITS[1])
    if _minutes_between(when, evidence.time) >= WARM_MINUTES:
        transient = first is not None and ratio < DECAYED * first
        return _biased(memory, ratio if first is None or transient else first)
    return memory if first is not None else replace(memory, check=(when, predicted, ratio))


def _biased(memory: Memory, ratio: float) -> Memory:
    return replace(memory, bias=(memory.bias + ratio) / 2, check=None)


def _measure_spike(memory: Memory, rate: float) -> Memory:
    """The first rate after a scale-in, against what was predicted for it: the spike per share."""
    if memory.pending is None:
        return memory
    share, predicted = memory.pending
    measured = max(0.0, rate - predicted) / share if share > 0 else memory.spike
    return replace(memory, spike=(memory.spike + measured) / 2, pending=None)


def decide(config: Mapping[str, Any], observed: Observation, evidence: Evidence) -> tuple[Decision, Memory]:
    """One tick of the predictive policy: the decision, and the memory to keep for the next."""
    size, rate = observed.pool_size, observed.miss_rate
    memory = evidence.memory
    bounded = bounds(config, size)
    if bounded is not None:
        return bounded, memory
    if not config["auto_mode"]:
        return Decision(size, size, HOLD, "auto_mode is off: observed only"), _remember(memory, None)
    if rate is None:
        reason = "no data: too few GET requests in the window"
        return Decision(size, size, HOLD, reason), _remember(memory, None)
    memory = _measure_spike(memory, rate)
    if evidence.curve is None:
        memory = _measure_bias(memory, evidence, rate)
    memory = replace(memory, over=memory.over + 1 if rate > config["max_miss_rate_threshold"] else 0)
    settled = evidence.settled and (
        memory.changed is None or _minutes_between(memory.changed, evidence.time) >= WARM_MINUTES
    )
    if settled and evidence.serving:
        memory = replace(
            memory, seen=learn(memory, evidence.requests / evidence.serving, rate, evidence.time)
        )
    evidence = replace(evidence, settled=settled, memory=memory)
    wanted = need(config, evidence, rate)
    # Below today's size, what must hold for the window is the size with the shrink's headroom.
    shrink_headroom = SHRINK_HEADROOM_CURVE if evidence.curve is not None else SHRINK_HEADROOM
    smaller = need(config, evidence, rate, shrink_headroom) if wanted < size else wanted
    memory = _remember(memory, smaller)
    source = "curve" if evidence.curve is not None else "experience"
    seen = f"miss rate {rate:.3f}; {source} predicts {predict(wanted, evidence, rate):.3f} at {wanted}"
    # Keys moved by a change start cold (on the nodes that inherit them after a shrink, on the
    # new nodes after a growth) and the warm nodes' figures still describe the old size: until
    # that passes, only a miss rate above the maximum tick after tick grows the pool again.
    shrinking = memory.shrunk is not None and _minutes_between(memory.shrunk, evidence.time) < SETTLE_MINUTES
    if wanted > size and (shrinking or evidence.cold) and memory.over < SETTLE_OVER:
        return Decision(size, size, HOLD, f"{seen}: keys moved by the last change are still warming"), memory
    if wanted > size:
        grow = Decision(size, wanted, SCALE_OUT, f"{seen}: grow {size} → {wanted}")
        return grow, replace(memory, grown=evidence.time, small=remember_small(memory, evidence))
    if wanted < size and smaller >= size:
        return Decision(size, size, HOLD, f"{seen}: not enough below the goal to shrink"), memory
    if wanted < size:
        window = config["scale_in_window_minutes"]
        recent = memory.needs[-window:]
        grown = (
            memory.grown is not None and _minutes_between(memory.grown, evidence.time) < GROWN_SETTLE_MINUTES
        )
        if observed.launching or observed.draining or not evidence.settled or grown:
            return Decision(size, size, HOLD, f"{seen}: shrink waits for a settled pool"), memory
        if len(recent) < window or any(n is None or n >= size for n in recent):
            held = _streak(memory.needs, size)
            return Decision(size, size, HOLD, f"{seen}: shrink waits ({held} of {window} ticks)"), memory
        target = max(n for n in recent if n is not None)
        if evidence.curve is None:  # experience is surest near today's size: one node at a time
            target = max(target, size - 1)
        shrink = Decision(size, target, SCALE_IN, f"{seen} for {window} ticks: shrink {size} → {target}")
        moved = (evidence.serving - target) / max(evidence.serving, 1)
        predicted = predict(target, evidence, rate)
        pending = (moved, predicted)
        check = (evidence.time, predicted / memory.bias, None) if evidence.curve is None else None
        return shrink, replace(memory, shrunk=evidence.time, pending=pending, check=check)
    return Decision(size, size, HOLD, f"{seen}: pool size {size} is what it needs"), memory


def _remember(memory: Memory, wanted: int | None) -> Memory:
    return replace(memory, needs=(*memory.needs, wanted)[-NEEDS_KEPT:])


def _streak(needs: Sequence[int | None], size: int) -> int:
    count = 0
    for wanted in reversed(needs):
        if wanted is None or wanted >= size:
            break
        count += 1
    return count


def watched(before: Memory, after: Memory, resized: str | None, time: str) -> Memory:
    """A shadow's memory after a tick: what the tick taught it (needs, experience, the run over
    the maximum), with the pool's real change (``resized``: the acting decision's scale-out or
    scale-in, None without one) in place of its own, which was never carried out."""
    return replace(
        after,
        grown=time if resized == SCALE_OUT else before.grown,
        shrunk=time if resized == SCALE_IN else before.shrunk,
        pending=None,
    )
