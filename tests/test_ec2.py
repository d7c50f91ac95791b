"""Adapter: EC2 under moto, scoped to the pool's tag."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.ec2 import Ec2Nodes
from chalicelib.errors import DependencyError
from tests.conftest import NODE_AMI, REGION, instance_states, run_instances


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
    assert nodes.node_image_id("ami-1", "memcache-node") == "ami-1"
    assert nodes.node_image_id(None, "memcache-node") == "ami-03cf127a"
    assert nodes.node_image_id(None, None) is None


def test_ec2_failures_become_dependency_errors(moto: None) -> None:
    client = boto3.client("ec2", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("terminate_instances", "RequestLimitExceeded")
        with pytest.raises(DependencyError, match="RequestLimitExceeded"):
            Ec2Nodes("default", client=client).terminate(["i-0123456789abcdef0"])
