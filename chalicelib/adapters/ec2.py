"""EC2 adapter: the pool's instances, found and changed only through the pool tag."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters import aws
from chalicelib.domain.errors import DependencyError, PoolConflictError
from chalicelib.domain.instances import LIVE_STATES, Instance, NodeIdentity
from chalicelib.domain.settings import POOL_TAG_KEY, LaunchSpec

# Carries a launch's idempotency token, so that a retried launch finds the instance it made.
LAUNCH_TOKEN_TAG = "memcache-scaler:launch-token"
# EC2's words for "not this instance type here now": try the next one in NODE_INSTANCE_TYPES.
CAPACITY_ERRORS = ("InsufficientInstanceCapacity", "InstanceLimitExceeded", "Unsupported")
DEFAULT_INSTANCE_TYPE = "t3.micro"


class Ec2Nodes:
    """The pool's EC2 instances. Every write is scoped to the pool's tag value."""

    def __init__(self, pool_name: str, *, client: Any = None) -> None:
        self.pool_name = pool_name
        self._client = client

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else aws.client("ec2")

    def describe(self, ids: Iterable[str]) -> dict[str, Instance]:
        """The instances among ``ids`` that EC2 knows; unknown ids are simply absent.

        A filter rather than ``InstanceIds``: EC2 fails the whole call on one unknown id.
        """
        ids = list(ids)
        if not ids:
            return {}
        return {
            instance.id: instance for instance in self._describe([{"Name": "instance-id", "Values": ids}])
        }

    def alive(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` that still exist for the pool (pending, running, stopping, stopped)."""
        return {node_id for node_id, instance in self.describe(ids).items() if instance.state in LIVE_STATES}

    def list_pool_instances(self) -> list[Instance]:
        """Every instance tagged for this pool that has not been terminated."""
        return self._describe(
            [
                {"Name": f"tag:{POOL_TAG_KEY}", "Values": [self.pool_name]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ]
        )

    def impaired(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` (instances known to exist) fail EC2's instance or system status checks."""
        ids = list(ids)
        if not ids:
            return set()
        try:
            pages = self.client.get_paginator("describe_instance_status").paginate(InstanceIds=ids)
            return {
                status["InstanceId"]
                for page in pages
                for status in page["InstanceStatuses"]
                if "impaired"
                in (
                    status.get("InstanceStatus", {}).get("Status"),
                    status.get("SystemStatus", {}).get("Status"),
                )
            }
        except (ClientError, BotoCoreError) as exc:
            raise _dependency_error(exc) from exc

    def node_identity(self, spec: LaunchSpec) -> NodeIdentity:
        """The node image and instance profile a launch would use: ``NODE_AMI_ID`` and
        ``NODE_INSTANCE_PROFILE``, each else the launch template's version that launches use
        (one call, made only when the template has something to add)."""
        image, profile = spec.ami_id, spec.instance_profile
        if spec.launch_template and not (image and profile):
            data = self._template_data(spec.launch_template, spec.launch_template_version)
            template_profile = data.get("IamInstanceProfile") or {}
            image = image or data.get("ImageId")
            profile = profile or template_profile.get("Arn") or template_profile.get("Name")
        return NodeIdentity(image_id=image or None, instance_profile=profile or None)

    def _template_data(self, launch_template: str, version: str) -> dict[str, Any]:
        key = "LaunchTemplateId" if launch_template.startswith("lt-") else "LaunchTemplateName"
        versions = self._call(
            "describe_launch_template_versions", **{key: launch_template}, Versions=[version]
        )["LaunchTemplateVersions"]
        return versions[0]["LaunchTemplateData"] if versions else {}

    def tag(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._call("create_tags", Resources=ids, Tags=[{"Key": POOL_TAG_KEY, "Value": self.pool_name}])

    def untag(self, ids: Iterable[str]) -> None:
        """Remove the pool tag; naming the value leaves another pool's tag alone."""
        ids = list(ids)
        if ids:
            self._call("delete_tags", Resources=ids, Tags=[{"Key": POOL_TAG_KEY, "Value": self.pool_name}])

    def terminate(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._call("terminate_instances", InstanceIds=ids)

    def launch(self, token: str, spec: LaunchSpec, slot: int) -> Instance:
        """Launch one node, tagged for the pool, idempotently under ``token``.

        ``slot`` (the node's index) spreads nodes over ``NODE_SUBNET_IDS``. When EC2 has no
        capacity for a type, the next of ``NODE_INSTANCE_TYPES`` is tried.
        """
        if not spec.ami_id and not spec.launch_template:
            raise PoolConflictError("set NODE_AMI_ID or NODE_LAUNCH_TEMPLATE so that nodes can be launched")
        types: tuple[str | None, ...] = spec.instance_types or (
            (None,) if spec.launch_template else (DEFAULT_INSTANCE_TYPE,)
        )
        last_error: ClientError | None = None
        for attempt, instance_type in enumerate(types):
            request = self._launch_request(token, spec, slot, instance_type)
            # A different type is a different request: it needs its own token.
            request["ClientToken"] = token if attempt == 0 else f"{token}-{attempt}"
            try:
                reply = self.client.run_instances(**request)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in CAPACITY_ERRORS:
                    raise _dependency_error(exc) from exc
                last_error = exc
                continue
            except BotoCoreError as exc:
                raise _dependency_error(exc) from exc
            return instance_from_api(reply["Instances"][0])
        assert last_error is not None
        raise _dependency_error(last_error) from last_error

    def _launch_request(
        self, token: str, spec: LaunchSpec, slot: int, instance_type: str | None
    ) -> dict[str, Any]:
        tags = [{"Key": POOL_TAG_KEY, "Value": self.pool_name}, {"Key": LAUNCH_TOKEN_TAG, "Value": token}]
        request: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if spec.launch_template:
            key = "LaunchTemplateId" if spec.launch_template.startswith("lt-") else "LaunchTemplateName"
            request["LaunchTemplate"] = {key: spec.launch_template, "Version": spec.launch_template_version}
        if spec.ami_id:
            request["ImageId"] = spec.ami_id
        if instance_type:
            request["InstanceType"] = instance_type
        if spec.subnet_ids:
            request["SubnetId"] = spec.subnet_ids[slot % len(spec.subnet_ids)]
        if spec.security_group_ids:
            request["SecurityGroupIds"] = list(spec.security_group_ids)
        if spec.key_name:
            request["KeyName"] = spec.key_name
        if spec.instance_profile:
            key = "Arn" if spec.instance_profile.startswith("arn:") else "Name"
            request["IamInstanceProfile"] = {key: spec.instance_profile}
        if spec.user_data_file:
            with open(spec.user_data_file, encoding="utf-8") as user_data:
                request["UserData"] = user_data.read()
        return request

    def _describe(self, filters: list[dict[str, Any]]) -> list[Instance]:
        try:
            pages = self.client.get_paginator("describe_instances").paginate(Filters=filters)
            return [
                instance_from_api(data)
                for page in pages
                for reservation in page["Reservations"]
                for data in reservation["Instances"]
            ]
        except (ClientError, BotoCoreError) as exc:
            raise _dependency_error(exc) from exc

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _dependency_error(exc) from exc


def _dependency_error(exc: Exception) -> DependencyError:
    code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
    return DependencyError(f"EC2 call failed ({code})")


def instance_from_api(data: dict[str, Any]) -> Instance:
    tags = {tag["Key"]: tag["Value"] for tag in data.get("Tags", [])}
    launch_time = data.get("LaunchTime")
    return Instance(
        id=data["InstanceId"],
        state=data["State"]["Name"],
        image_id=data.get("ImageId"),
        ip=data.get("PrivateIpAddress"),
        instance_type=data.get("InstanceType"),
        launched_at=launch_time.strftime("%Y-%m-%dT%H:%M:%SZ") if launch_time else None,
        pool=tags.get(POOL_TAG_KEY),
        launch_token=tags.get(LAUNCH_TOKEN_TAG),
        instance_profile_arn=(data.get("IamInstanceProfile") or {}).get("Arn"),
    )
