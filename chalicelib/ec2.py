"""EC2 adapter: the pool's instances, found and changed only through the pool tag."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws
from chalicelib.errors import DependencyError
from chalicelib.settings import POOL_TAG_KEY

# States in which an instance still exists for the pool (and still costs money).
LIVE_STATES = ("pending", "running", "stopping", "stopped")


@dataclass(frozen=True)
class Instance:
    id: str
    state: str
    image_id: str | None
    ip: str | None
    instance_type: str | None
    launched_at: str | None
    pool: str | None  # the value of the pool tag, if any

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Instance:
        tags = {tag["Key"]: tag["Value"] for tag in data.get("Tags", [])}
        launch_time = data.get("LaunchTime")
        return cls(
            id=data["InstanceId"],
            state=data["State"]["Name"],
            image_id=data.get("ImageId"),
            ip=data.get("PrivateIpAddress"),
            instance_type=data.get("InstanceType"),
            launched_at=launch_time.strftime("%Y-%m-%dT%H:%M:%SZ") if launch_time else None,
            pool=tags.get(POOL_TAG_KEY),
        )


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

    def list_pool_instances(self) -> list[Instance]:
        """Every instance tagged for this pool that has not been terminated."""
        return self._describe(
            [
                {"Name": f"tag:{POOL_TAG_KEY}", "Values": [self.pool_name]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ]
        )

    def node_image_id(self, ami_id: str | None, launch_template: str | None) -> str | None:
        """The node image: ``NODE_AMI_ID``, or the image of the launch template's default version."""
        if ami_id:
            return ami_id
        if not launch_template:
            return None
        key = "LaunchTemplateId" if launch_template.startswith("lt-") else "LaunchTemplateName"
        versions = self._call(
            "describe_launch_template_versions", **{key: launch_template}, Versions=["$Default"]
        )["LaunchTemplateVersions"]
        return versions[0]["LaunchTemplateData"].get("ImageId") if versions else None

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

    def _describe(self, filters: list[dict[str, Any]]) -> list[Instance]:
        try:
            pages = self.client.get_paginator("describe_instances").paginate(Filters=filters)
            return [
                Instance.from_api(data)
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
