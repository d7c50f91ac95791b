"""Deployment settings, read from the environment at call time (never at import time).

Chalice sets a stage's ``environment_variables`` for every invocation, and the test client
swaps ``os.environ`` during a call, so reading it per request keeps both working.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

POOL_TAG_KEY = "memcache-pool"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    table_name: str
    pool_name: str
    enable_test_endpoints: bool
    api_token: str | None
    api_token_param: str | None
    node_ami_id: str | None
    node_launch_template: str | None
    node_instance_types: tuple[str, ...]
    history_ttl_days: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            table_name=env.get("TABLE_NAME") or "memcache-scaler",
            pool_name=env.get("POOL_NAME") or "default",
            enable_test_endpoints=_flag(env.get("ENABLE_TEST_ENDPOINTS")),
            api_token=env.get("SCALER_API_TOKEN") or None,
            api_token_param=env.get("SCALER_API_TOKEN_PARAM") or None,
            node_ami_id=env.get("NODE_AMI_ID") or None,
            node_launch_template=env.get("NODE_LAUNCH_TEMPLATE") or None,
            node_instance_types=_csv(env.get("NODE_INSTANCE_TYPES")) or ("t3.micro",),
            history_ttl_days=int(env.get("HISTORY_TTL_DAYS") or 30),
        )
