"""Deploy and destroy a stage: ``make deploy STAGE=…`` and ``make destroy STAGE=…``.

    python -m deploy.stack deploy  --stage prod [--dry-run]
    python -m deploy.stack destroy --stage prod [--delete-table] [--dry-run]

``deploy`` packages the stage (``chalice package --merge-template deploy/resources.json``, no AWS
call), creates the API token in SSM if it is missing, uploads the code and the template to
``ARTIFACT_BUCKET`` with the node agent (which the nodes' user data installs), and creates or
updates the stack ``memcache-scaler-<stage>`` through a change
set (function, table, alarms, node infrastructure); then prints the API URL and how to read the
token. Stack parameters come from ``STACK_PARAMETERS`` (``Key=Value`` pairs, space-separated);
``Stage`` is set for you.

``destroy`` first disables the stack's schedule rule, so that no tick launches a node during the
teardown (manual mode is not enough: a tick repairs a pool below ``min_pool_size`` whatever
``auto_mode`` says); then terminates the instances tagged for the stage's pool and waits for
them to go (the stack's security group cannot be deleted while they hold it); then deletes the
stack. The table is retained (its ``DeletionPolicy``) unless ``--delete-table``.

With ``--dry-run`` (``DRY_RUN=1``) every AWS call is printed, in order, and none is made: a value a
call would have answered is shown as ``<…>``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

PROJECT_DIR = Path(__file__).resolve().parent.parent
POOL_TAG_KEY = "memcache-pool"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
AGENT_URL_LINE = 'AGENT_URL="s3://CHANGE-ME/node-agent.tgz"'
CAPABILITIES = ["CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]  # named node role; SAM transform


class Aws:
    """Every AWS call of the two commands goes through :meth:`call`: made, or printed."""

    def __init__(self, *, dry_run: bool, out: Callable[[str], None] = print, clients: Any = None) -> None:
        self.dry_run = dry_run
        self.out = out
        self._clients: dict[str, Any] = dict(clients or {})

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3  # only when a call is really made

            self._clients[service] = boto3.client(service)
        return self._clients[service]

    def call(self, service: str, operation: str, answer: Any = None, **params: Any) -> Any:
        """``operation`` of ``service`` with ``params``; in a dry run, printed, answering ``answer``."""
        if self.dry_run:
            shown = ", ".join(f"{key}={_short(value)}" for key, value in params.items())
            self.out(f"{service}.{operation}({shown})")
            return answer
        return getattr(self.client(service), operation)(**params)

    def wait(self, service: str, waiter: str, **params: Any) -> None:
        if self.dry_run:
            self.out(f"{service} waiter {waiter}({', '.join(f'{k}={_short(v)}' for k, v in params.items())})")
            return
        self.client(service).get_waiter(waiter).wait(**params)


def _short(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def stack_name(stage: str) -> str:
    return f"memcache-scaler-{stage}"


def parse_parameters(text: str, stage: str) -> list[dict[str, str]]:
    """``Key=Value`` pairs, and ``Stage``; a malformed pair is an error, not a silent skip."""
    pairs: dict[str, str] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"STACK_PARAMETERS: {item!r} is not Key=Value")
        pairs[key] = value
    if pairs.setdefault("Stage", stage) != stage:
        raise SystemExit(f"STACK_PARAMETERS sets Stage={pairs['Stage']}, but the stage is {stage}")
    return [{"ParameterKey": key, "ParameterValue": value} for key, value in pairs.items()]


# -- deploy -------------------------------------------------------------------------------------


def package(stage: str) -> Path:
    """``chalice package`` for the stage into build/<stage> (local: no AWS call)."""
    out = PROJECT_DIR / "build" / stage
    chalice = Path(sys.executable).parent / "chalice"
    subprocess.run(
        [str(chalice), "package", "--stage", stage, "--merge-template", "deploy/resources.json", str(out)],
        cwd=PROJECT_DIR,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def with_code_at(template: dict[str, Any], bucket: str, key: str) -> dict[str, Any]:
    """The template with every function's ``CodeUri`` pointing at the uploaded zip."""
    resources = {
        name: {**resource, "Properties": {**resource["Properties"], "CodeUri": f"s3://{bucket}/{key}"}}
        if resource.get("Type") == "AWS::Serverless::Function"
        else resource
        for name, resource in template["Resources"].items()
    }
    return {**template, "Resources": resources}


def deploy(
    aws: Aws, stage: str, bucket: str, parameters: Sequence[dict[str, str]], built: Path
) -> dict[str, str]:
    stack = stack_name(stage)
    token_name = f"/memcache-scaler/{stage}/api-token"
    _ensure_token(aws, token_name)
    code = (built / "deployment.zip").read_bytes()
    key = f"memcache-scaler/{stage}/{hashlib.sha256(code).hexdigest()}"
    _upload(aws, bucket, f"{key}.zip", code, "deployment.zip")
    parameters = with_node_agent(aws, bucket, stage, parameters)
    template = with_code_at(json.loads((built / "sam.json").read_text()), bucket, f"{key}.zip")
    _upload(aws, bucket, f"{key}.json", json.dumps(template).encode(), "sam.json")
    exists = _stack_exists(aws, stack)
    change_set = f"deploy-{key.rsplit('/', 1)[1][:12]}"
    aws.call(
        "cloudformation",
        "create_change_set",
        StackName=stack,
        ChangeSetName=change_set,
        ChangeSetType="UPDATE" if exists else "CREATE",
        TemplateURL=f"https://{bucket}.s3.amazonaws.com/{key}.json",
        Parameters=list(parameters),
        Capabilities=CAPABILITIES,
    )
    aws.wait("cloudformation", "change_set_create_complete", StackName=stack, ChangeSetName=change_set)
    aws.call("cloudformation", "execute_change_set", StackName=stack, ChangeSetName=change_set)
    aws.wait(
        "cloudformation", "stack_update_complete" if exists else "stack_create_complete", StackName=stack
    )
    described = aws.call(
        "cloudformation", "describe_stacks", answer={"Stacks": [{"Outputs": []}]}, StackName=stack
    )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Stacks"][0].get("Outputs", [])}
    url = outputs.get("EndpointURL", "<the stack's EndpointURL output>")
    aws.out(f"API: {url}")
    read = "aws ssm get-parameter --with-decryption --query Parameter.Value --output text"
    aws.out(f"token: {read} --name {token_name}")
    return outputs


def node_agent_tarball() -> bytes:
    """``node_agent/`` as a gzipped tarball, the same bytes for the same files (no times, no owners)."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as tar,
    ):
        for path in sorted((PROJECT_DIR / "node_agent").rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(PROJECT_DIR)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def with_node_agent(
    aws: Aws, bucket: str, stage: str, parameters: Sequence[dict[str, str]]
) -> list[dict[str, str]]:
    """Upload the node agent and make the nodes install it: the stack's ``NodeUserData`` becomes
    ``node_agent/deploy/user-data.sh`` pointing at the upload, and the node role may read it.
    An operator's own ``NodeUserData`` (in ``STACK_PARAMETERS``) is left as it is."""
    if any(p["ParameterKey"] == "NodeUserData" for p in parameters):
        return list(parameters)
    tarball = node_agent_tarball()
    key = f"memcache-scaler/{stage}/node-agent-{hashlib.sha256(tarball).hexdigest()[:16]}.tgz"
    _upload(aws, bucket, key, tarball, "node-agent.tgz")
    script = (PROJECT_DIR / "node_agent" / "deploy" / "user-data.sh").read_text()
    if AGENT_URL_LINE not in script:
        raise SystemExit(
            f"node_agent/deploy/user-data.sh has no line {AGENT_URL_LINE!r} to point at the upload"
        )
    script = script.replace(AGENT_URL_LINE, f'AGENT_URL="s3://{bucket}/{key}"')
    return [
        *parameters,
        {"ParameterKey": "NodeUserData", "ParameterValue": script},
        {"ParameterKey": "NodeAgentObjectArn", "ParameterValue": f"arn:aws:s3:::{bucket}/{key}"},
    ]


def _upload(aws: Aws, bucket: str, key: str, data: bytes, what: str) -> None:
    body = f"<{len(data)} bytes: {what}>" if aws.dry_run else data
    aws.call("s3", "put_object", Bucket=bucket, Key=key, Body=body)


def _ensure_token(aws: Aws, name: str) -> None:
    """A random token in a SecureString, unless one is there (CloudFormation cannot make one)."""
    try:
        aws.call("ssm", "get_parameter", answer={}, Name=name)
        if aws.dry_run:
            aws.out(f"  (if {name} is missing:)")
            aws.call("ssm", "put_parameter", Name=name, Type="SecureString", Value="<a random token>")
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ParameterNotFound":
            raise
    aws.call("ssm", "put_parameter", Name=name, Type="SecureString", Value=secrets.token_urlsafe(32))


def _stack_exists(aws: Aws, stack: str) -> bool:
    try:
        aws.call("cloudformation", "describe_stacks", answer=None, StackName=stack)
    except ClientError as exc:
        if "does not exist" not in exc.response["Error"].get("Message", ""):
            raise
        return False
    return not aws.dry_run  # a dry run shows a first deploy


# -- destroy ------------------------------------------------------------------------------------


def destroy(aws: Aws, stage: str, *, pool: str, delete_table: bool) -> list[str]:
    """Answer the instances terminated."""
    stack = stack_name(stage)
    resources = aws.call(
        "cloudformation",
        "describe_stack_resources",
        answer={
            "StackResources": [
                {"ResourceType": "AWS::Events::Rule", "PhysicalResourceId": "<the schedule rule>"}
            ]
        },
        StackName=stack,
    )["StackResources"]
    for rule in [r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::Events::Rule"]:
        aws.call("events", "disable_rule", Name=rule)
    found = aws.call(
        "ec2",
        "describe_instances",
        answer={"Reservations": [{"Instances": [{"InstanceId": "<each instance found>"}]}]},
        Filters=[
            {"Name": f"tag:{POOL_TAG_KEY}", "Values": [pool]},
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ],
    )
    ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    if ids:
        aws.call("ec2", "terminate_instances", InstanceIds=ids)
        aws.wait("ec2", "instance_terminated", InstanceIds=ids)
    aws.call("cloudformation", "delete_stack", StackName=stack)
    aws.wait("cloudformation", "stack_delete_complete", StackName=stack)
    table = f"memcache-scaler-{stage}"
    if delete_table:
        # The table has deletion protection on: off first, then delete.
        aws.call("dynamodb", "update_table", TableName=table, DeletionProtectionEnabled=False)
        aws.call("dynamodb", "delete_table", TableName=table)
    else:
        aws.out(f"table {table} retained (make destroy DELETE_TABLE=1 deletes it)")
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deploy", "destroy"])
    parser.add_argument("--stage", required=True, choices=["dev", "prod"])
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("DRY_RUN") in {"1", "true"})
    parser.add_argument(
        "--delete-table", action="store_true", default=os.environ.get("DELETE_TABLE") in {"1", "true"}
    )
    args = parser.parse_args(argv)
    aws = Aws(dry_run=args.dry_run)
    if args.command == "deploy":
        bucket = os.environ.get("ARTIFACT_BUCKET") or ""
        if not bucket:
            raise SystemExit("ARTIFACT_BUCKET: the S3 bucket the code and the template are uploaded to")
        parameters = parse_parameters(os.environ.get("STACK_PARAMETERS", ""), args.stage)
        deploy(aws, args.stage, bucket, parameters, package(args.stage))
    else:
        pool = (os.environ.get("POOL_NAME") or "").strip() or args.stage
        destroy(aws, args.stage, pool=pool, delete_table=args.delete_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
