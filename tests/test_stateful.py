"""The product's safety net: a hypothesis state machine over the whole app, with writers racing
and AWS failing, and SPEC's invariants checked after every step.

Every rule goes through the routes (Chalice's test client) or the scheduled function. The app's
three adapters are wrapped by hooks (``Hooked``) that can fail an AWS call, kill the invocation
between two AWS calls, or run a second writer's whole call there; the same hooks check, at every
EC2 call, that the pool never holds more than 8 live instances and that no node goes before the
front-end was told. The machine runs long on in-memory fakes (``tests/fakes.py``) and short on
moto, so that the fakes are seen to agree with moto.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import time_machine
from chalice.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from moto import mock_aws

from chalicelib.adapters import aws
from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.observability import logger
from chalicelib.domain.errors import DependencyError
from chalicelib.domain.instances import LIVE_STATES
from chalicelib.domain.notices import MAX_QUEUED_NOTICES
from chalicelib.domain.policy import SCALE_IN, SCALE_OUT
from chalicelib.domain.pool import IN_SERVICE, Pool
from chalicelib.domain.settings import POOL_TAG_KEY, Settings
from chalicelib.service import wiring
from tests.conftest import AUTH, NODE_AMI, PROJECT_DIR, REGION, TABLE, TOKEN, cw_event, share_one_session
from tests.fakes import (
    LAUNCH_TOKEN_TAG,
    Cloud,
    FakeAdapters,
    FakeFrontend,
    FakeStore,
    Killed,
    fake_adapters,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
POOL = "default"
NOTIFY_URL = "https://frontend.example/scaler-notifications"
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "SCALER_API_TOKEN": TOKEN,
    "NODE_AMI_ID": NODE_AMI,
    "POOL_NAME": POOL,
    "FRONTEND_NOTIFY_URL": NOTIFY_URL,
    "FRONTEND_NOTIFY_TIMEOUT_SECONDS": "0.01",
    "LAUNCH_TIMEOUT_SECONDS": "300",
    "DRAIN_TIMEOUT_SECONDS": "180",
    "NODE_SILENT_SECONDS": "180",
    "POWERTOOLS_METRICS_DISABLED": "true",
}
# Operations a fault or a second writer can be armed against.
WRITERS = ("tick", "resize", "set_test_miss_rate", "confirm_drain", "cache_list", "terminate_all", "config")
GONE = ("shutting-down", "terminated")
# What may happen inside a writer's call: nothing, or before its ``at``-th AWS call an AWS call
# fails, the invocation dies, or a second writer's whole call runs.


@dataclass
class Armed:
    kind: str  # "fail", "die" or "interleave"
    at: int  # the AWS call of the next operation before which it happens
    second: str = "tick"  # the writer that runs there, for "interleave"


DURING = st.none() | st.builds(
    lambda kind, at, second: Armed(kind, at, second),
    st.sampled_from(["fail", "die", "interleave"]),
    st.integers(1, 7),
    st.sampled_from(WRITERS),
)


class Hooked:
    """An adapter whose every public call first passes through the world's hook."""

    def __init__(self, target: Any, world: World, service: str) -> None:
        self._target, self._world, self._service = target, world, service

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._world.before_call(self._service, name, args)
            return attr(*args, **kwargs)

        return call


class World:
    """AWS as the app sees it (fakes or moto), the front-end, and the hooks."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.frontend = FakeFrontend()
        self.cloud = Cloud()
        self.armed: Armed | None = None
        self.operation: dict[str, Any] | None = None  # the top-level operation under way
        self.nested = False
        self.acting: str | None = None  # the writer whose calls reach the adapters
        self.run_second: Callable[[str], None] = lambda name: None
        self.violations: list[str] = []
        self.exempt: set[str] = set()  # ended with no front-end to tell, or by terminate_all
        self.faulted = False  # a fault was injected during the current step
        self.sent: dict[int, dict[str, Any]] = {}  # the first notice sent under each number
        if backend == "moto":
            self.boto_ec2 = boto3.client("ec2", region_name=REGION)
            self.raw_store: Any = StateStore(TABLE, POOL)
        else:
            self.raw_store = FakeStore(self.cloud, TABLE, POOL)

    # -- what the app is given ----------------------------------------------------------------

    def adapters(self, settings: Settings) -> FakeAdapters:
        built = fake_adapters(self.cloud, self.frontend)(settings)
        if self.backend == "moto":
            real = wiring.Adapters(settings)
            built = FakeAdapters(real.store, real.ec2, real.metrics, built.notifier)
        return FakeAdapters(
            Hooked(built.store, self, "dynamodb"),
            Hooked(built.ec2, self, "ec2"),
            Hooked(built.metrics, self, "cloudwatch"),
            built.notifier,
        )

    # -- the hook -------------------------------------------------------------------------------

    @contextmanager
    def top_level(self, name: str) -> Iterator[None]:
        self.operation = {"name": name, "calls": 0, "armed": self.armed}
        self.armed = None
        try:
            with self.writing(name):
                yield
        finally:
            self.operation = None

    @contextmanager
    def writing(self, name: str) -> Iterator[None]:
        """``name`` is the writer whose calls reach the adapters now."""
        outer, self.acting = self.acting, name
        self.frontend.taken_this_invocation = 0
        try:
            yield
        finally:
            self.acting = outer
            if name == "terminate_all":  # what it ends, retried later too, needs no decrease
                self.exempt |= set(self.pool().terminating)

    def before_call(self, service: str, name: str, args: tuple[Any, ...]) -> None:
        if self.acting == "terminate_all" or not os.environ.get("FRONTEND_NOTIFY_URL"):
            # Ended by terminate_all, or with nobody to tell: whoever carries it out.
            self.exempt |= set(self.pool().terminating)
        if service == "ec2":
            self.check_live_bound(args[0] if name == "launch" else None)
            if name == "terminate":
                self.check_told(list(args[0]))
        operation = self.operation
        if operation is None or self.nested:
            return
        operation["calls"] += 1
        armed: Armed | None = operation["armed"]
        if armed is None or armed.at != operation["calls"]:
            return
        operation["armed"] = None
        if armed.kind == "interleave":
            operation["interleaved"] = True
            self.nested = True
            try:
                with self.writing(armed.second):
                    self.run_second(armed.second)
            finally:
                self.nested = False
            return
        self.faulted = True
        if armed.kind == "fail":
            raise DependencyError(f"{service} call failed (injected before {name})")
        raise Killed

    def check_live_bound(self, launch_token: str | None) -> None:
        """Listed nodes are at most 8 at every EC2 call; a launch that would add an instance (its
        ClientToken made none yet) needs fewer than 8 of the pool's instances live."""
        pool = self.pool()
        if len(pool.nodes) > 8:
            self.violations.append(f"{len(pool.nodes)} nodes listed at an EC2 call")
        made = self.tokens()
        if launch_token is None or launch_token in made.values():
            return
        states = self.instances()
        tokens = pool.pending_plan.launch_tokens if pool.pending_plan else frozenset()
        ours = {*pool.live_ids, *pool.terminating, *(i for i, t in made.items() if t in tokens)}
        live = [i for i in ours if states.get(i, ("gone",))[0] in LIVE_STATES]
        if len(live) >= 8:
            self.violations.append(f"a launch with {len(live)} of the pool's instances live: {sorted(live)}")

    def check_told(self, ids: list[str]) -> None:
        """No node the front-end routes to is terminated before a decrease for it was delivered,
        except by terminate_all and in a pool without FRONTEND_NOTIFY_URL; and no node released
        from the pool is terminated, by anyone."""
        released = set(ids) & set(self.pool().pending_untag)
        if released:
            self.violations.append(f"released nodes terminated: {sorted(released)}")
        if self.acting == "terminate_all" or not os.environ.get("FRONTEND_NOTIFY_URL"):
            self.exempt |= set(ids)
            return
        view = self.frontend_view()
        for node_id in ids:
            if view.get(node_id) == "serving" and node_id not in self.exempt:
                self.violations.append(f"{node_id} terminated before its decrease was delivered")

    def check_delivered(self, notice: dict[str, Any]) -> None:
        """A number, once sent, always carries the same notice; and the front-end is never told
        to route to an instance that is gone (unless it went out of band, by terminate_all, or
        with no front-end to tell)."""
        first = self.sent.setdefault(notice["sequence"], notice)
        if first != notice:
            self.violations.append(f"notice {notice['sequence']} sent as {first}, then as {notice}")
        states = self.instances()
        for node_id in {*notice["cache_pool_ids"], *(n["id"] for n in notice["added"])} - self.exempt:
            if states.get(node_id, ("gone",))[0] in (*GONE, "gone"):
                self.violations.append(f"notice {notice['sequence']} routes to {node_id}, which is gone")

    def frontend_view(self) -> dict[str, str]:
        view: dict[str, str] = {}
        for notice in self.frontend.delivered:
            for node_id in [*notice["cache_pool_ids"], *(n["id"] for n in notice["added"])]:
                view[node_id] = "serving"
            for node in notice["removing"]:
                view[node["id"]] = "told"
        return view

    # -- reading AWS directly (no hooks) -----------------------------------------------------

    def pool(self) -> Pool:
        return self.raw_store.load_pool()

    def records(self) -> list[dict[str, Any]]:
        return self.raw_store.history(10**8, datetime(2200, 1, 1, tzinfo=UTC))

    def described(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Every instance AWS knows: id → (state, tags)."""
        if self.backend == "fakes":
            return {i: (x.state, dict(x.tags)) for i, x in self.cloud.instances.items()}
        return {
            x["InstanceId"]: (x["State"]["Name"], {t["Key"]: t["Value"] for t in x.get("Tags", [])})
            for reservation in self.boto_ec2.describe_instances()["Reservations"]
            for x in reservation["Instances"]
        }

    def instances(self) -> dict[str, tuple[str, str | None]]:
        """id → (state, pool tag)."""
        return {i: (state, tags.get(POOL_TAG_KEY)) for i, (state, tags) in self.described().items()}

    def tokens(self) -> dict[str, str]:
        """Instance → the launch token it was made with."""
        described = self.described().items()
        return {i: tags[LAUNCH_TOKEN_TAG] for i, (_, tags) in described if LAUNCH_TOKEN_TAG in tags}

    # -- what happens outside the app ---------------------------------------------------------

    def run_instance(self, tagged: bool) -> str:
        tags = {POOL_TAG_KEY: POOL} if tagged else {}
        if self.backend == "fakes":
            return self.cloud.run_instance(NODE_AMI, tags).id
        extra: dict[str, Any] = {}
        if tags:
            extra["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        reply = self.boto_ec2.run_instances(ImageId=NODE_AMI, MinCount=1, MaxCount=1, **extra)
        return str(reply["Instances"][0]["InstanceId"])

    def out_of_band(self, node_id: str, action: str) -> None:
        if self.backend == "fakes":
            self.cloud.instances[node_id].state = "stopped" if action == "stop" else "terminated"
        elif action == "stop":
            self.boto_ec2.stop_instances(InstanceIds=[node_id])
        else:
            self.boto_ec2.terminate_instances(InstanceIds=[node_id])
        if action == "terminate":
            self.exempt.add(node_id)

    def publish(self, figures: dict[str, tuple[float, float]], minute: datetime) -> None:
        if self.backend == "fakes":
            for node_id, (gets, hits) in figures.items():
                self.cloud.publish(node_id, minute, gets, hits)
            return
        data = [
            {
                "MetricName": name,
                "Dimensions": [{"Name": "NodeId", "Value": node_id}],
                "Timestamp": minute,
                "Value": value,
            }
            for node_id, (gets, hits) in figures.items()
            for name, value in (("GetRequests", gets), ("Hits", hits))
        ]
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        for start in range(0, len(data), 500):
            cloudwatch.put_metric_data(Namespace="Memcache", MetricData=data[start : start + 500])


def open_floor(windows: list[dict[str, Any]], when: datetime) -> int:
    """The highest ``min_pool_size`` of the every-day windows open at ``when`` (0 if none is)."""
    minute = when.hour * 60 + when.minute
    sizes = [
        window["min_pool_size"]
        for window in windows
        if (minute - _minute_of_day(window["start"])) % (24 * 60) < window["duration_minutes"]
    ]
    return max(sizes, default=0)


def _minute_of_day(start: str) -> int:
    hours, minutes = start.split(":")
    return int(hours) * 60 + int(minutes)


class PoolMachine(RuleBasedStateMachine):
    backend = "fakes"

    def __init__(self) -> None:
        super().__init__()
        self.saved_env = {name: os.environ.get(name) for name in [*ENV, "AWS_ENDPOINT_URL"]}
        os.environ.update(ENV)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        self.saved_level = logger.log_level
        logger.setLevel("ERROR")
        self.mock = None
        if self.backend == "moto":
            self.mock = mock_aws()
            self.mock.start()
            share_one_session()
            aws.reset_clients()
            StateStore(TABLE, POOL).create_table()
        # The scheduled function runs once a minute of wall time: the wall clock (leases, route
        # records) moves with the machine's ticks, apart from the ticks' own event times.
        self.wall = time_machine.travel(datetime.now(UTC), tick=False)
        self.wall_now = self.wall.start()
        self.world = World(self.backend)
        self.world.run_second = self.run_writer
        self.world.frontend.on_delivery = self.world.check_delivered
        self.saved_adapters = wiring.adapters
        wiring.adapters = self.world.adapters
        from app import app

        self.client = Client(app, stage_name="dev", project_dir=str(PROJECT_DIR))
        self.minute = 0
        self.last_event: dict[str, Any] | None = None
        self.silent: set[str] = set()
        self.tick_times: set[str] = set()
        self.expected: Counter[str] = Counter()
        self.unaccounted: dict[str, int] = {}  # tagged, in no list and no release: ticks seen
        self.config: dict[str, Any] = {}

    def teardown(self) -> None:
        self.wall.stop()
        wiring.adapters = self.saved_adapters
        logger.setLevel(self.saved_level)
        if self.mock is not None:
            self.mock.stop()
            aws.reset_clients()
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # -- calling the app ------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = dict(AUTH)
        if body is not None:
            headers["Content-Type"] = "application/json"
        payload = json.dumps(body) if body is not None else b""
        response = self.client.http.request(method, path, headers=headers, body=payload)
        assert response.status_code != 500, (path, response.body)
        return response

    def invoke_tick(self, event: dict[str, Any]) -> dict[str, Any] | None:
        try:
            decision = self.client.lambda_.invoke("scale", event).payload
        except DependencyError:
            return None  # the tick failed (an AWS call): the next one carries on
        if decision.get("time") and decision.get("action") is not None:
            self.tick_times.add(decision["time"])
        return decision

    def writer(self, name: str) -> Callable[[], Any]:
        """A writer's whole call, as a rule makes it, for a second writer to run between two
        AWS calls of the first."""
        pool = self.world.pool()
        draining = [n for n in pool.nodes if n.state == "draining" and n.ip]
        # One more than the pool holds: a draining node is taken back first.
        grown = min(8, pool.pool_size + 1)
        calls: dict[str, Callable[[], Any]] = {
            "tick": lambda: self.invoke_tick(self.next_minute("all")),
            "resize": lambda: self.accept(
                self.call("POST", "/api/scaler/resize", {"target_size": grown}), "resize"
            ),
            "set_test_miss_rate": lambda: self.accept(
                self.call("POST", "/api/scaler/set_test_miss_rate", {"test_miss_rate": 1.0}),
                "set_test_miss_rate",
            ),
            "confirm_drain": lambda: self.confirm(draining[0].ip) if draining else None,
            "cache_list": lambda: self.swap(0, "release"),
            "terminate_all": lambda: self.call("POST", "/api/scaler/terminate_all", {}),
            "config": lambda: self.set_config_body({"min_pool_size": 1, "max_pool_size": 8}),
        }
        return calls[name]

    def run_writer(self, name: str) -> None:
        operation = self.world.operation
        if name == "tick" and operation is not None and operation["name"] == "tick":
            return  # ticks never overlap (reserved concurrency 1)
        with suppress(Killed):  # the second writer died: its own retry finishes its work
            self.writer(name)()

    @contextmanager
    def operation(self, name: str, during: Armed | None) -> Iterator[None]:
        self.world.faulted = False
        self.world.armed = during
        with self.world.top_level(name), suppress(Killed):  # the invocation died between two calls
            yield

    def interleaved(self) -> bool:
        """Did a second writer run inside the current top-level call? Then what the first one
        answers may be the second's change, recorded once, by it."""
        operation = self.world.operation
        return bool(operation and operation.get("interleaved") and not self.world.nested)

    def accept(self, response: Any, change: str) -> Any:
        """A route's answer; an accepted change must leave a membership record."""
        if response.status_code == 200 and not self.interleaved():
            body = response.json_body
            moved = {"launched", "terminated", "draining", "taken_back", "errors"} & set(body)
            if body.get("action") != "hold" or moved:
                self.expected[change] += 1
        return response

    def event(self, minute: int, seconds: int = 17) -> dict[str, Any]:
        return cw_event((T0 + timedelta(minutes=minute, seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ"))

    # -- rules -----------------------------------------------------------------------------------

    @initialize(size=st.integers(1, 8))
    def a_pool_in_service(self, size: int) -> None:
        self.set_config_body({"min_pool_size": 1, "max_pool_size": 8, "auto_mode": False})
        self.accept(self.call("POST", "/api/scaler/resize", {"target_size": size}), "resize")
        self.tick(1, "all")

    @rule(step=st.integers(1, 3), data=st.sampled_from(["all", "none", "some", "impossible"]), during=DURING)
    def tick(self, step: int, data: str, during: Armed | None = None) -> None:
        self.last_event = self.next_minute(data, step)
        with self.operation("tick", during):
            decision = self.invoke_tick(self.last_event)
            if decision is not None and not self.world.faulted:
                self.after_a_tick(decision)

    def next_minute(self, data: str, step: int = 1) -> dict[str, Any]:
        """Move both clocks on, publish the nodes' figures for the minute gone, and answer the
        scheduled event of the minute now."""
        self.minute += step
        self.wall_now.shift(timedelta(minutes=step))
        pool = self.world.pool()
        publishing = [n.id for n in pool.nodes if n.id not in self.silent]
        figures = {node_id: (1000.0, 500.0) for node_id in publishing}
        if data == "none":
            figures = {}
        elif data == "some":
            figures = dict(list(figures.items())[::2])
        elif data == "impossible" and figures:
            figures[next(iter(figures))] = (100.0, 300.0)
        self.world.publish(figures, T0 + timedelta(minutes=self.minute - 1))
        return self.event(self.minute)

    @precondition(lambda self: self.last_event is not None)
    @rule(during=DURING)
    def the_same_event_again(self, during: Armed | None) -> None:
        assert self.last_event is not None
        with self.operation("tick", during):
            self.invoke_tick(self.last_event)

    @precondition(lambda self: self.minute > 2)
    @rule()
    def an_older_event(self) -> None:
        before = self.world.pool()
        with self.operation("tick", None):
            decision = self.invoke_tick(self.event(self.minute - 2))
            if decision is not None and decision.get("action") is None:
                assert self.world.pool().nodes == before.nodes, "an older event changed the pool"

    @rule(
        choice=st.sampled_from(["draining", "draining", "unknown", "repeated"]),
        index=st.integers(0, 7),
        during=DURING,
    )
    def confirm_a_drain(self, choice: str, index: int, during: Armed | None) -> None:
        pool = self.world.pool()
        draining = [n for n in pool.nodes if n.state == "draining" and n.ip]
        if choice == "unknown":
            with self.operation("confirm_drain", None):
                response = self.call("POST", "/api/poolsize/change", {"cache_ip": "192.0.2.250"})
                assert response.status_code == 404, response.body
            return
        confirmed = list((pool.confirmed or {}).items())
        if choice == "repeated" and confirmed:
            ip, node_id = confirmed[index % len(confirmed)]
            with self.operation("confirm_drain", during):
                response = self.call("POST", "/api/poolsize/change", {"cache_ip": ip})
                listed = {n.ip: n for n in self.world.pool().nodes}
                if ip not in listed:
                    assert response.status_code in (200, 503), response.body
        elif draining:
            with self.operation("confirm_drain", during):
                self.confirm(draining[index % len(draining)].ip)

    def confirm(self, ip: str | None) -> Any:
        response = self.call("POST", "/api/poolsize/change", {"cache_ip": ip})
        if response.status_code == 200 and not self.interleaved():
            self.expected["drain_confirmed"] += 1
        return response

    @rule(size=st.integers(1, 8), during=DURING)
    def resize(self, size: int, during: Armed | None) -> None:
        with self.operation("resize", during):
            response = self.accept(self.call("POST", "/api/scaler/resize", {"target_size": size}), "resize")
            assert response.status_code in (200, 400, 409, 503), response.body

    @rule(miss_rate=st.sampled_from([0.0, 0.1, 0.5, 0.95, 1.0]), during=DURING)
    def set_test_miss_rate(self, miss_rate: float, during: Armed | None) -> None:
        with self.operation("set_test_miss_rate", during):
            response = self.call("POST", "/api/scaler/set_test_miss_rate", {"test_miss_rate": miss_rate})
            self.accept(response, "set_test_miss_rate")
            assert response.status_code in (200, 503), response.body

    @rule(index=st.integers(0, 7), kind=st.sampled_from(["swap", "release", "adopt"]), during=DURING)
    def cache_list(self, index: int, kind: str, during: Armed | None) -> None:
        with self.operation("cache_list", during):
            self.swap(index, kind)

    def swap(self, index: int, kind: str) -> Any:
        listed = [n.id for n in self.world.pool().nodes]
        ids = list(listed)
        if kind in ("swap", "adopt") or not ids:
            newcomer = self.world.run_instance(tagged=False)
            ids = [*ids[:index], newcomer, *ids[index + 1 :]] if kind == "swap" and ids else [*ids, newcomer]
        else:
            del ids[index % len(ids)]
        ids = ids[:8] or listed[:1]
        if not ids:
            return None
        response = self.call("POST", "/api/scaler/cache_list", {"cache_pool_ids": ids})
        assert response.status_code in (200, 400, 503), response.body
        answered = [n["id"] for n in response.json_body["nodes"]] if response.status_code == 200 else listed
        if answered != listed and not self.interleaved():
            self.expected["replace"] += 1
        return response

    @rule(
        low=st.integers(1, 8),
        span=st.integers(0, 7),
        auto=st.booleans(),
        policy=st.sampled_from(["ratio", "predictive"]),
        shadow=st.sampled_from([None, "ratio", "predictive"]),
        # A scheduled floor opening this many minutes from the machine's clock (or before it),
        # for so many minutes, at that size.
        floor=st.none() | st.tuples(st.integers(-5, 10), st.integers(1, 30), st.integers(1, 8)),
        during=DURING,
    )
    def set_config(
        self,
        low: int,
        span: int,
        auto: bool,
        policy: str,
        shadow: str | None,
        floor: tuple[int, int, int] | None,
        during: Armed | None,
    ) -> None:
        high = min(8, low + span)
        floors = []
        if floor is not None:
            opens, minutes, size = floor
            start = (T0 + timedelta(minutes=self.minute + opens)).strftime("%H:%M")
            floors = [{"start": start, "duration_minutes": minutes, "min_pool_size": size}]
        with self.operation("config", during):
            self.set_config_body(
                {
                    "min_pool_size": low,
                    "max_pool_size": high,
                    "auto_mode": auto,
                    "policy": policy,
                    "shadow_policy": shadow,
                    "scheduled_floors": floors,
                }
            )

    def set_config_body(self, body: dict[str, Any]) -> None:
        before = self.world.raw_store.load_config()[0]
        response = self.call("POST", "/api/scaler/config", body)
        assert response.status_code in (200, 503), response.body
        if response.status_code == 200:
            self.config = response.json_body
            if self.config != before and not self.interleaved():
                self.expected["config"] += 1

    @rule(during=DURING)
    def terminate_all(self, during: Armed | None) -> None:
        with self.operation("terminate_all", during):
            response = self.call("POST", "/api/scaler/terminate_all", {})
            assert response.status_code in (200, 503), response.body
            if response.status_code == 200 and response.json_body["terminated"] and not self.interleaved():
                self.expected["terminate_all"] += 1
        self.silent.clear()

    @rule(mode=st.sampled_from(["up", "down", "slow", "stalls", "gone", "back"]))
    def the_front_end(self, mode: str) -> None:
        if mode == "gone":
            os.environ.pop("FRONTEND_NOTIFY_URL", None)
        elif mode == "back":
            os.environ["FRONTEND_NOTIFY_URL"] = NOTIFY_URL
        else:
            self.world.frontend.mode = mode

    @rule(index=st.integers(0, 7), action=st.sampled_from(["stop", "terminate", "silence"]))
    def out_of_band(self, index: int, action: str) -> None:
        serving = [n.id for n in self.world.pool().nodes if n.state == IN_SERVICE]
        if not serving:
            return
        node_id = serving[index % len(serving)]
        if action == "silence":
            self.silent.add(node_id)
        else:
            self.world.out_of_band(node_id, action)

    @rule()
    def an_orphan_appears(self) -> None:
        self.world.run_instance(tagged=True)

    # -- after a tick ---------------------------------------------------------------------------

    def after_a_tick(self, decision: dict[str, Any]) -> None:
        if "another writer holds the pool" in str(decision.get("reason")):
            return  # a writer's lease: this tick looked at nothing
        pool, states = self.world.pool(), self.world.instances()
        if not os.environ.get("FRONTEND_NOTIFY_URL"):  # nobody to tell: nothing waits to be told
            stranded = [n.id for n in pool.nodes if n.state == "draining" and not n.drain_delivered]
            assert not pool.outbox and not stranded, (pool.outbox, stranded)
        # A second writer inside the tick may set the list after the tick decided (cache_list
        # takes any 1..8 nodes); the next tick is held to the bound instead.
        if decision.get("action") is not None and not decision.get("errors") and not self.interleaved():
            config = self.world.raw_store.load_config()[0]
            assert pool.pool_size <= config["max_pool_size"], (decision, config)
            self.the_config_was_followed(decision, config, pool)
        for node in pool.nodes:
            if node.state == IN_SERVICE:
                assert states[node.id][0] not in GONE, f"{node.id} terminated, still listed in service"
        accounted = {*pool.live_ids, *pool.pending_untag, *pool.pending_tag}
        tagged = {i for i, (state, tag) in states.items() if tag == POOL and state in LIVE_STATES}
        for node_id in tagged - accounted:
            self.unaccounted[node_id] = self.unaccounted.get(node_id, 0) + 1
            assert self.unaccounted[node_id] <= 2, f"{node_id} tagged, unaccounted for 3 ticks"
        for node_id in set(self.unaccounted) - (tagged - accounted):
            del self.unaccounted[node_id]

    def the_config_was_followed(self, decision: dict[str, Any], config: dict[str, Any], pool: Pool) -> None:
        """A tick that decided and acted without an error: an open scheduled floor was met (capped
        at the maximum), the shadow recorded is the one the config names, and auto_mode off only
        kept the pool within its bounds. What the config asks for is worked out here, from the
        stored config and the event's minute, not taken from the tick's own record."""
        if decision.get("replayed") or decision.get("time", "")[:16] != self.last_event_minute():
            return  # a dead writer's plan finished, or an event already answered
        low, high = config["min_pool_size"], config["max_pool_size"]
        floor = open_floor(config.get("scheduled_floors") or [], T0 + timedelta(minutes=self.minute))
        if floor > low and low < high:
            low = min(floor, high)
            assert decision["scheduled_floor"]["min_pool_size"] == low, (decision, config)
        else:
            assert "scheduled_floor" not in decision, (decision, config)
        assert pool.pool_size >= low, (decision, config, pool.pool_size)
        named = config.get("shadow_policy")
        watched = named if config["auto_mode"] else named or config["policy"]
        assert (decision.get("shadow") or {}).get("policy") == watched, (decision, config)
        if not config["auto_mode"] and decision["action"] in (SCALE_OUT, SCALE_IN):
            before = decision["previous_size"]
            assert before > high or before < low, decision

    def last_event_minute(self) -> str | None:
        """The minute of the last scheduled event: a tick is named by its minute."""
        return self.last_event["time"][:16] if self.last_event else None

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def the_hooks_saw_nothing_wrong(self) -> None:
        assert not self.world.violations, self.world.violations

    @invariant()
    def the_outbox_is_bounded(self) -> None:
        assert len(self.world.pool().outbox) <= MAX_QUEUED_NOTICES

    @invariant()
    def delivery_progress_is_kept(self) -> None:
        """A delivered notice leaves the queue in its own write: at most the one whose write an
        invocation's death or a failed call interrupted is still queued. The queue's head carries
        its number and the rest are numbered one by one as they are sent, so the i-th queued
        notice goes out as head + i."""
        queued = self.world.pool().outbox
        if not queued or "sequence" not in queued[0]:
            return
        delivered = max((n["sequence"] for n in self.world.frontend.delivered), default=0)
        still_queued = min(len(queued), delivered - queued[0]["sequence"] + 1)
        assert still_queued <= 1, (delivered, queued)

    @invariant()
    def every_accepted_write_is_in_history(self) -> None:
        records = self.world.records()
        ticks = {r["time"] for r in records if r["kind"] == "tick"}
        assert self.tick_times <= ticks, self.tick_times - ticks
        counted = Counter(r["kind"] if r["kind"] == "config" else r.get("change") for r in records)
        for change, expected in self.expected.items():
            assert counted[change] >= expected, (change, counted[change], expected)


def _settings(examples: int, steps: int) -> Any:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


class MotoPoolMachine(PoolMachine):
    backend = "moto"


PoolMachine.TestCase.settings = _settings(examples=1000, steps=50)
TestPoolOnFakes = PoolMachine.TestCase
MotoPoolMachine.TestCase.settings = _settings(examples=15, steps=25)
TestPoolOnMoto = MotoPoolMachine.TestCase
