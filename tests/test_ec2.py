"""Adapter: EC2 under moto, scoped to the pool's tag."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.adapters.ec2 import Ec2Nodes
from chalicelib.domain.errors import DependencyError
from chalicelib.domain.settings import LaunchSpec, Settings
from tests.conftest import NODE_AMI, OTHER_AMI, REGION, instance_states, run_instances


def test_describe_leaves_out_unknown_ids(ec2: Any) -> None:
    (known,) = run_instances(ec2)
    found = Ec2Nodes("default").describe([known, "i-0000000000000dead"])
    assert list(found) == [known]
    instance = found[known]
    assert instance.image_id == NODE_AMI and instance.pool is None
    assert instance.ip and instance.instance_type == "t3.micro"
    assert instance.launched_at.endswith("Z")


def test_list_finds_only_this_pools_live_instances(ec2: Any) -> None:
    mine = run_instances(ec2, 2, pool="default")
    run_instances(ec2, 1, pool="other")
    run_instances(ec2, 1)
    ec2.terminate_instances(InstanceIds=[mine[1]])
    assert [i.id for i in Ec2Nodes("default").list_pool_instances()] == [mine[0]]


def test_untag_removes_only_this_pools_tag(ec2: Any) -> None:
    (theirs,) = run_instances(ec2, pool="other")
    (ours,) = run_instances(ec2, pool="default")
    Ec2Nodes("default").untag([theirs, ours])
    states = instance_states(ec2)
    assert states[theirs][1] == "other" and states[ours][1] is None


def test_tag_then_terminate(ec2: Any) -> None:
    (node,) = run_instances(ec2)
    nodes = Ec2Nodes("default")
    nodes.tag([node])
    assert instance_states(ec2)[node][1] == "default"
    nodes.terminate([node])
    assert instance_states(ec2)[node][0] in ("shutting-down", "terminated")


def test_node_image_comes_from_the_ami_or_the_launch_template(ec2: Any) -> None:
    ec2.create_launch_template(
        LaunchTemplateName="memcache-node", LaunchTemplateData={"ImageId": "ami-03cf127a"}
    )
    nodes = Ec2Nodes("default")
    image = nodes.node_identity
    assert image(LaunchSpec(ami_id="ami-1", launch_template="memcache-node")).image_id == "ami-1"
    assert image(LaunchSpec(launch_template="memcache-node")).image_id == "ami-03cf127a"
    assert image(LaunchSpec()).image_id is None


def test_the_pinned_template_version_gives_the_node_image_and_launches(ec2: Any) -> None:
    """CloudFormation adds a version on each update and leaves $Default at 1: a stack pins the
    version it made last, and both the launch and cache_list's image check must use that one."""
    template = ec2.create_launch_template(
        LaunchTemplateName="memcache-node",
        LaunchTemplateData={"ImageId": OTHER_AMI, "InstanceType": "t3.micro"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(
        LaunchTemplateId=template, LaunchTemplateData={"ImageId": NODE_AMI, "InstanceType": "t3.micro"}
    )
    nodes = Ec2Nodes("default")
    pinned = Settings.from_env({"NODE_LAUNCH_TEMPLATE": template, "NODE_LAUNCH_TEMPLATE_VERSION": "2"}).launch
    unpinned = Settings.from_env({"NODE_LAUNCH_TEMPLATE": template}).launch
    assert unpinned.launch_template_version == "$Default"
    assert nodes.node_identity(pinned).image_id == NODE_AMI
    assert nodes.node_identity(unpinned).image_id == OTHER_AMI
    assert nodes.launch("tok-pinned", pinned, 0).image_id == NODE_AMI
    assert nodes.launch("tok-default", unpinned, 0).image_id == OTHER_AMI


@pytest.mark.parametrize("version", ["0", "-1", "latest", "2.0", "\u00b2"])
def test_a_template_version_that_is_no_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="NODE_LAUNCH_TEMPLATE_VERSION"):
        Settings.from_env({"NODE_LAUNCH_TEMPLATE_VERSION": version})


def test_ec2_failures_become_dependency_errors(moto: None) -> None:
    client = boto3.client("ec2", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("terminate_instances", "RequestLimitExceeded")
        with pytest.raises(DependencyError, match="RequestLimitExceeded"):
            Ec2Nodes("default", client=client).terminate(["i-0123456789abcdef0"])


def _spec(**changes: Any) -> Any:
    from chalicelib.domain.settings import LaunchSpec

    return LaunchSpec(**{"ami_id": NODE_AMI, **changes})


def test_launch_tags_the_node_and_spreads_it_over_the_subnets(ec2: Any, tmp_path: Any) -> None:
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24")["Subnet"]["SubnetId"] for n in range(2)
    ]
    user_data = tmp_path / "user-data.sh"
    user_data.write_text("#!/bin/sh\necho memcached\n")
    spec = _spec(instance_types=("t3.small",), subnet_ids=tuple(subnets), user_data_file=str(user_data))
    nodes = Ec2Nodes("default")
    launched = [nodes.launch(f"token-{slot}", spec, slot) for slot in range(3)]
    described = {i["InstanceId"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert [described[n.id]["SubnetId"] for n in launched] == [subnets[0], subnets[1], subnets[0]]
    assert {described[n.id]["InstanceType"] for n in launched} == {"t3.small"}
    assert [n.launch_token for n in launched] == ["token-0", "token-1", "token-2"]
    assert [i.id for i in nodes.list_pool_instances()] == [n.id for n in launched]


def _captured_launches(client: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.ec2.RunInstances", lambda params, **_: seen.append(dict(params))
    )
    return seen


def _reservation(instance_type: str) -> dict[str, Any]:
    return {
        "Instances": [
            {
                "InstanceId": "i-0123456789abcdef0",
                "State": {"Name": "pending", "Code": 0},
                "ImageId": NODE_AMI,
                "InstanceType": instance_type,
            }
        ]
    }


def test_launch_falls_back_along_the_instance_types_with_a_token_per_type(moto: None) -> None:
    client = boto3.client("ec2", region_name=REGION)
    seen = _captured_launches(client)
    with Stubber(client) as stub:
        stub.add_client_error("run_instances", "InsufficientInstanceCapacity")
        stub.add_response("run_instances", _reservation("t3.medium"))
        instance = Ec2Nodes("default", client=client).launch(
            "tok", _spec(instance_types=("t3.small", "t3.medium")), 0
        )
    assert instance.instance_type == "t3.medium"
    assert [(p["InstanceType"], p["ClientToken"]) for p in seen] == [
        ("t3.small", "tok"),
        ("t3.medium", "tok-1"),
    ]
    tags = {t["Key"]: t["Value"] for t in seen[0]["TagSpecifications"][0]["Tags"]}
    assert tags == {"memcache-pool": "default", "memcache-scaler:launch-token": "tok"}


def test_launch_sends_the_launch_settings(moto: None) -> None:
    client = boto3.client("ec2", region_name=REGION)
    seen = _captured_launches(client)
    spec = _spec(
        ami_id=None,
        launch_template="lt-0123456789abcdef0",
        security_group_ids=("sg-1", "sg-2"),
        key_name="ops",
        instance_profile="arn:aws:iam::123456789012:instance-profile/memcache",
    )
    with Stubber(client) as stub:
        stub.add_response("run_instances", _reservation("t3.micro"))
        Ec2Nodes("default", client=client).launch("tok", spec, 0)
    (params,) = seen
    assert params["LaunchTemplate"] == {"LaunchTemplateId": "lt-0123456789abcdef0", "Version": "$Default"}
    assert "InstanceType" not in params and "ImageId" not in params  # the template's
    assert params["SecurityGroupIds"] == ["sg-1", "sg-2"] and params["KeyName"] == "ops"
    assert params["IamInstanceProfile"] == {"Arn": spec.instance_profile}


def test_capacity_everywhere_short_is_a_dependency_error(moto: None) -> None:
    client = boto3.client("ec2", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("run_instances", "InsufficientInstanceCapacity")
        with pytest.raises(DependencyError, match="InsufficientInstanceCapacity"):
            Ec2Nodes("default", client=client).launch("tok", _spec(instance_types=("t3.small",)), 0)


def test_launch_without_an_image_is_a_conflict(moto: None) -> None:
    from chalicelib.domain.errors import PoolConflictError

    with pytest.raises(PoolConflictError, match="NODE_AMI_ID"):
        Ec2Nodes("default").launch("tok", _spec(ami_id=None), 0)


def test_impaired_reads_both_status_checks(moto: None) -> None:
    client = boto3.client("ec2", region_name=REGION)

    def status(instance_id: str, instance: str, system: str) -> dict[str, Any]:
        return {
            "InstanceId": instance_id,
            "InstanceStatus": {"Status": instance},
            "SystemStatus": {"Status": system},
        }

    with Stubber(client) as stub:
        stub.add_response(
            "describe_instance_status",
            {
                "InstanceStatuses": [
                    status("i-00000001", "ok", "ok"),
                    status("i-00000002", "impaired", "ok"),
                    status("i-00000003", "ok", "impaired"),
                    status("i-00000004", "initializing", "ok"),
                ]
            },
        )
        found = Ec2Nodes("default", client=client).impaired(
            ["i-00000001", "i-00000002", "i-00000003", "i-00000004"]
        )
    assert found == {"i-00000002", "i-00000003"}
    assert Ec2Nodes("default", client=client).impaired([]) == set()
