"""What a deploy gets: `chalice package --merge-template deploy/resources.json` for both stages.

Packaging runs once per stage per session (a module fixture), without AWS credentials (fake
ones, no network to AWS: `chalice package` only builds the zip and the template). The asserts
read the generated ``sam.json``: the schedule, each function's own role and the tag conditions
in its policy, the table, the alarms and the stage's switches.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.settings import POOL_TAG_KEY, Settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
CHALICE_DIR = PROJECT_DIR / ".chalice"
CONFIG = json.loads((CHALICE_DIR / "config.json").read_text())
MERGE_TEMPLATE = PROJECT_DIR / "deploy" / "resources.json"
STAGES = ("dev", "prod")
FUNCTIONS = {"api_handler": "APIHandler", "scale": "Scale"}  # Chalice name -> logical id
EMF_NAMESPACE = "MemcacheScaler"
# What the functions publish (chalicelib/adapters/observability.py); alarms may read nothing else.
EMF_METRICS = {
    "MissRate",
    "PoolSize",
    "ScalingActions",
    "TickDurationMs",
    "NotificationFailures",
    "LaunchFailures",
    "TerminateFailures",
    "InService",
    "Launching",
    "Draining",
    "NotificationBacklog",
    "MaxPoolSize",
    "MaxMissRateThreshold",
}
INSTANCE_ARN = "arn:aws:ec2:*:*:instance/*"
# Each stage's node role, and the instance profile that holds it (deploy/resources.json makes both).
NODE_ROLE = {stage: f"memcache-scaler-node-{stage}" for stage in STAGES}
# What the merged template adds to both functions' environment: the stack's launch template (its
# id, and the version the stack made last, as CloudFormation leaves $Default at 1), the subnets
# nodes go in, and the metrics namespace the node role may write.
STACK_ENV = {
    "NODE_SUBNET_IDS": {"Fn::Join": [",", {"Ref": "NodeSubnetIds"}]},
    "NODE_LAUNCH_TEMPLATE": {"Ref": "NodeLaunchTemplate"},
    "NODE_LAUNCH_TEMPLATE_VERSION": {"Fn::GetAtt": ["NodeLaunchTemplate", "LatestVersionNumber"]},
    "METRICS_NAMESPACE": {"Ref": "MetricsNamespace"},
}

# What each function calls, read off the code (chalicelib/*.py): the policy allows exactly this.
# DynamoDB's TransactWriteItems is authorised as the PutItem of each item (no IAM action of its own).
EC2_WRITES = {
    "ec2:RunInstances",
    "ec2:CreateTags",
    "ec2:DeleteTags",
    "ec2:TerminateInstances",
    "iam:PassRole",
}
NEEDS = {
    "api_handler": {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "ssm:GetParameter",
        "kms:Decrypt",
        "ec2:DescribeInstances",
        "ec2:DescribeLaunchTemplateVersions",  # cache_list checks adopted instances' image
        *EC2_WRITES,  # resize launches, terminate_all and drains terminate, cache_list tags
    },
    "scale": {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "cloudwatch:GetMetricData",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceStatus",
        *EC2_WRITES,
    },
}
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
# The only actions that may have Resource "*": they have no resource-level permissions.
UNSCOPABLE = {
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeLaunchTemplateVersions",
    "cloudwatch:GetMetricData",
    *XRAY_ACTIONS,
}


def _aws_free_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each stage's `chalice package` output directory (sam.json, deployment.zip)."""
    out = tmp_path_factory.mktemp("package")
    chalice = [sys.executable, "-c", "import sys; from chalice.cli import main; sys.exit(main())"]
    for stage in STAGES:
        done = subprocess.run(
            [
                *chalice,
                "package",
                "--stage",
                stage,
                "--merge-template",
                str(MERGE_TEMPLATE),
                str(out / stage),
            ],
            cwd=PROJECT_DIR,
            env=_aws_free_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"chalice package --stage {stage} failed:\n{done.stdout}{done.stderr}"
    return {stage: out / stage for stage in STAGES}


@pytest.fixture(scope="module")
def templates(packages: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {stage: json.loads((path / "sam.json").read_text()) for stage, path in packages.items()}


# -- helpers ---------------------------------------------------------------------------------


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _sub(value: Any, stage: str) -> Any:
    """Resolve the ``Fn::Sub`` of a stage-named value, as CloudFormation would with ``Stage``."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        return value["Fn::Sub"].replace("${Stage}", stage)
    return value


def _stage_env(stage: str) -> dict[str, str]:
    return CONFIG["stages"][stage]["environment_variables"]


def _policy_file(stage: str, function: str) -> Path:
    return CHALICE_DIR / CONFIG["stages"][stage]["lambda_functions"][function]["iam_policy_file"]


def _function(template: dict[str, Any], function: str) -> dict[str, Any]:
    return template["Resources"][FUNCTIONS[function]]


def _policy(template: dict[str, Any], function: str) -> dict[str, Any]:
    role_id = _function(template, function)["Properties"]["Role"]["Fn::GetAtt"][0]
    role = template["Resources"][role_id]
    assert role["Type"] == "AWS::IAM::Role"
    (policy,) = role["Properties"]["Policies"]
    return policy["PolicyDocument"]


def _statements(policy: dict[str, Any], action: str, effect: str = "Allow") -> list[dict[str, Any]]:
    return [s for s in policy["Statement"] if s["Effect"] == effect and action in _list(s["Action"])]


def _allowed_actions(policy: dict[str, Any]) -> set[str]:
    return {action for s in policy["Statement"] if s["Effect"] == "Allow" for action in _list(s["Action"])}


# -- the functions ---------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_scale_runs_every_minute_one_at_a_time(templates: dict[str, Any], stage: str) -> None:
    scale = _function(templates[stage], "scale")["Properties"]
    events = list(scale["Events"].values())
    assert [(e["Type"], e["Properties"]["Schedule"]) for e in events] == [("Schedule", "rate(1 minute)")]
    assert scale["ReservedConcurrentExecutions"] == 1
    assert scale["Timeout"] == 120  # above the boto timeouts of a slow tick, below the next tick + 60 s
    api = _function(templates[stage], "api_handler")["Properties"]
    assert "ReservedConcurrentExecutions" not in api


@pytest.mark.parametrize("stage", STAGES)
def test_stage_switches(templates: dict[str, Any], stage: str) -> None:
    expected = {"dev": "true", "prod": "false"}[stage]
    for function in FUNCTIONS:
        props = _function(templates[stage], function)["Properties"]
        variables = props["Environment"]["Variables"]
        assert variables["ENABLE_TEST_ENDPOINTS"] == expected
        assert variables["STAGE"] == stage  # the https rule for prod, the metrics' stage dimension
        assert variables == {**_stage_env(stage), **STACK_ENV}
        assert _sub(props["FunctionName"], stage) == (
            f"memcache-scaler-{stage}" if function == "api_handler" else f"memcache-scaler-{stage}-scale"
        )


@pytest.mark.parametrize("stage", STAGES)
def test_the_api_compresses_answers_of_a_kilobyte_and_more(templates: dict[str, Any], stage: str) -> None:
    """API Gateway gzips them for clients that accept it (the dashboard's chart script above all)."""
    (api,) = [r for r in templates[stage]["Resources"].values() if r["Type"] == "AWS::Serverless::Api"]
    assert api["Properties"]["MinimumCompressionSize"] == CONFIG["minimum_compression_size"] == 1024


def _traced(template: dict[str, Any]) -> bool:
    return _function(template, "scale")["Properties"]["Tracing"] == "Active"


@pytest.mark.parametrize("stage", STAGES)
def test_tracing_is_all_or_nothing(packages: dict[str, Path], templates: dict[str, Any], stage: str) -> None:
    """A stage's ``xray`` flag needs three more things, or Powertools' Tracer breaks the functions:
    the variable that turns it on in the code, the SDK in the package, the policy's X-Ray actions."""
    template = templates[stage]
    traced = _traced(template)
    for function in FUNCTIONS:
        props = _function(template, function)["Properties"]
        assert props["Tracing"] == ("Active" if traced else "PassThrough")
        disabled = props["Environment"]["Variables"].get("POWERTOOLS_TRACE_DISABLED", "true")
        assert (disabled.lower() == "false") == traced, function
        assert (_allowed_actions(_policy(template, function)) >= XRAY_ACTIONS) == traced, function
    if traced:
        with zipfile.ZipFile(packages[stage] / "deployment.zip") as package:
            top_level = {name.split("/")[0] for name in package.namelist()}
        assert "aws_xray_sdk" in top_level, "add aws-xray-sdk to requirements.txt"


# -- the policies ----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_each_function_has_its_own_role_with_its_hand_written_policy(
    templates: dict[str, Any], stage: str
) -> None:
    template = templates[stage]
    roles = {_function(template, f)["Properties"]["Role"]["Fn::GetAtt"][0] for f in FUNCTIONS}
    assert len(roles) == len(FUNCTIONS)
    assert "DefaultRole" not in template["Resources"]  # autogen_policy is off
    for function in FUNCTIONS:
        assert _policy(template, function) == json.loads(_policy_file(stage, function).read_text())


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_policy_allows_what_the_function_calls_and_nothing_else(
    templates: dict[str, Any], stage: str, function: str
) -> None:
    policy = _policy(templates[stage], function)
    expected = NEEDS[function] | (XRAY_ACTIONS if _traced(templates[stage]) else set())
    assert _allowed_actions(policy) == expected
    for statement in policy["Statement"]:
        assert not any("*" in action for action in _list(statement["Action"])), statement
        if "*" in _list(statement["Resource"]):
            assert set(_list(statement["Action"])) <= UNSCOPABLE, statement


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_ec2_writes_are_bound_to_the_pool_tag(templates: dict[str, Any], stage: str, function: str) -> None:
    policy = _policy(templates[stage], function)
    # The pool the deployed functions run: the stage's environment alone (no POOL_NAME there).
    pool = Settings.from_env(_stage_env(stage)).pool_name
    assert pool == _stage_env(stage).get("POOL_NAME", stage), "the pool is named after the stage"
    request_tag, resource_tag = f"aws:RequestTag/{POOL_TAG_KEY}", f"ec2:ResourceTag/{POOL_TAG_KEY}"

    # Launch: allowed with the resources a launch touches, denied for any instance whose request
    # does not carry the pool tag (StringNotEquals also matches a request without the tag).
    (launch,) = _statements(policy, "ec2:RunInstances")
    assert INSTANCE_ARN in _list(launch["Resource"])
    (deny,) = _statements(policy, "ec2:RunInstances", effect="Deny")
    assert deny["Resource"] == INSTANCE_ARN
    assert deny["Condition"] == {"StringNotEquals": {request_tag: pool}}

    # Tags are written only with the pool's value: at launch, or by adoption (that key alone, and
    # never over another pool's tag).
    tagging = _statements(policy, "ec2:CreateTags")
    assert {s["Resource"] for s in tagging} == {INSTANCE_ARN}
    assert all(s["Condition"]["StringEquals"][request_tag] == pool for s in tagging)
    at_launch = [s for s in tagging if "ec2:CreateAction" in s["Condition"]["StringEquals"]]
    assert [s["Condition"]["StringEquals"]["ec2:CreateAction"] for s in at_launch] == ["RunInstances"]
    (adopt,) = [s for s in tagging if s not in at_launch]
    assert adopt["Condition"]["ForAllValues:StringEquals"] == {"aws:TagKeys": [POOL_TAG_KEY]}
    assert adopt["Condition"]["StringEqualsIfExists"] == {resource_tag: pool}
    # Adoption tags (and so may later terminate) only instances that run as a node: those with
    # the node role's instance profile. The image has no IAM key; the code checks it.
    assert adopt["Condition"]["ArnLike"] == {
        "ec2:InstanceProfile": f"arn:aws:iam::*:instance-profile/{NODE_ROLE[stage]}"
    }
    assert set(adopt["Condition"]) == {
        "StringEquals",
        "ForAllValues:StringEquals",
        "StringEqualsIfExists",
        "ArnLike",
    }

    # Untag and terminate only instances that carry the pool's tag.
    for action in ("ec2:DeleteTags", "ec2:TerminateInstances"):
        statements = _statements(policy, action)
        assert statements and all(
            s["Resource"] == INSTANCE_ARN and s["Condition"]["StringEquals"] == {resource_tag: pool}
            for s in statements
        ), action
    (untag,) = _statements(policy, "ec2:DeleteTags")
    assert untag["Condition"]["ForAllValues:StringEquals"] == {"aws:TagKeys": [POOL_TAG_KEY]}

    # The node role only, and only to EC2.
    (pass_role,) = _statements(policy, "iam:PassRole")
    assert re.fullmatch(r"arn:aws:iam::\*:role/[\w+=,.@-]+", pass_role["Resource"])
    assert pass_role["Resource"] == f"arn:aws:iam::*:role/{NODE_ROLE[stage]}"
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_table_token_and_logs_are_the_stages_own(
    templates: dict[str, Any], stage: str, function: str
) -> None:
    template, env = templates[stage], _stage_env(stage)
    policy = _policy(template, function)
    table_arn = f"arn:aws:dynamodb:*:*:table/{env['TABLE_NAME']}"
    dynamo = [s for s in policy["Statement"] if any(a.startswith("dynamodb:") for a in _list(s["Action"]))]
    assert [s["Resource"] for s in dynamo] == [table_arn]

    token = _statements(policy, "ssm:GetParameter")
    decrypt = _statements(policy, "kms:Decrypt")
    if function == "scale":
        assert token == [] and decrypt == []
    else:
        param_arn = f"arn:aws:ssm:*:*:parameter{env['SCALER_API_TOKEN_PARAM']}"
        assert [s["Resource"] for s in token] == [param_arn]
        (kms,) = decrypt
        assert kms["Condition"]["StringLike"] == {
            "kms:ViaService": "ssm.*.amazonaws.com",
            "kms:EncryptionContext:PARAMETER_ARN": param_arn,
        }

    name = _sub(_function(template, function)["Properties"]["FunctionName"], stage)
    group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{name}"
    logs = [s for s in policy["Statement"] if any(a.startswith("logs:") for a in _list(s["Action"]))]
    assert {s["Resource"] for s in logs} == {group, f"{group}:*"}
    log_groups = {
        _sub(r["Properties"]["LogGroupName"], stage)
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Logs::LogGroup"
    }
    assert f"/aws/lambda/{name}" in log_groups


def test_stage_policies_differ_only_in_the_stage_and_xray() -> None:
    def untraced(path: Path) -> dict[str, Any]:
        policy = json.loads(path.read_text())
        policy["Statement"] = [s for s in policy["Statement"] if not set(_list(s["Action"])) <= XRAY_ACTIONS]
        return policy

    pools = {stage: Settings.from_env(_stage_env(stage)).pool_name for stage in STAGES}
    assert pools["dev"] != pools["prod"], "dev and prod in one account must not share a pool"
    for function in FUNCTIONS:
        dev, prod = untraced(_policy_file("dev", function)), untraced(_policy_file("prod", function))
        as_prod = json.dumps(dev).replace("memcache-scaler-dev", "memcache-scaler-prod")
        as_prod = as_prod.replace("/memcache-scaler/dev/", "/memcache-scaler/prod/")
        as_prod = as_prod.replace(NODE_ROLE["dev"], NODE_ROLE["prod"])
        # The pool tag's value: every JSON string that is exactly the dev pool's name.
        as_prod = as_prod.replace(json.dumps(pools["dev"]), json.dumps(pools["prod"]))
        assert json.loads(as_prod) == prod, function
    referenced = {_policy_file(stage, function).name for stage in STAGES for function in FUNCTIONS}
    assert referenced == {path.name for path in CHALICE_DIR.glob("policy-*.json")}
    assert CONFIG["autogen_policy"] is False


# -- the merged resources --------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_table_is_the_functions_table_with_ttl_and_pitr(templates: dict[str, Any], stage: str) -> None:
    template = templates[stage]
    (table,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
    props = table["Properties"]
    assert _sub(props["TableName"], stage) == _stage_env(stage)["TABLE_NAME"]
    assert template["Parameters"]["Stage"]["AllowedValues"] == list(STAGES)
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]} == {
        ("pk", "HASH"),
        ("sk", "RANGE"),
    }
    assert {(a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
    }
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Retain"


def _metrics_of(alarm: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    props = alarm["Properties"]
    if "Metrics" in props:
        stats = [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
        return [(m["Namespace"], m["MetricName"], m["Dimensions"]) for m in stats]
    return [(props["Namespace"], props["MetricName"], props["Dimensions"])]


@pytest.mark.parametrize("stage", STAGES)
def test_alarms_go_to_the_topic_parameter(templates: dict[str, Any], stage: str) -> None:
    template = templates[stage]
    parameter = template["Parameters"]["AlarmTopicArn"]
    assert parameter["Type"] == "String" and "Default" not in parameter
    alarms = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == {
        "PoolAtMaxStillMissingAlarm",
        "MissRateMissingAlarm",
        "NotificationFailuresAlarm",
        "LaunchFailuresAlarm",
        "TerminateFailuresAlarm",
        "NotificationBacklogAlarm",
        "TickErrorsAlarm",
    }
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopicArn"}], name
        assert props["OKActions"] == [{"Ref": "AlarmTopicArn"}], name
        for namespace, metric, dimensions in _metrics_of(alarm):
            if namespace == EMF_NAMESPACE:
                assert metric in EMF_METRICS, name
                # Powertools' service, and the STAGE the functions set (dev and prod may share an account)
                assert dimensions == [
                    {"Name": "service", "Value": {"Ref": "MetricsService"}},
                    {"Name": "stage", "Value": {"Ref": "Stage"}},
                ], name
    assert template["Parameters"]["MetricsService"]["Default"] == "memcache-scaler"

    at_max = alarms["PoolAtMaxStillMissingAlarm"]["Properties"]
    ids = {m["MetricStat"]["Metric"]["MetricName"]: m["Id"] for m in at_max["Metrics"] if "MetricStat" in m}
    assert set(ids) == {"PoolSize", "MaxPoolSize", "MissRate", "MaxMissRateThreshold"}
    (expression,) = [m for m in at_max["Metrics"] if m.get("ReturnData")]
    # Figures the tick publishes on both sides, never a copy of the config in the template.
    size, most, miss, limit = (
        ids[m] for m in ("PoolSize", "MaxPoolSize", "MissRate", "MaxMissRateThreshold")
    )
    assert expression["Expression"] == f"IF({size} >= {most} AND {miss} > {limit}, 1, 0)"
    assert at_max["EvaluationPeriods"] * 60 == 600 and at_max["DatapointsToAlarm"] == 10
    assert not {"AlarmPoolSize", "AlarmMissRate"} & set(template["Parameters"])

    silent = alarms["MissRateMissingAlarm"]["Properties"]
    assert (silent["MetricName"], silent["TreatMissingData"]) == ("MissRate", "breaching")
    assert silent["Period"] * silent["EvaluationPeriods"] == 600

    failing = alarms["NotificationFailuresAlarm"]["Properties"]
    assert (failing["MetricName"], failing["ComparisonOperator"], failing["Threshold"]) == (
        "NotificationFailures",
        "GreaterThanThreshold",
        0,
    )

    for name, metric in (
        ("LaunchFailuresAlarm", "LaunchFailures"),
        ("TerminateFailuresAlarm", "TerminateFailures"),
    ):
        props = alarms[name]["Properties"]
        # at least one failure in 3 of the last 5 minutes: the tick retries every minute
        assert (props["MetricName"], props["Statistic"], props["Period"]) == (metric, "Sum", 60), name
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1), name
        assert (props["DatapointsToAlarm"], props["EvaluationPeriods"]) == (3, 5), name

    backlog = alarms["NotificationBacklogAlarm"]["Properties"]
    # a notice waiting at every tick of 10 minutes
    assert (backlog["MetricName"], backlog["Statistic"], backlog["Period"]) == (
        "NotificationBacklog",
        "Minimum",
        60,
    )
    assert (backlog["ComparisonOperator"], backlog["Threshold"]) == ("GreaterThanThreshold", 0)
    assert backlog["DatapointsToAlarm"] == backlog["EvaluationPeriods"] == 10

    errors = alarms["TickErrorsAlarm"]["Properties"]
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "Scale"}}]


@pytest.mark.parametrize("stage", STAGES)
def test_the_package_holds_what_the_functions_import_and_no_sdk(
    packages: dict[str, Path], templates: dict[str, Any], stage: str
) -> None:
    """The runtime brings boto3 and botocore; a copy in the package would shadow them, and the
    X-Ray SDK (which brings one) is packaged only for a traced stage."""
    with zipfile.ZipFile(packages[stage] / "deployment.zip") as package:
        top_level = {name.split("/")[0] for name in package.namelist()}
    assert {"aws_lambda_powertools", "chalicelib", "app.py"} <= top_level
    assert not top_level & {"boto3", "botocore", "s3transfer"}
    assert ("aws_xray_sdk" in top_level) == _traced(templates[stage])


# -- the nodes -------------------------------------------------------------------------------

AL2023_IMAGE_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
MEMCACHED_PORT = 11211


def _resource(template: dict[str, Any], logical_id: str, type_: str) -> dict[str, Any]:
    resource = template["Resources"][logical_id]
    assert resource["Type"] == type_, logical_id
    return resource


def _of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == type_}


def _ingress(group: dict[str, Any]) -> list[tuple[Any, ...]]:
    """A security group's inline ingress rules, without their descriptions."""
    return [
        tuple(sorted((k, json.dumps(v)) for k, v in rule.items() if k != "Description"))
        for rule in group["Properties"].get("SecurityGroupIngress", [])
    ]


def _rule(port: int, source: Any) -> tuple[Any, ...]:
    rule = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "SourceSecurityGroupId": source}
    return tuple(sorted((k, json.dumps(v)) for k, v in rule.items()))


def _evaluate(expression: Any, parameters: dict[str, Any]) -> Any:
    """The few intrinsic functions a condition here uses, as CloudFormation evaluates them."""
    if isinstance(expression, dict):
        ((name, args),) = expression.items()
        if name == "Ref":
            return parameters[args]
        if name == "Fn::Join":
            return args[0].join(_evaluate(args[1], parameters))
        if name == "Fn::Equals":
            return _evaluate(args[0], parameters) == _evaluate(args[1], parameters)
        if name == "Fn::Not":
            return not _evaluate(args[0], parameters)
        raise AssertionError(f"not evaluated here: {name}")
    return expression


@pytest.mark.parametrize("stage", STAGES)
def test_node_role_is_for_ec2_and_may_only_put_metrics_in_the_namespace_parameter(
    templates: dict[str, Any], stage: str
) -> None:
    template = templates[stage]
    role = _resource(template, "NodeRole", "AWS::IAM::Role")["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    assert not {"ManagedPolicyArns", "PermissionsBoundary"} & set(role)
    policy, agent = role["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    # The agent's tarball, readable only when make deploy names it, and only that object.
    condition, read, absent = agent["Fn::If"]
    assert absent == {"Ref": "AWS::NoValue"}
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "NodeAgentObjectArn"}, ""]}]
    }
    assert read["PolicyDocument"]["Statement"] == [
        {
            "Sid": "TheAgentsTarballOnly",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": {"Ref": "NodeAgentObjectArn"},
        }
    ]
    assert template["Parameters"]["NodeAgentObjectArn"]["Default"] == ""
    assert (statement["Effect"], statement["Action"], statement["Resource"]) == (
        "Allow",
        "cloudwatch:PutMetricData",
        "*",  # PutMetricData has no resource-level permissions; its namespace key bounds it
    )
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": {"Ref": "MetricsNamespace"}}}
    # Nothing else grants the node role anything.
    assert not _of_type(template, "AWS::IAM::Policy") and not _of_type(template, "AWS::IAM::ManagedPolicy")
    # The namespace the nodes may write is the one the functions read, by default and when set.
    parameter = template["Parameters"]["MetricsNamespace"]
    assert parameter["Type"] == "String"
    assert parameter["Default"] == Settings.from_env({}).metric_names.namespace == "Memcache"
    for function in FUNCTIONS:
        variables = _function(template, function)["Properties"]["Environment"]["Variables"]
        assert variables["METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}, function


@pytest.mark.parametrize("stage", STAGES)
def test_node_role_profile_and_launch_template_are_named_per_stage(
    templates: dict[str, Any], stage: str
) -> None:
    template = templates[stage]
    role = _resource(template, "NodeRole", "AWS::IAM::Role")["Properties"]
    profile = _resource(template, "NodeInstanceProfile", "AWS::IAM::InstanceProfile")["Properties"]
    launch_template = _resource(template, "NodeLaunchTemplate", "AWS::EC2::LaunchTemplate")["Properties"]
    assert _sub(role["RoleName"], stage) == NODE_ROLE[stage]
    assert _sub(profile["InstanceProfileName"], stage) == NODE_ROLE[stage]
    assert _sub(launch_template["LaunchTemplateName"], stage) == NODE_ROLE[stage]
    assert profile["Roles"] == [{"Ref": "NodeRole"}]
    # The policies' ARNs have no path: neither may the role and the profile.
    assert role.get("Path", "/") == "/" and profile.get("Path", "/") == "/"
    assert NODE_ROLE["dev"] != NODE_ROLE["prod"]

    outputs = template["Outputs"]
    assert _sub(outputs["NodeLaunchTemplateName"]["Value"], stage) == NODE_ROLE[stage]
    assert outputs["NodeInstanceProfileArn"]["Value"] == {"Fn::GetAtt": ["NodeInstanceProfile", "Arn"]}
    assert outputs["NodeSecurityGroupId"]["Value"] == {"Fn::GetAtt": ["NodeSecurityGroup", "GroupId"]}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_policies_pass_and_adopt_only_the_role_and_profile_the_stage_creates(
    templates: dict[str, Any], stage: str, function: str
) -> None:
    template = templates[stage]
    policy = _policy(template, function)
    role_name = _sub(template["Resources"]["NodeRole"]["Properties"]["RoleName"], stage)
    profile_name = _sub(
        template["Resources"]["NodeInstanceProfile"]["Properties"]["InstanceProfileName"], stage
    )
    (pass_role,) = _statements(policy, "iam:PassRole")
    assert pass_role["Resource"] == f"arn:aws:iam::*:role/{role_name}"
    (adopt,) = [s for s in _statements(policy, "ec2:CreateTags") if "ArnLike" in s["Condition"]]
    assert adopt["Condition"]["ArnLike"] == {
        "ec2:InstanceProfile": f"arn:aws:iam::*:instance-profile/{profile_name}"
    }
    text = json.dumps(policy)
    for other in STAGES:
        if other != stage:
            assert NODE_ROLE[other] not in text, other
    assert text.count("memcache-scaler-node") == 2  # the PassRole resource and the adoption condition


@pytest.mark.parametrize("stage", STAGES)
def test_node_security_group_admits_only_memcached_from_the_frontend_group(
    templates: dict[str, Any], stage: str
) -> None:
    template = templates[stage]
    group = _resource(template, "NodeSecurityGroup", "AWS::EC2::SecurityGroup")
    assert group["Properties"]["VpcId"] == {"Ref": "VpcId"}
    assert _ingress(group) == [_rule(MEMCACHED_PORT, {"Ref": "FrontendSecurityGroupId"})]
    assert "SecurityGroupEgress" not in group["Properties"]  # the default: CloudWatch, packages
    # No rule added from outside the group either.
    assert not _of_type(template, "AWS::EC2::SecurityGroupIngress")
    parameters = template["Parameters"]
    assert parameters["FrontendSecurityGroupId"]["Type"] == "AWS::EC2::SecurityGroup::Id"
    assert parameters["VpcId"]["Type"] == "AWS::EC2::VPC::Id"
    assert "Default" not in parameters["FrontendSecurityGroupId"] and "Default" not in parameters["VpcId"]


@pytest.mark.parametrize("stage", STAGES)
def test_launch_template_takes_image_type_profile_group_and_user_data_from_the_stack(
    templates: dict[str, Any], stage: str
) -> None:
    template = templates[stage]
    data = _resource(template, "NodeLaunchTemplate", "AWS::EC2::LaunchTemplate")["Properties"][
        "LaunchTemplateData"
    ]
    assert data == {
        "ImageId": {"Ref": "NodeImageId"},
        "InstanceType": {"Ref": "NodeInstanceType"},
        "IamInstanceProfile": {"Arn": {"Fn::GetAtt": ["NodeInstanceProfile", "Arn"]}},
        "SecurityGroupIds": [{"Fn::GetAtt": ["NodeSecurityGroup", "GroupId"]}],
        "MetadataOptions": {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 1,
        },
        "UserData": {"Fn::Base64": {"Ref": "NodeUserData"}},
    }
    parameters = template["Parameters"]
    image = parameters["NodeImageId"]
    assert image["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert image["Default"] == AL2023_IMAGE_PARAMETER
    assert (parameters["NodeInstanceType"]["Type"], parameters["NodeInstanceType"]["Default"]) == (
        "String",
        "t3.micro",
    )
    assert parameters["NodeUserData"]["Type"] == "String"


@pytest.mark.parametrize("stage", STAGES)
def test_default_user_data_installs_sizes_and_starts_memcached(
    templates: dict[str, Any], stage: str, tmp_path: Path
) -> None:
    script = templates[stage]["Parameters"]["NodeUserData"]["Default"]
    assert len(script.encode()) <= 4096  # CloudFormation's limit on a parameter value
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "MEMORY_MB=64" in lines[:5]
    assert "dnf install -y memcached" in lines
    assert 'CACHESIZE="$MEMORY_MB"' in lines  # memcached's -m in AL2023's unit
    assert 'OPTIONS="-l 0.0.0.0 -U 0"' in lines  # not only loopback, as the package has it
    assert lines[-1] == "systemctl enable --now memcached"
    (tmp_path / "user-data.sh").write_text(script)
    checked = subprocess.run(["bash", "-n", str(tmp_path / "user-data.sh")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_monitoring_endpoint_exists_only_when_subnets_are_given(
    templates: dict[str, Any], stage: str
) -> None:
    template = templates[stage]
    parameter = template["Parameters"]["MonitoringEndpointSubnetIds"]
    assert (parameter["Type"], parameter["Default"]) == ("CommaDelimitedList", "")
    condition = template["Conditions"]["CreateMonitoringEndpoint"]
    # A CommaDelimitedList defaulting to "" is the list [""].
    assert _evaluate(condition, {"MonitoringEndpointSubnetIds": [""]}) is False
    assert _evaluate(condition, {"MonitoringEndpointSubnetIds": ["subnet-1", "subnet-2"]}) is True

    (endpoint_id,) = _of_type(template, "AWS::EC2::VPCEndpoint")
    endpoint = template["Resources"][endpoint_id]
    assert endpoint["Condition"] == "CreateMonitoringEndpoint"
    props = endpoint["Properties"]
    assert props["VpcEndpointType"] == "Interface"
    assert props["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.monitoring"}
    assert props["VpcId"] == {"Ref": "VpcId"}
    assert props["SubnetIds"] == {"Ref": "MonitoringEndpointSubnetIds"}
    assert props["PrivateDnsEnabled"] is True
    (group_ref,) = props["SecurityGroupIds"]
    group_id = group_ref["Fn::GetAtt"][0]
    group = _resource(template, group_id, "AWS::EC2::SecurityGroup")
    assert group["Condition"] == "CreateMonitoringEndpoint"
    assert _ingress(group) == [_rule(443, {"Fn::GetAtt": ["NodeSecurityGroup", "GroupId"]})]
    # Only the endpoint and its group depend on the condition.
    conditioned = {k for k, r in template["Resources"].items() if "Condition" in r}
    assert conditioned == {endpoint_id, group_id}


@pytest.mark.parametrize("stage", STAGES)
def test_functions_launch_from_the_stacks_template_at_the_version_it_made_last(
    templates: dict[str, Any], stage: str
) -> None:
    template = templates[stage]
    for function in FUNCTIONS:
        variables = _function(template, function)["Properties"]["Environment"]["Variables"]
        # Ref is the template's id (lt-...), which the code sends as LaunchTemplateId.
        assert variables["NODE_LAUNCH_TEMPLATE"] == {"Ref": "NodeLaunchTemplate"}, function
        assert variables["NODE_LAUNCH_TEMPLATE_VERSION"] == {
            "Fn::GetAtt": ["NodeLaunchTemplate", "LatestVersionNumber"]
        }, function
        assert variables["NODE_SUBNET_IDS"] == {"Fn::Join": [",", {"Ref": "NodeSubnetIds"}]}, function
        assert template["Parameters"]["NodeSubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
        # Each of these would override the template's image, profile, groups or type.
        overriding = {
            "NODE_AMI_ID",
            "NODE_INSTANCE_PROFILE",
            "NODE_SECURITY_GROUP_IDS",
            "NODE_INSTANCE_TYPES",
        }
        assert not overriding & set(variables), function
        (launch,) = _statements(_policy(template, function), "ec2:RunInstances")
        assert "arn:aws:ec2:*:*:launch-template/*" in launch["Resource"], function
    # What LatestVersionNumber gives (a number) is a version the code accepts.
    assert Settings.from_env({"NODE_LAUNCH_TEMPLATE_VERSION": "3"}).launch.launch_template_version == "3"
