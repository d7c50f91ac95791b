"""``make deploy`` and ``make destroy`` without an AWS account: their dry runs print every call in
order, and the steps moto supports run against it (the SAM transform it does not: the
change set's call is checked with botocore's Stubber)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from deploy import stack
from tests.conftest import REGION, run_instances


class Recorder(stack.Aws):
    """Real calls (or a dry run), with the order of the calls kept."""

    def __init__(self, *, dry_run: bool, clients: dict[str, Any] | None = None) -> None:
        self.lines: list[str] = []
        super().__init__(dry_run=dry_run, out=self.lines.append, clients=clients)
        self.calls: list[str] = []

    def call(self, service: str, operation: str, answer: Any = None, **params: Any) -> Any:
        self.calls.append(f"{service}.{operation}")
        return super().call(service, operation, answer, **params)


def built(tmp_path: Path) -> Path:
    """What ``chalice package`` leaves: a zip and a SAM template with two functions."""
    with zipfile.ZipFile(tmp_path / "deployment.zip", "w") as package:
        package.writestr("app.py", "")
    function = {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "./deployment.zip"}}
    template = {
        "Resources": {"APIHandler": function, "Scale": function, "Table": {"Type": "AWS::DynamoDB::Table"}}
    }
    (tmp_path / "sam.json").write_text(json.dumps(template))
    return tmp_path


def test_destroy_dry_run_disables_the_schedule_before_terminating_and_keeps_the_table() -> None:
    aws = Recorder(dry_run=True)
    stack.destroy(aws, "prod", pool="prod", delete_table=False)
    assert aws.calls == [
        "cloudformation.describe_stack_resources",
        "events.disable_rule",
        "ec2.describe_instances",
        "ec2.terminate_instances",
        "cloudformation.delete_stack",
    ]
    assert "memcache-pool" in aws.lines[2] and '"prod"' in aws.lines[2]
    assert aws.lines[-1].startswith("table memcache-scaler-prod retained")
    asked = Recorder(dry_run=True)
    stack.destroy(asked, "prod", pool="prod", delete_table=True)
    assert asked.calls[-2:] == ["dynamodb.update_table", "dynamodb.delete_table"]


def test_deploy_dry_run_prints_each_call_and_sets_the_stage(tmp_path: Path) -> None:
    aws = Recorder(dry_run=True)
    parameters = stack.parse_parameters("AlarmTopicArn=arn:aws:sns:us-east-1:123456789012:t", "dev")
    stack.deploy(aws, "dev", "artifacts", parameters, built(tmp_path))
    assert aws.calls == [
        "ssm.get_parameter",
        "ssm.put_parameter",
        "s3.put_object",
        "s3.put_object",
        "s3.put_object",
        "cloudformation.describe_stacks",
        "cloudformation.create_change_set",
        "cloudformation.execute_change_set",
        "cloudformation.describe_stacks",
    ]
    change_set = next(line for line in aws.lines if "create_change_set" in line)
    assert '"ParameterKey": "Stage", "ParameterValue": "dev"' in change_set
    assert "CAPABILITY_NAMED_IAM" in change_set and "CAPABILITY_AUTO_EXPAND" in change_set
    # The nodes install the agent just uploaded, and may read that object alone.
    agent = next(line for line in aws.lines if "node-agent.tgz" in line)
    key = agent.split("Key='")[1].split("'")[0]
    assert f'AGENT_URL=\\"s3://artifacts/{key}\\"' in change_set
    assert (
        f'"ParameterKey": "NodeAgentObjectArn", "ParameterValue": "arn:aws:s3:::artifacts/{key}"'
        in change_set
    )


def test_an_operator_s_own_user_data_is_kept_and_nothing_of_the_agent_is_uploaded(tmp_path: Path) -> None:
    aws = Recorder(dry_run=True)
    parameters = stack.parse_parameters("NodeUserData=#!/bin/true", "dev")
    stack.deploy(aws, "dev", "artifacts", parameters, built(tmp_path))
    assert aws.calls.count("s3.put_object") == 2 and not any("node-agent" in line for line in aws.lines)


def test_the_agent_tarball_is_the_same_bytes_for_the_same_files_and_holds_the_agent() -> None:
    first = stack.node_agent_tarball()
    assert first == stack.node_agent_tarball()
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    assert {"node_agent/__main__.py", "node_agent/deploy/memcache-node-agent.service"} <= set(names)
    assert not any("__pycache__" in name for name in names)


@pytest.mark.parametrize("bad", ["Stage=prod", "VpcId", "=x"])
def test_bad_stack_parameters_stop_the_deploy(bad: str) -> None:
    with pytest.raises(SystemExit):
        stack.parse_parameters(bad, "dev")


def test_destroy_under_moto_ends_the_stage_s_instances_only_and_keeps_the_table(moto: None, ec2: Any) -> None:
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    rule = {
        "Type": "AWS::Events::Rule",
        "Properties": {"ScheduleExpression": "rate(1 minute)", "State": "ENABLED"},
    }
    cloudformation.create_stack(
        StackName="memcache-scaler-dev", TemplateBody=json.dumps({"Resources": {"ScaleEvent": rule}})
    )
    ours, theirs = run_instances(ec2, 2, pool="dev"), run_instances(ec2, 1, pool="prod")
    aws = Recorder(dry_run=False)
    assert sorted(stack.destroy(aws, "dev", pool="dev", delete_table=False)) == sorted(ours)
    assert aws.calls.index("events.disable_rule") < aws.calls.index("ec2.terminate_instances")
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert {states[i] for i in ours} == {"terminated"} and states[theirs[0]] == "running"
    assert "memcache-scaler-dev" not in [
        s["StackName"]
        for s in cloudformation.list_stacks(StackStatusFilter=["CREATE_COMPLETE"])["StackSummaries"]
    ]
    assert boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"]  # retained


def test_deploy_under_moto_makes_a_token_once_uploads_and_asks_for_a_change_set(
    moto: None, tmp_path: Path
) -> None:
    s3, ssm = boto3.client("s3", region_name=REGION), boto3.client("ssm", region_name=REGION)
    s3.create_bucket(Bucket="artifacts")
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    tokens = []
    for _ in range(2):
        with Stubber(cloudformation) as stub:
            missing = {
                "service_error_code": "ValidationError",
                "service_message": "Stack with id x does not exist",
            }
            stub.add_client_error("describe_stacks", **missing)
            stub.add_response(
                "create_change_set",
                {"Id": "cs"},
                {
                    "StackName": "memcache-scaler-dev",
                    "ChangeSetName": ANY,
                    "ChangeSetType": "CREATE",
                    "TemplateURL": ANY,
                    "Parameters": ANY,  # Stage and the agent's: the dry run's test reads them
                    "Capabilities": stack.CAPABILITIES,
                },
            )
            stub.add_response("execute_change_set", {})
            outputs = [{"OutputKey": "EndpointURL", "OutputValue": "https://x.execute-api/api/"}]
            stub.add_response(
                "describe_stacks",
                {
                    "Stacks": [
                        {
                            "StackName": "s",
                            "CreationTime": "2026-01-01",
                            "StackStatus": "CREATE_COMPLETE",
                            "Outputs": outputs,
                        }
                    ]
                },
            )
            aws = Recorder(dry_run=False, clients={"cloudformation": cloudformation})
            aws.wait = lambda *args, **kwargs: None  # type: ignore[method-assign]  # waiters poll the stub
            assert stack.deploy(aws, "dev", "artifacts", stack.parse_parameters("", "dev"), built(tmp_path))
        tokens.append(
            ssm.get_parameter(Name="/memcache-scaler/dev/api-token", WithDecryption=True)["Parameter"][
                "Value"
            ]
        )
        assert "API: https://x.execute-api/api/" in aws.lines
    assert tokens[0] == tokens[1] and len(tokens[0]) >= 32  # made once, then kept
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="artifacts")["Contents"]]
    uploaded = json.loads(
        s3.get_object(Bucket="artifacts", Key=next(k for k in keys if k.endswith(".json")))["Body"].read()
    )
    assert {f["Properties"]["CodeUri"] for f in uploaded["Resources"].values() if "Properties" in f} == {
        f"s3://artifacts/{next(k for k in keys if k.endswith('.zip'))}"
    }
