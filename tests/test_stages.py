"""Stages in one account: each runs its own pool (POOL_NAME → STAGE → ``default``), and
cache_list adopts only instances that carry the node instance profile when one is configured.

Everything goes through the routes and the scheduled function (Chalice's test client), under
one moto: one EC2 account that both stages share, as dev and prod can in real life.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib.adapters.dynamodb import StateStore
from tests.conftest import (
    AUTH,
    NODE_AMI,
    OTHER_AMI,
    PROJECT_DIR,
    REGION,
    cw_event,
    instance_states,
    post_json,
    run_instances,
    table_items,
)

PROD_TABLE = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())["stages"]["prod"][
    "environment_variables"
]["TABLE_NAME"]
NODE_PROFILE = "memcache-scaler-node-dev"  # the dev stage's node instance profile, as its policies name it


def tick(client: Client, minute: int) -> dict[str, Any]:
    return client.lambda_.invoke("scale", cw_event(f"2026-11-26T12:{minute:02d}:00Z")).payload


def cache_list(client: Client) -> dict[str, Any]:
    response = client.http.get("/api/scaler/cache_list", headers=AUTH)
    assert response.status_code == 200, response.body
    return response.json_body


def history(client: Client) -> list[dict[str, Any]]:
    return client.http.get("/api/scaler/history?minutes=1440", headers=AUTH).json_body["records"]


def snapshot(ec2: Any) -> tuple[Any, Any]:
    return table_items(), instance_states(ec2)


def message(response: Any) -> str:
    body = json.loads(response.body)
    assert set(body) == {"Code", "Message"}
    return body["Message"]


def instance_profile(name: str, path: str = "/") -> str:
    """Create an instance profile in moto's IAM; answers its ARN."""
    iam = boto3.client("iam", region_name=REGION)
    return iam.create_instance_profile(InstanceProfileName=name, Path=path)["InstanceProfile"]["Arn"]


def run_with_profile(ec2: Any, profile: str, image: str = NODE_AMI) -> str:
    reply = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        IamInstanceProfile={"Arn" if profile.startswith("arn:") else "Name": profile},
    )
    return reply["Instances"][0]["InstanceId"]


# -- one pool per stage -------------------------------------------------------------------


def test_dev_and_prod_in_one_account_keep_each_others_nodes(
    client: Client, prod_client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POOL_NAME", raising=False)
    StateStore(PROD_TABLE, "prod").create_table()  # each stage has its own table, as deployed

    assert tick(client, 0)["action"] == "repair"  # dev launches its node
    for minute in range(1, 5):  # prod starts a minute later; then both tick, side by side
        decision = tick(prod_client, minute)
        assert decision["action"] == ("repair" if minute == 1 else "hold"), decision
        assert tick(client, minute)["action"] == "hold"

    (dev_node,) = cache_list(client)["cache_pool_ids"]
    (prod_node,) = cache_list(prod_client)["cache_pool_ids"]
    assert dev_node != prod_node
    # Nothing was terminated as an orphan: each stage saw the other's node and left it alone.
    assert instance_states(ec2) == {dev_node: ("running", "dev"), prod_node: ("running", "prod")}
    for stage_client in (client, prod_client):
        reasons = [record.get("reason", "") for record in history(stage_client)]
        assert not [reason for reason in reasons if "in no list or plan" in reason]


def test_without_pool_name_cache_list_tags_with_the_stage_and_leaves_the_other_stages_nodes(
    client: Client, prod_client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POOL_NAME", raising=False)
    StateStore(PROD_TABLE, "prod").create_table()
    mine, theirs = run_instances(ec2, 2)
    assert post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [mine]}).status_code == 200
    assert instance_states(ec2)[mine] == ("running", "dev")

    refused = post_json(prod_client, "/api/scaler/cache_list", {"cache_pool_ids": [mine]})
    assert refused.status_code == 400
    assert f"{mine}: belongs to pool 'dev'" in message(refused)
    assert post_json(prod_client, "/api/scaler/cache_list", {"cache_pool_ids": [theirs]}).status_code == 200
    assert instance_states(ec2) == {mine: ("running", "dev"), theirs: ("running", "prod")}


def test_pool_name_in_the_environment_wins_over_the_stage(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOL_NAME", "blue")  # the dev stage sets STAGE=dev
    (stage_tagged,) = run_instances(ec2, pool="dev")
    (free,) = run_instances(ec2)

    assert tick(client, 0)["action"] == "repair"
    (launched,) = cache_list(client)["cache_pool_ids"]
    assert instance_states(ec2)[launched] == ("running", "blue")

    refused = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [launched, stage_tagged]})
    assert refused.status_code == 400
    assert f"{stage_tagged}: belongs to pool 'dev'" in message(refused)
    adopted = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [launched, free]})
    assert adopted.status_code == 200
    assert instance_states(ec2)[free] == ("running", "blue")

    tick(client, 1)
    tick(client, 2)  # the dev-tagged instance is no orphan of pool blue: still running
    assert instance_states(ec2)[stage_tagged] == ("running", "dev")


# -- cache_list checks the node instance profile ------------------------------------------


@pytest.mark.parametrize("path", ["/", "/memcache/nodes/"])
@pytest.mark.parametrize("configured_as", ["name", "arn"])
def test_cache_list_adopts_only_instances_with_the_node_instance_profile(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch, path: str, configured_as: str
) -> None:
    arn = instance_profile(NODE_PROFILE, path)
    other_arn = instance_profile("some-other-profile", path)
    monkeypatch.setenv("NODE_INSTANCE_PROFILE", NODE_PROFILE if configured_as == "name" else arn)
    (bare,) = run_instances(ec2)
    other = run_with_profile(ec2, "some-other-profile")
    node = run_with_profile(ec2, NODE_PROFILE)

    for refused_id, words in ((bare, "has no instance profile"), (other, other_arn)):
        before = snapshot(ec2)
        response = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [node, refused_id]})
        assert response.status_code == 400, response.body
        text = message(response)
        assert f"{refused_id}: " in text and words in text
        assert node not in text, "the right instance is not named as a problem"
        assert snapshot(ec2) == before, "a 400 changes nothing"

    response = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [node]})
    assert response.status_code == 200, response.body
    assert response.json_body["cache_pool_ids"] == [node]
    assert instance_states(ec2)[node] == ("running", "default")


def test_a_profile_named_like_the_node_profile_under_another_name_is_refused(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance_profile(f"not-{NODE_PROFILE}")
    instance_profile(NODE_PROFILE)
    monkeypatch.setenv("NODE_INSTANCE_PROFILE", NODE_PROFILE)
    lookalike = run_with_profile(ec2, f"not-{NODE_PROFILE}")
    response = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [lookalike]})
    assert response.status_code == 400 and f"{lookalike}: " in message(response)


def test_without_a_configured_profile_any_profile_is_adopted(client: Client, ec2: Any) -> None:
    instance_profile("whatever-profile")
    (bare,) = run_instances(ec2)
    profiled = run_with_profile(ec2, "whatever-profile")
    response = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [bare, profiled]})
    assert response.status_code == 200, response.body


@pytest.mark.parametrize("key", ["Name", "Arn"])
def test_cache_list_uses_the_launch_templates_instance_profile(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    arn = instance_profile(NODE_PROFILE)
    monkeypatch.delenv("NODE_AMI_ID")
    monkeypatch.delenv("NODE_INSTANCE_PROFILE", raising=False)
    monkeypatch.setenv("NODE_LAUNCH_TEMPLATE", "memcache-node")
    ec2.create_launch_template(
        LaunchTemplateName="memcache-node",
        LaunchTemplateData={
            "ImageId": OTHER_AMI,
            "IamInstanceProfile": {key: NODE_PROFILE if key == "Name" else arn},
        },
    )
    (bare,) = run_instances(ec2, image=OTHER_AMI)
    wrong_image = run_with_profile(ec2, NODE_PROFILE, image=NODE_AMI)
    node = run_with_profile(ec2, NODE_PROFILE, image=OTHER_AMI)

    before = snapshot(ec2)
    refused = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [node, bare, wrong_image]})
    assert refused.status_code == 400
    text = message(refused)
    assert f"{bare}: has no instance profile" in text
    assert f"{wrong_image}: image {NODE_AMI} is not the node image {OTHER_AMI}" in text
    assert snapshot(ec2) == before

    assert post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [node]}).status_code == 200
    assert instance_states(ec2)[node] == ("running", "default")


def test_node_instance_profile_wins_over_the_launch_templates(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance_profile(NODE_PROFILE)
    instance_profile("template-profile")
    monkeypatch.delenv("NODE_AMI_ID")
    monkeypatch.setenv("NODE_LAUNCH_TEMPLATE", "memcache-node")
    monkeypatch.setenv("NODE_INSTANCE_PROFILE", NODE_PROFILE)  # a launch overrides the template's too
    ec2.create_launch_template(
        LaunchTemplateName="memcache-node",
        LaunchTemplateData={"ImageId": OTHER_AMI, "IamInstanceProfile": {"Name": "template-profile"}},
    )
    templated = run_with_profile(ec2, "template-profile", image=OTHER_AMI)
    node = run_with_profile(ec2, NODE_PROFILE, image=OTHER_AMI)
    assert post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [templated]}).status_code == 400
    assert post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [node]}).status_code == 200
