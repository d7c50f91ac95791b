"""Deployment settings, read from the environment at call time (never at import time).

Chalice sets a stage's ``environment_variables`` for every invocation, and the test client
swaps ``os.environ`` during a call, so reading it per request keeps both working.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

POOL_TAG_KEY = "memcache-pool"
READINESS_MODES = ("metrics", "running")


@dataclass(frozen=True)
class MetricNames:
    namespace: str = "Memcache"
    dimension: str = "NodeId"
    gets: str = "GetRequests"
    hits: str = "Hits"
    hits_within: str = "HitsWithin"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MetricNames:
        return cls(
            namespace=env.get("METRICS_NAMESPACE") or cls.namespace,
            dimension=env.get("METRICS_DIMENSION") or cls.dimension,
            gets=env.get("METRIC_GETS") or cls.gets,
            hits=env.get("METRIC_HITS") or cls.hits,
            hits_within=env.get("METRIC_HITS_WITHIN") or cls.hits_within,
        )


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _whole(
    env: Mapping[str, str], name: str, default: int, *, unit: str = "seconds", minute_multiple: bool = False
) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of {unit}, got {text!r}") from None
    if value <= 0 or (minute_multiple and value % 60):
        raise ValueError(f"{name} must be positive{' and a multiple of 60' if minute_multiple else ''}")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive number, got {text!r}")
    return value


def _template_version(text: str | None) -> str:
    version = (text or "").strip() or "$Default"
    if version not in ("$Default", "$Latest") and not (
        version.isascii() and version.isdigit() and int(version) > 0
    ):
        raise ValueError(
            f"NODE_LAUNCH_TEMPLATE_VERSION must be a version number, $Default or $Latest, got {text!r}"
        )
    return version


@dataclass(frozen=True)
class LaunchSpec:
    """How the scaler launches a node (SPEC's launch settings)."""

    ami_id: str | None = None
    launch_template: str | None = None
    # Which version of the template: a number, ``$Default`` or ``$Latest``. CloudFormation never
    # moves ``$Default`` past version 1, so a stack passes the number it made last.
    launch_template_version: str = "$Default"
    instance_types: tuple[str, ...] = ()  # empty: the template's type, else t3.micro
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    instance_profile: str | None = None
    user_data_file: str | None = None


@dataclass(frozen=True)
class Settings:
    table_name: str = "memcache-scaler"
    pool_name: str = "default"
    enable_test_endpoints: bool = False
    api_token: str | None = None
    api_token_param: str | None = None
    launch: LaunchSpec = field(default_factory=LaunchSpec)
    metric_names: MetricNames = field(default_factory=MetricNames)
    metrics_window_seconds: int = 60
    node_readiness: str = "metrics"
    launch_timeout_seconds: int = 600
    node_silent_seconds: int = 300
    drain_timeout_seconds: int = 300
    frontend_notify_url: str | None = None
    frontend_notify_secret: str | None = None
    frontend_notify_timeout_seconds: float = 3.0
    history_ttl_days: int = 30
    # Chalice tells the code nothing about its stage: each stage sets STAGE in its environment.
    stage: str | None = None

    @property
    def node_ami_id(self) -> str | None:
        return self.launch.ami_id

    @property
    def node_launch_template(self) -> str | None:
        return self.launch.launch_template

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        readiness = (env.get("NODE_READINESS") or "metrics").strip().lower()
        if readiness not in READINESS_MODES:
            raise ValueError(f"NODE_READINESS must be one of {READINESS_MODES}, got {readiness!r}")
        stage = (env.get("STAGE") or "").strip().lower() or None
        return cls(
            table_name=env.get("TABLE_NAME") or "memcache-scaler",
            # SPEC: POOL_NAME, else the stage's name (two stages in one account never share a
            # pool), else "default". The process environment's POOL_NAME wins over the stage.
            pool_name=(env.get("POOL_NAME") or "").strip() or stage or "default",
            enable_test_endpoints=_flag(env.get("ENABLE_TEST_ENDPOINTS")),
            api_token=env.get("SCALER_API_TOKEN") or None,
            api_token_param=env.get("SCALER_API_TOKEN_PARAM") or None,
            launch=LaunchSpec(
                ami_id=env.get("NODE_AMI_ID") or None,
                launch_template=env.get("NODE_LAUNCH_TEMPLATE") or None,
                launch_template_version=_template_version(env.get("NODE_LAUNCH_TEMPLATE_VERSION")),
                instance_types=_csv(env.get("NODE_INSTANCE_TYPES")),
                subnet_ids=_csv(env.get("NODE_SUBNET_IDS")),
                security_group_ids=_csv(env.get("NODE_SECURITY_GROUP_IDS")),
                key_name=env.get("NODE_KEY_NAME") or None,
                instance_profile=env.get("NODE_INSTANCE_PROFILE") or None,
                user_data_file=env.get("NODE_USER_DATA_FILE") or None,
            ),
            metric_names=MetricNames.from_env(env),
            metrics_window_seconds=_whole(env, "METRICS_WINDOW_SECONDS", 60, minute_multiple=True),
            node_readiness=readiness,
            launch_timeout_seconds=_whole(env, "LAUNCH_TIMEOUT_SECONDS", 600),
            node_silent_seconds=_whole(env, "NODE_SILENT_SECONDS", 300),
            drain_timeout_seconds=_whole(env, "DRAIN_TIMEOUT_SECONDS", 300),
            frontend_notify_url=env.get("FRONTEND_NOTIFY_URL") or None,
            frontend_notify_secret=env.get("FRONTEND_NOTIFY_SECRET") or None,
            frontend_notify_timeout_seconds=_number(env, "FRONTEND_NOTIFY_TIMEOUT_SECONDS", 3.0),
            history_ttl_days=_whole(env, "HISTORY_TTL_DAYS", 30, unit="days"),
            stage=stage,
        )
