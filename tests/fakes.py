"""The front-end's end of the notifications, in memory, and the whole app wired to the in-memory
AWS of :mod:`sim.memory_aws` (re-exported here for the tests that use both)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.adapters.frontend import Notifier
from chalicelib.domain.settings import Settings
from sim.memory_aws import LAUNCH_TOKEN_TAG, Cloud, FakeEc2, FakeInstance, FakeMetrics, FakeStore

__all__ = [
    "LAUNCH_TOKEN_TAG",
    "Cloud",
    "FakeAdapters",
    "FakeEc2",
    "FakeFrontend",
    "FakeInstance",
    "FakeMetrics",
    "FakeStore",
    "Killed",
    "fake_adapters",
]


class Killed(BaseException):
    """The invocation dies (a Lambda timeout): nothing of the app catches it."""


class FakeFrontend:
    """The front-end's end of the notifications, as a ``Notifier``'s ``post``: answers 200 (up),
    500 (down), times out (slow), or stalls: takes the first notice of an invocation and hangs on
    the next until the invocation is killed (the notice arrived; its answer never does). Keeps,
    in order, every notice it took."""

    def __init__(self) -> None:
        self.mode = "up"
        self.delivered: list[dict[str, Any]] = []
        self.attempts = 0
        self.taken_this_invocation = 0  # reset by whoever starts an invocation
        # Called with each notice it takes, as it arrives.
        self.on_delivery: Callable[[dict[str, Any]], None] = lambda notice: None

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        self.attempts += 1
        if self.mode == "slow":
            raise TimeoutError("timed out")
        if self.mode == "down":
            return 500
        notice = json.loads(body)
        self.on_delivery(notice)
        self.delivered.append(notice)
        self.taken_this_invocation += 1
        if self.mode == "stalls" and self.taken_this_invocation > 1:
            raise Killed
        return 200

    def snapshot(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.delivered)


@dataclass
class FakeAdapters:
    store: Any
    ec2: Any
    metrics: Any
    notifier: Notifier | None


def fake_adapters(cloud: Cloud, frontend: FakeFrontend) -> Callable[[Settings], FakeAdapters]:
    """A replacement for ``chalicelib.service.wiring.adapters``: the whole app on this cloud, telling
    this front-end (when ``FRONTEND_NOTIFY_URL`` is set) with no wait between attempts."""

    def build(settings: Settings) -> FakeAdapters:
        notifier = None
        if settings.frontend_notify_url:
            notifier = Notifier(
                settings.frontend_notify_url,
                timeout=settings.frontend_notify_timeout_seconds,
                post=frontend.post,
                sleep=lambda _: None,
            )
        return FakeAdapters(
            FakeStore(cloud, settings.table_name, settings.pool_name),
            FakeEc2(cloud, settings.pool_name),
            FakeMetrics(cloud, settings.metric_names),
            notifier,
        )

    return build
