"""One day of cache traffic replayed minute by minute against the real scaler, under moto.

Each simulated minute m, at T = start + m min:

1. the tier follows EC2: running pool instances are nodes (cold, booting ``BOOT_MINUTES``),
   terminated ones are gone with their data (with ``Setup.frontend == "warm"``, once their keys
   are copied to their new owners: see ``sim.tier``);
2. the front-end reads the pool through the API (``GET /api/scaler/cache_list``) and spreads
   the minute's GETs over the nodes the scaler lists as ``in_service``, in list order (a warm
   front-end first copies the keys that change owner, as the front-end kit does);
3. the nodes that have booted publish the minute per SPEC (``GetRequests``, ``Hits`` and, when
   the curve is on, ``HitsWithin`` by ``CapacityFactor``), stamped inside [T, T + 60 s) — except
   during the metrics gap;
4. the scheduled function runs at T + 60 s: for the project's policies it is the deployed
   ``scale`` function invoked through Chalice's test client, with the config's ``policy``; a
   baseline rule is run through the same tick (``run_tick``) with the rule as its decision step.

What a minute costs is the instances EC2 runs during it (booting ones included); what the users
saw is every GET of the minute, those a node answered and those it did not.

``replay(..., tier=...)`` runs the same loop through another tier: a ``MemcachedTier`` (real
memcached processes, each with its agent) publishes through its own agents in step 3, and needs
the emulator over HTTP (``endpoint``: a moto server in this process) instead of ``mock_aws``.

moto keeps every datapoint forever and scans them all in each GetMetricData; the replay drops
datapoints older than ``KEEP_DATAPOINTS`` from moto's store now and then, which no tick reads
(they look back ``NODE_SILENT_SECONDS`` = 5 minutes at most).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from bench.score import Run
from bench.workload import TOTAL_MINUTES, WARMUP_MINUTES, DayWorkload
from chalicelib.adapters import aws
from chalicelib.domain.policies import Policy
from chalicelib.domain.settings import Settings
from chalicelib.service.tick import TickDeps, run_tick
from local_stack.scheduler import scheduled_event
from sim.aws import STAMP_BEFORE_END, Cloud
from sim.memcached_tier import MemcachedTier
from sim.tier import CacheTier, Frontend, TierMinute

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEV_ENV = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())["stages"]["dev"][
    "environment_variables"
]
# The scored day is 2026-11-26; the warm-up hour is the hour before it.
DAY_START = datetime(2026, 11, 26, tzinfo=UTC)
START = DAY_START - timedelta(minutes=WARMUP_MINUTES)
TOKEN = "bench-token"
NODE_AMI = "ami-12c6146b"  # an image moto knows
POOL = "default"
CAPACITY = 1_250
BOOT_MINUTES = 3
MAX_MISS_RATE = 0.10
MIN_MISS_RATE = 0.03
KEEP_DATAPOINTS = timedelta(minutes=6)
TRIM_EVERY = 5  # minutes

ENVIRONMENT = {
    **DEV_ENV,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "SCALER_API_TOKEN": TOKEN,
    "NODE_AMI_ID": NODE_AMI,
    "POOL_NAME": POOL,
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_DEV": "false",
    # A node silent for 2 minutes is replaced (default 5): nodes here publish every minute, and
    # the shorter look-back makes moto's GetMetricData, which scans it all, 2.5 times cheaper.
    "NODE_SILENT_SECONDS": "120",
}


@dataclass(frozen=True)
class Setup:
    """One replay's world: the traffic, the tier, and what the nodes publish."""

    seed: int = 0
    alpha: float = 0.9
    curve: bool = True
    hashing: str = "consistent"
    gap: bool = True
    mean_gets: int | None = None  # None: the workload's default
    minutes: int = TOTAL_MINUTES
    frontend: Frontend = "cold"  # how a change of the routing list moves keys: see sim.tier

    def workload(self) -> DayWorkload:
        if self.mean_gets is None:
            return DayWorkload(self.seed, self.alpha)
        return DayWorkload(self.seed, self.alpha, mean_gets_per_minute=self.mean_gets)

    @property
    def label(self) -> str:
        curve = "on" if self.curve else "off"
        return f"seed {self.seed}, α {self.alpha}, {self.hashing}, curve {curve}, {self.frontend} front-end"


@dataclass
class Replay:
    """A replay's outcome: the scored run, and what the ticks cost.

    ``moves``: with a warm front-end, ``(minute, keys that changed owner, keys copied, seconds)``
    for each change of the routing list, minutes counted from the scored day's start (the
    warm-up's are negative); ``run.extra["moves"]`` holds those of the scored day.
    """

    run: Run
    tick_seconds: list[float] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    moves: list[tuple[int, int, int, float]] = field(default_factory=list)

    @property
    def median_tick_ms(self) -> float:
        return 1000 * statistics.median(self.tick_seconds) if self.tick_seconds else 0.0


Tier = CacheTier | MemcachedTier
TierFactory = Callable[[Setup], Tier]


def simulated_tier(setup: Setup) -> Tier:
    """The replay's own tier: LRU nodes of ``CAPACITY`` items, measuring the curve if asked."""
    return CacheTier(
        CAPACITY, BOOT_MINUTES, curve=setup.curve, hashing=setup.hashing, frontend=setup.frontend
    )


@contextlib.contextmanager
def _environment(values: Mapping[str, str], endpoint: str | None = None) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*values, "AWS_ENDPOINT_URL", "AWS_PROFILE")}
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(values)
    if endpoint is not None:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Warnings only while replaying (a line per request and per tick, 3,000 a day, says
    nothing here), and the service's own level back afterwards."""
    from chalicelib.adapters.observability import logger

    level = logger.log_level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def _trim_datapoints(before: datetime) -> None:
    """Drop moto's datapoints older than ``before`` (moto scans them all at every read)."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][ENVIRONMENT["AWS_DEFAULT_REGION"]]
    naive = before.astimezone(UTC).replace(tzinfo=None)  # moto keeps naive UTC times
    backend.metric_data = [
        datum
        for datum in backend.metric_data
        if (datum.timestamp.replace(tzinfo=None) if datum.timestamp.tzinfo else datum.timestamp) >= naive
    ]


def policy_config(policy: str) -> dict[str, Any]:
    """The config every replay sets through the API: SPEC's defaults but the thresholds."""
    return {
        "max_miss_rate_threshold": MAX_MISS_RATE,
        "min_miss_rate_threshold": MIN_MISS_RATE,
        "min_pool_size": 1,
        "max_pool_size": 8,
        "auto_mode": True,
        "policy": policy,
    }


AWS = Literal["moto", "memory"]


def replay(
    setup: Setup,
    name: str,
    *,
    policy: str = "ratio",
    baseline: Policy | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
    tier: TierFactory = simulated_tier,
    endpoint: str | None = None,
    config: Mapping[str, Any] | None = None,
    aws_in: AWS = "moto",
) -> Replay:
    """Replay ``setup``'s day against the scaler with ``policy`` (or ``baseline`` as its rule).

    ``config``: fields set over the replay's config, e.g. ``{"auto_mode": False, "shadow_policy":
    "predictive"}`` for a day in which the predictive policy is only watched.

    ``tier`` makes the cache tier (inside the replay's environment, so a ``MemcachedTier``'s
    agents inherit it); ``endpoint``: the URL of a moto server running in this process, instead
    of ``mock_aws`` (the replay trims the same in-process store either way).

    ``aws_in="memory"`` runs the same ticks (``run_tick``, the scheduled function's body) on the
    in-memory AWS of :mod:`sim.memory_aws` instead of moto, and lists the pool from the stored
    membership as ``GET /api/scaler/cache_list`` does: the same day, the same decisions, in about
    a tenth of the time (``tests/test_bench_replay.py`` holds the two equal). For the simulated
    tier only.
    """
    if aws_in == "memory":
        if tier is not simulated_tier or endpoint is not None:
            raise ValueError("the in-memory AWS replays the simulated tier only")
        with _environment(ENVIRONMENT), _quiet_logs():
            return _replay_in_memory(
                setup, name, policy=policy, baseline=baseline, progress=progress, config=config
            )
    from chalice.test import Client
    from moto import mock_aws

    emulator = mock_aws() if endpoint is None else contextlib.nullcontext()
    with _environment(ENVIRONMENT, endpoint), emulator, _quiet_logs(), contextlib.ExitStack() as stack:
        aws.reset_clients()
        cache_tier = tier(setup)
        if isinstance(cache_tier, MemcachedTier):
            stack.callback(cache_tier.stop)
        from app import app

        settings = Settings.from_env()
        deps = TickDeps.from_settings(settings)
        deps.store.create_table()
        client = Client(app, stage_name="dev", project_dir=str(PROJECT_DIR))
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        settings_body = json.dumps({**policy_config(policy), **(config or {})})
        answer = client.http.post("/api/scaler/config", headers=headers, body=settings_body)
        if answer.status_code != 200:
            raise RuntimeError(f"config refused: {answer.status_code} {answer.body!r}")
        cloud = Cloud(os.environ)
        if baseline is not None:
            deps = replace(deps, policy=baseline)

        def listed() -> list[dict[str, Any]]:
            nodes: list[dict[str, Any]] = json.loads(
                client.http.get("/api/scaler/cache_list", headers=headers).body
            )["nodes"]
            return nodes

        def publish(served: TierMinute, ids: Mapping[str, str], moment: datetime) -> None:
            if isinstance(cache_tier, MemcachedTier):
                # Each agent samples its memcached and publishes, through the gap too: a clock
                # held still would make its next interval two minutes long.
                cache_tier.publish(moment + timedelta(minutes=1))
            else:
                cloud.publish(
                    {ids[node]: (counts.gets, counts.hits) for node, counts in served.items()},
                    moment + timedelta(minutes=1),
                    within={ids[node]: counts.within for node, counts in served.items() if counts.within},
                )

        def tick(tick_at: datetime, minute: int) -> dict[str, Any]:
            if baseline is None:
                decision: dict[str, Any] = client.lambda_.invoke("scale", scheduled_event(tick_at)).payload
            else:
                decision = run_tick(deps, tick_at)
            if minute % TRIM_EVERY == 0:
                _trim_datapoints(tick_at - KEEP_DATAPOINTS)
            return decision

        outcome = _day(setup, name, cache_tier, listed, publish, tick, progress)
        aws.reset_clients()
    return outcome


def _replay_in_memory(
    setup: Setup,
    name: str,
    *,
    policy: str,
    baseline: Policy | None,
    progress: Callable[[int, dict[str, Any]], None] | None,
    config: Mapping[str, Any] | None,
) -> Replay:
    from chalicelib.domain import config as config_rules
    from chalicelib.domain.pool import describe_nodes
    from sim import memory_aws

    settings = Settings.from_env()
    cloud = memory_aws.Cloud()
    deps = TickDeps(
        settings,
        memory_aws.FakeStore(cloud, settings.table_name, settings.pool_name),
        memory_aws.FakeEc2(cloud, settings.pool_name),
        memory_aws.FakeMetrics(cloud, settings.metric_names),
        policy=baseline,
    )
    patch = config_rules.parse_patch({**policy_config(policy), **(config or {})})
    config_rules.update_config(deps.store, patch, source_ip="127.0.0.1", now=START)

    def publish(served: TierMinute, ids: Mapping[str, str], moment: datetime) -> None:
        stamp = moment + timedelta(minutes=1) - STAMP_BEFORE_END
        for node, counts in served.items():
            within = tuple(map(float, counts.within)) if counts.within else None
            cloud.publish(ids[node], stamp, counts.gets, counts.hits, within)

    return _day(
        setup,
        name,
        simulated_tier(setup),
        lambda: describe_nodes(deps.store.load_pool()),
        publish,
        lambda tick_at, _minute: run_tick(deps, tick_at),
        progress,
    )


def _day(
    setup: Setup,
    name: str,
    cache_tier: Tier,
    listed: Callable[[], list[dict[str, Any]]],
    publish: Callable[[TierMinute, Mapping[str, str], datetime], None],
    tick: Callable[[datetime, int], dict[str, Any]],
    progress: Callable[[int, dict[str, Any]], None] | None,
) -> Replay:
    """The day's minutes: the tier follows the listed nodes, serves, publishes, and the tick runs."""
    workload = setup.workload()
    sizes: list[int] = []
    gets: list[int] = []
    misses: list[int] = []
    actions: list[tuple[int, str, int, int]] = []
    outcome = Replay(Run(name, (), (), (), ()))
    gap = set(workload.gap_minutes) if setup.gap else set()
    names: dict[str, str] = {}
    for minute in range(setup.minutes):
        moment = START + timedelta(minutes=minute)
        nodes = listed()
        # Every live node the scaler lists runs (moto starts instances at once, and with no
        # front-end to tell, a scale-in terminates at once): the tier is those instances.
        # moto draws instance ids at random and keys are hashed onto node names, so the tier
        # names nodes in the order they first appear: the same day, the same ring.
        for node in nodes:
            names.setdefault(node["id"], f"node-{len(names)}")
        ids = {name: node_id for node_id, name in names.items()}
        running = [names[node["id"]] for node in nodes]
        if isinstance(cache_tier, MemcachedTier):
            cache_tier.sync(running, minute, publish_as=ids)  # its agents publish as the instances
        else:
            cache_tier.sync(running, minute)
        routing = [names[node["id"]] for node in nodes if node["state"] == "in_service"]
        keys = workload.requests(minute)
        served = cache_tier.serve_minute(keys, routing)
        if isinstance(cache_tier, MemcachedTier) or minute not in gap:
            publish(served, ids, moment)
        hits = served.hits  # a leaving node's too, during a warm move
        tick_at = moment + timedelta(minutes=1)
        began = time.perf_counter()
        decision = tick(tick_at, minute)
        outcome.tick_seconds.append(time.perf_counter() - began)
        if minute >= WARMUP_MINUTES:
            sizes.append(len(running))
            gets.append(len(keys))
            misses.append(len(keys) - hits)
        action = decision.get("action")
        if action in ("scale_out", "scale_in") and decision["target_size"] != decision["previous_size"]:
            actions.append(
                (minute - WARMUP_MINUTES, action, decision["previous_size"], decision["target_size"])
            )
        outcome.decisions.append(decision)
        if progress is not None:
            progress(minute, decision)
    scored = [action for action in actions if action[0] >= 0]
    outcome.moves = [
        (move.minute - WARMUP_MINUTES, move.changed, move.copied, move.seconds)
        for move in getattr(cache_tier, "moves", ())
    ]
    moves = tuple(move for move in outcome.moves if move[0] >= 0)
    extra = {"moves": moves} if setup.frontend == "warm" else {}
    outcome.run = Run(name, tuple(sizes), tuple(gets), tuple(misses), tuple(scored), extra)
    return outcome
