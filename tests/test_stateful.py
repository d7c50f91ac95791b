"""A random interleaving of ticks, retried events and route calls, with the invariants checked
after every step: nodes are never lost, never terminated before their decrease was delivered,
orphans do not survive two ticks, the pool stays within bounds, nothing recorded is lost."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from chalice.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from moto import mock_aws

from chalicelib import aws
from chalicelib.store import StateStore
from tests.conftest import AUTH, NODE_AMI, PROJECT_DIR, REGION, TABLE, TOKEN, cw_event
from tests.frontend import FakeFrontend

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "SCALER_API_TOKEN": TOKEN,
    "NODE_AMI_ID": NODE_AMI,
    "POOL_NAME": "default",  # not the dev stage's name: the machine's store is pool "default"
    "NODE_READINESS": "running",
    "FRONTEND_NOTIFY_TIMEOUT_SECONDS": "0.2",
}


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.saved_env = {
            name: os.environ.get(name) for name in [*ENV, "FRONTEND_NOTIFY_URL", "AWS_ENDPOINT_URL"]
        }
        os.environ.update(ENV)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        self.frontend = FakeFrontend().__enter__()
        os.environ["FRONTEND_NOTIFY_URL"] = self.frontend.url
        self.mock = mock_aws()
        self.mock.start()
        aws.reset_clients()
        StateStore(TABLE, "default").create_table()
        from app import app

        self.client = Client(app, stage_name="dev", project_dir=str(PROJECT_DIR))
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.minute = 0
        self.last_event: dict[str, Any] | None = None
        self.tick_times: set[str] = set()
        self.config: dict[str, Any] = self.get("/api/scaler/config")
        self.orphans: dict[str, int] = {}  # id → ticks seen since it was made
        self.announced: set[str] = set()
        self.ended_by_test: set[str] = set()
        self.late: list[str] = []
        self.frontend.on_notice = self.check_decrease_comes_first

    def check_decrease_comes_first(self, notice: dict[str, Any]) -> None:
        """At the moment a decrease arrives, none of its nodes may be gone yet."""
        if notice["change"] != "decrease":
            return
        states = self.instances()
        for node in notice["removing"]:
            state = states.get(node["id"], ("gone",))[0]
            if state in ("shutting-down", "terminated", "gone") and node["id"] not in self.ended_by_test:
                self.late.append(node["id"])

    def teardown(self) -> None:
        self.mock.stop()
        aws.reset_clients()
        self.frontend.__exit__()
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # -- helpers -------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self.client.http.get(path, headers=AUTH).json_body

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.http.post(
            path, headers={**AUTH, "Content-Type": "application/json"}, body=json.dumps(body)
        )

    def instances(self) -> dict[str, tuple[str, str | None]]:
        result = {}
        for reservation in self.ec2.describe_instances()["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                result[instance["InstanceId"]] = (instance["State"]["Name"], tags.get("memcache-pool"))
        return result

    def publish(self, miss_rate: float) -> None:
        ids = self.get("/api/scaler/cache_list")["cache_pool_ids"]
        if not ids:
            return
        minute = T0 + timedelta(minutes=self.minute - 1)
        data = [
            {
                "MetricName": name,
                "Dimensions": [{"Name": "NodeId", "Value": node}],
                "Timestamp": minute,
                "Value": value,
            }
            for node in ids
            for name, value in (("GetRequests", 1000), ("Hits", round(1000 * (1 - miss_rate))))
        ]
        boto3.client("cloudwatch", region_name=REGION).put_metric_data(Namespace="Memcache", MetricData=data)

    # -- rules ---------------------------------------------------------------------------

    @initialize(size=st.integers(1, 8))
    def a_pool_in_service(self, size: int) -> None:
        """Start from nodes the front-end knows, so that shrinking them is what gets explored."""
        self.set_config(1, 7, False)
        assert self.post("/api/scaler/resize", {"target_size": size}).status_code == 200
        self.tick(1, None)

    @rule(step=st.integers(1, 3), miss_rate=st.none() | st.floats(0, 1))
    def tick(self, step: int, miss_rate: float | None) -> None:
        self.minute += step
        if miss_rate is not None:
            self.publish(miss_rate)
        stamp = (T0 + timedelta(minutes=self.minute, seconds=17)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.last_event = cw_event(stamp)
        decision = self.client.lambda_.invoke("scale", self.last_event).payload
        self.tick_times.add(decision["time"])
        for orphan in self.orphans:
            self.orphans[orphan] += 1
        pool = self.get("/api/scaler/cache_list")
        size = len(pool["cache_pool_ids"])
        if "errors" not in decision:
            assert self.config["min_pool_size"] <= size <= self.config["max_pool_size"], (
                decision,
                self.config,
            )

    @precondition(lambda self: self.last_event is not None)
    @rule()
    def retry_the_last_event(self) -> None:
        before = self.instances()
        decision = self.client.lambda_.invoke("scale", self.last_event).payload
        assert decision.get("replayed") is True
        assert set(self.instances()) == set(before), "a retried event launched again"

    @rule(low=st.integers(1, 8), span=st.integers(0, 7), auto=st.booleans())
    def set_config(self, low: int, span: int, auto: bool) -> None:
        body = {"min_pool_size": low, "max_pool_size": min(8, low + span), "auto_mode": auto}
        response = self.post("/api/scaler/config", body)
        assert response.status_code == 200
        self.config = response.json_body
        assert self.get("/api/scaler/config") == self.config

    @rule(miss_rate=st.floats(0, 1))
    def set_test_miss_rate(self, miss_rate: float) -> None:
        response = self.post("/api/scaler/set_test_miss_rate", {"test_miss_rate": miss_rate})
        assert response.status_code == 200, response.body

    @rule(size=st.integers(1, 8))
    def resize(self, size: int) -> None:
        response = self.post("/api/scaler/resize", {"target_size": size})
        assert response.status_code in (200, 400, 409), response.body

    @rule(index=st.integers(0, 7))
    def confirm_a_drain(self, index: int) -> None:
        draining = [n for n in self.get("/api/scaler/cache_list")["nodes"] if n["state"] == "draining"]
        if draining:
            node = draining[index % len(draining)]
            response = self.post("/api/poolsize/change", {"cache_ip": node["ip"]})
            assert response.status_code == 200 and response.json_body == {"terminated": node["id"]}

    @rule(up=st.booleans())
    def front_end_health(self, up: bool) -> None:
        self.frontend.status = 200 if up else 500

    @rule()
    def an_orphan_appears(self) -> None:
        reply = self.ec2.run_instances(
            ImageId=NODE_AMI,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "memcache-pool", "Value": "default"}]}
            ],
        )
        self.orphans[reply["Instances"][0]["InstanceId"]] = 0

    @rule()
    def terminate_all(self) -> None:
        response = self.post("/api/scaler/terminate_all", {})
        assert response.status_code == 200
        self.ended_by_test.update(response.json_body["terminated"])
        self.orphans.clear()

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def at_most_eight_live_nodes_and_none_lost(self) -> None:
        nodes = self.get("/api/scaler/cache_list")["nodes"]
        assert len(nodes) <= 8
        states = self.instances()
        for node in nodes:  # every listed node is a live, tagged instance
            assert states[node["id"]][0] in ("pending", "running"), (node, states[node["id"]])
            assert states[node["id"]][1] == "default"

    @invariant()
    def orphans_do_not_survive_two_ticks(self) -> None:
        states = self.instances()
        for orphan, ticks in self.orphans.items():
            if ticks >= 2:
                assert states[orphan][0] in ("shutting-down", "terminated"), orphan

    @invariant()
    def no_announced_node_goes_before_its_decrease(self) -> None:
        notices = self.frontend.notices
        for notice in notices:
            if notice["change"] == "increase":
                self.announced.update(node["id"] for node in notice["added"])
        assert not self.late, f"terminated before their decrease was delivered: {self.late}"
        told = {
            node["id"] for notice in notices if notice["change"] == "decrease" for node in notice["removing"]
        }
        for node_id, (state, _) in self.instances().items():
            gone = state in ("shutting-down", "terminated")
            if gone and node_id in self.announced and node_id not in self.ended_by_test:
                assert node_id in told, f"{node_id} terminated before its decrease was delivered"

    @invariant()
    def every_tick_is_recorded(self) -> None:
        records = self.get("/api/scaler/history?minutes=10080")["records"]
        recorded = {r["time"] for r in records if r["kind"] == "tick"}
        assert self.tick_times <= recorded


PoolMachine.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=14,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolInterleavings = PoolMachine.TestCase
