"""What EC2 reports of an instance, and what makes an instance a node: plain data, no AWS."""

from __future__ import annotations

from dataclasses import dataclass

# States in which an instance still exists for the pool (and still costs money).
LIVE_STATES = ("pending", "running", "stopping", "stopped")
INSTANCE_PROFILE_ARN_PART = ":instance-profile/"


@dataclass(frozen=True)
class Instance:
    id: str
    state: str
    image_id: str | None
    ip: str | None
    instance_type: str | None
    launched_at: str | None
    pool: str | None  # the value of the pool tag, if any
    launch_token: str | None = None
    instance_profile_arn: str | None = None  # the ARN of the attached instance profile, if any


@dataclass(frozen=True)
class NodeIdentity:
    """What makes an instance a node: the node image, and the node instance profile (a name or
    an ARN) when one is configured. Both come from the settings, or else the launch template."""

    image_id: str | None
    instance_profile: str | None = None

    def carries_profile(self, instance: Instance) -> bool:
        """Whether ``instance`` carries the node instance profile (always, when none is set)."""
        return self.instance_profile is None or profile_matches(
            self.instance_profile, instance.instance_profile_arn
        )


def profile_matches(profile: str, arn: str | None) -> bool:
    """An instance profile ARN against a configured profile: an ARN matches exactly; a bare name
    matches the ARN's last path segment (``arn:aws:iam::123:instance-profile/some/path/name``)."""
    if not arn:
        return False
    if profile.startswith("arn:"):
        return arn == profile
    _, found, path = arn.partition(INSTANCE_PROFILE_ARN_PART)
    return bool(found) and path.rsplit("/", 1)[-1] == profile
