"""The composition root: the adapters that the routes, the scheduled function and the CLI work
with, built from the settings in one place.

Each is built on first use (a plain GET needs the table only). Tests that run the whole app on
in-memory fakes replace :data:`adapters`, the one factory every entry point calls.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from chalicelib.adapters.cloudwatch import PoolMetrics
from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.ec2 import Ec2Nodes
from chalicelib.adapters.frontend import Notifier, notifier_for
from chalicelib.domain.settings import Settings


class Adapters:
    """DynamoDB, EC2 and CloudWatch adapters and the front-end's notifier, for one invocation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def store(self) -> StateStore:
        settings = self.settings
        return StateStore(settings.table_name, settings.pool_name, ttl_days=settings.history_ttl_days)

    @cached_property
    def ec2(self) -> Ec2Nodes:
        return Ec2Nodes(self.settings.pool_name)

    @cached_property
    def metrics(self) -> PoolMetrics:
        return PoolMetrics(self.settings.metric_names)

    @cached_property
    def notifier(self) -> Notifier | None:
        return notifier_for(self.settings)


# Every entry point calls ``wiring.adapters(settings)`` at call time, so replacing this swaps them.
adapters: Callable[[Settings], Adapters] = Adapters
