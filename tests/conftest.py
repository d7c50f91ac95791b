"""Shared fixtures: moto for AWS, the Chalice test client, and helpers that read state back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import chalice.test
import pytest
from chalice.local import LambdaContext
from chalice.test import Client
from moto import mock_aws

from chalicelib.adapters import aws
from chalicelib.adapters.dynamodb import StateStore
from chalicelib.domain.settings import POOL_TAG_KEY, Settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
CHALICE_CONFIG = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
DEV_ENV = CHALICE_CONFIG["stages"]["dev"]["environment_variables"]
TABLE = DEV_ENV["TABLE_NAME"]
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE_AMI = "ami-12c6146b"  # one of the images moto ships (it checks none unless asked to)
OTHER_AMI = "ami-03cf127a"
REGION = "us-east-1"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach real AWS: fake credentials, no endpoint, a fixed region, pool `default`."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # moto builds its ~100,000 default images for every region of every new mock, which is most
    # of a mock's set-up; nothing here describes images (emulators the tests start inherit this).
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    monkeypatch.setenv("SCALER_API_TOKEN", TOKEN)
    monkeypatch.setenv("NODE_AMI_ID", NODE_AMI)
    monkeypatch.setenv("TABLE_NAME", TABLE)
    # The test client applies the dev stage's STAGE=dev, and the pool would be named after it:
    # the tests name theirs, as the local stack does (tests/test_stages.py unsets it).
    monkeypatch.setenv("POOL_NAME", "default")
    aws.reset_clients()


# What the deployed scheduled function gets: Chalice's test client gives every invoked function
# 3 s whatever its lambda_timeout, and a tick stops starting notification attempts when its
# time runs short; on a loaded machine that would cut deliveries the tests expect.
SCALE_TIMEOUT_SECONDS = CHALICE_CONFIG["stages"]["dev"]["lambda_functions"]["scale"]["lambda_timeout"]


@pytest.fixture(autouse=True)
def scheduled_function_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invocations through the test client get the scheduled function's real timeout (tests of
    the deadline itself inject their own)."""
    monkeypatch.setattr(
        chalice.test, "LambdaContext", partial(LambdaContext, max_runtime_ms=SCALE_TIMEOUT_SECONDS * 1000)
    )


_SESSIONS: list[boto3.session.Session] = []


def share_one_session() -> None:
    """Inside a mock: let ``boto3.client`` use one session for the whole run.

    moto empties boto3's default session for every mock, and a new session parses each service's
    model again (EC2's takes a quarter of a second); a session holds no connection and no state
    of the mock, so sharing one changes nothing but the time. moto restores the default at stop.
    """
    if not _SESSIONS:
        _SESSIONS.append(boto3.session.Session())
    boto3.DEFAULT_SESSION = _SESSIONS[0]


@pytest.fixture
def moto() -> Iterator[None]:
    """moto for every AWS service, with the table bootstrapped."""
    with mock_aws():
        share_one_session()
        aws.reset_clients()
        StateStore(TABLE, "default").create_table()
        yield
    aws.reset_clients()


@pytest.fixture
def store(moto: None) -> StateStore:
    return StateStore(TABLE, "default")


@pytest.fixture
def client(moto: None) -> Client:
    from app import app

    return Client(app, stage_name="dev", project_dir=str(PROJECT_DIR))


@pytest.fixture
def prod_client(moto: None) -> Client:
    from app import app

    return Client(app, stage_name="prod", project_dir=str(PROJECT_DIR))


@pytest.fixture
def ec2(moto: None) -> Any:
    return boto3.client("ec2", region_name=REGION)


def settings() -> Settings:
    return Settings.from_env()


def run_instances(ec2: Any, count: int = 1, image: str = NODE_AMI, pool: str | None = None) -> list[str]:
    """Start ``count`` instances of ``image``, tagged for ``pool`` when given."""
    extra: dict[str, Any] = {}
    if pool is not None:
        extra["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": POOL_TAG_KEY, "Value": pool}]}
        ]
    reply = ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType="t3.micro", **extra)
    return [instance["InstanceId"] for instance in reply["Instances"]]


def instance_states(ec2: Any) -> dict[str, tuple[str, str | None]]:
    """Every instance moto knows: id → (state, pool tag)."""
    result = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
            result[instance["InstanceId"]] = (instance["State"]["Name"], tags.get(POOL_TAG_KEY))
    return result


def table_items(table: str = TABLE) -> list[dict[str, Any]]:
    """The whole table, for "nothing changed" checks."""
    client = boto3.client("dynamodb", region_name=REGION)
    return sorted(client.scan(TableName=table)["Items"], key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def post_json(client: Client, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return client.http.post(
        path,
        headers={"Content-Type": "application/json", **AUTH, **(headers or {})},
        body=json.dumps(body) if not isinstance(body, (str, bytes)) else body,
    )


def cw_event(time: str) -> dict[str, Any]:
    """A scheduled event at ``time`` (Chalice's generate_cw_event always uses one fixed time)."""
    return {
        "version": "0",
        "id": f"event-{time}",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": time,
        "region": REGION,
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/memcache-scaler-dev-scale"],
        "detail": {},
    }


def publish(node_ids: list[str], minute_start: Any, gets: int, hits: int) -> None:
    """What a node publishes in one minute: here one datapoint of each metric per node."""
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    data = []
    for node in node_ids:
        for name, value in (("GetRequests", gets), ("Hits", hits)):
            data.append(
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "NodeId", "Value": node}],
                    "Timestamp": minute_start,
                    "Value": value,
                    "Unit": "Count",
                }
            )
    cloudwatch.put_metric_data(Namespace="Memcache", MetricData=data)


def metric_queries(names: Any, node_ids: list[str], end: Any, **read: Any) -> list[dict[str, Any]]:
    """The ``MetricDataQueries`` of the one GetMetricData call ``PoolMetrics.read`` makes,
    answered by a Stubber (window 60 s, look-back 300 s)."""
    from botocore.stub import Stubber

    from chalicelib.adapters.cloudwatch import PoolMetrics

    client = boto3.client("cloudwatch", region_name=REGION)
    seen: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.cloudwatch.GetMetricData", lambda params, **_: seen.append(params)
    )
    with Stubber(client) as stub:
        stub.add_response("get_metric_data", {"MetricDataResults": []})
        PoolMetrics(names, client=client).read(node_ids, end, 60, 300, **read)
    (params,) = seen
    return params["MetricDataQueries"]
