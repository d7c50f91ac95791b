"""In-memory stand-ins for the three adapters (DynamoDB, EC2, CloudWatch): AWS as plain data.

They honour the adapters' contracts, which moto does not always: version-conditional writes
and all-or-nothing transactions (a fixed-key record written twice refuses the whole write),
tags scoped to the pool, ``ClientToken`` (the same token answers the same instance), an error
for an unknown instance id. The stateful test runs the whole app on them, and once, shorter, on
moto, so that the two are seen to agree; the benchmark's ``--aws memory`` replays its days on
them (the same tick, a tenth of the time), and a test holds that replay equal to moto's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.config import normalize
from chalicelib.domain.errors import DependencyError, RecordExistsError, VersionConflictError
from chalicelib.domain.instances import LIVE_STATES, Instance, NodeIdentity
from chalicelib.domain.pool import Pool
from chalicelib.domain.records import Record, sort_key_time
from chalicelib.domain.settings import POOL_TAG_KEY, LaunchSpec, MetricNames
from chalicelib.domain.traffic import CAPACITY_FACTORS, NodeTraffic, PoolTraffic

LAUNCH_TOKEN_TAG = "memcache-scaler:launch-token"


@dataclass
class FakeInstance:
    id: str
    state: str
    image_id: str
    ip: str
    tags: dict[str, str] = field(default_factory=dict)
    launched_at: str = "2026-11-26T12:00:00Z"
    impaired: bool = False

    def view(self) -> Instance:
        return Instance(
            id=self.id,
            state=self.state,
            image_id=self.image_id,
            ip=self.ip,
            instance_type="t3.micro",
            launched_at=self.launched_at,
            pool=self.tags.get(POOL_TAG_KEY),
            launch_token=self.tags.get(LAUNCH_TOKEN_TAG),
        )


@dataclass
class Cloud:
    """What AWS holds: the table's items, the instances, the datapoints."""

    items: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # ClientToken → instance id
    # Per node: (minute, GetRequests, Hits, HitsWithin by CAPACITY_FACTORS or None).
    datapoints: dict[str, list[tuple[datetime, float, float, tuple[float, ...] | None]]] = field(
        default_factory=dict
    )
    launched: int = 0

    def run_instance(self, image_id: str, tags: dict[str, str] | None = None) -> FakeInstance:
        """A new running instance; private IPs are few, so they get reused, as in a small subnet."""
        self.launched += 1
        instance_id = f"i-{self.launched:017x}"
        instance = FakeInstance(instance_id, "running", image_id, f"10.0.0.{self.launched % 24 + 1}")
        instance.tags.update(tags or {})
        self.instances[instance_id] = instance
        return instance

    def publish(
        self,
        node_id: str,
        minute: datetime,
        gets: float,
        hits: float,
        within: tuple[float, ...] | None = None,
    ) -> None:
        self.datapoints.setdefault(node_id, []).append((minute, gets, hits, within))


class FakeStore:
    """:class:`chalicelib.adapters.dynamodb.StateStore`'s contract, in memory."""

    def __init__(self, cloud: Cloud, table_name: str, pool_name: str) -> None:
        self.cloud, self.table_name, self.pool_name = cloud, table_name, pool_name

    @property
    def _state_pk(self) -> str:
        return f"{self.table_name}/pool#{self.pool_name}"

    @property
    def _history_pk(self) -> str:
        return f"{self.table_name}/pool#{self.pool_name}#history"

    def create_table(self) -> bool:
        return False

    def _state(self, sk: str) -> tuple[dict[str, Any], int]:
        item = self.cloud.items.get((self._state_pk, sk))
        return (json.loads(item["data"]), item["version"]) if item else ({}, 0)

    def load_state(self) -> tuple[dict[str, Any], int, Pool]:
        config, config_version = self._state("config")
        return normalize(config), config_version, self.load_pool()

    def load_config(self) -> tuple[dict[str, Any], int]:
        config, version = self._state("config")
        return normalize(config), version

    def load_pool(self) -> Pool:
        data, version = self._state("membership")
        return Pool.from_data(data, version)

    def history(self, minutes: int, until: datetime) -> list[dict[str, Any]]:
        start = sort_key_time(until - timedelta(minutes=minutes)) + "#~"
        found = [(sk, item) for (pk, sk), item in self.cloud.items.items() if pk == self._history_pk]
        return [json.loads(item["data"]) for sk, item in sorted(found) if sk > start]

    def save_config(self, config: dict[str, Any], expected_version: int, record: Record) -> None:
        self._transact("config", config, expected_version, [record])

    def save_pool(self, pool: Pool, *records: Record | None) -> Pool:
        self._transact("membership", pool.to_data(), pool.version, [r for r in records if r])
        return Pool.from_data(json.loads(json.dumps(pool.to_data())), pool.version + 1)

    def add_record(self, record: Record) -> None:
        self.cloud.items[(self._history_pk, self._sk(record))] = {"data": json.dumps(record.to_dict())}

    def has_record(self, record: Record) -> bool:
        return (self._history_pk, self._sk(record)) in self.cloud.items

    def item_bytes(self) -> int:
        item = self.cloud.items.get((self._state_pk, "membership"))
        return len(item["data"]) if item else 0

    @staticmethod
    def _sk(record: Record) -> str:
        return f"{sort_key_time(record.at)}#{record.kind}#{record.fixed_id or uuid.uuid4().hex[:12]}"

    def _transact(self, sk: str, data: dict[str, Any], expected: int, records: list[Record]) -> None:
        """All or nothing, as TransactWriteItems: the version condition, then each fixed key."""
        _, version = self._state(sk)
        if version != expected:
            raise VersionConflictError("another writer changed the state first")
        keyed = [(record, (self._history_pk, self._sk(record))) for record in records]
        if any(record.fixed_id and key in self.cloud.items for record, key in keyed):
            raise RecordExistsError("that record was written already")
        self.cloud.items[(self._state_pk, sk)] = {
            "version": expected + 1,
            "data": json.dumps(data, sort_keys=True),
        }
        for record, key in keyed:
            self.cloud.items[key] = {"data": json.dumps(record.to_dict(), sort_keys=True)}


class FakeEc2:
    """:class:`chalicelib.adapters.ec2.Ec2Nodes`'s contract, in memory, ClientToken included."""

    def __init__(self, cloud: Cloud, pool_name: str) -> None:
        self.cloud, self.pool_name = cloud, pool_name

    def describe(self, ids: Iterable[str]) -> dict[str, Instance]:
        return {i: self.cloud.instances[i].view() for i in ids if i in self.cloud.instances}

    def alive(self, ids: Iterable[str]) -> set[str]:
        return {i for i, instance in self.describe(ids).items() if instance.state in LIVE_STATES}

    def list_pool_instances(self) -> list[Instance]:
        return [
            instance.view()
            for instance in self.cloud.instances.values()
            if instance.tags.get(POOL_TAG_KEY) == self.pool_name and instance.state in LIVE_STATES
        ]

    def impaired(self, ids: Iterable[str]) -> set[str]:
        return {i for i in ids if i in self.cloud.instances and self.cloud.instances[i].impaired}

    def node_identity(self, spec: LaunchSpec) -> NodeIdentity:
        return NodeIdentity(image_id=spec.ami_id, instance_profile=spec.instance_profile)

    def _known(self, ids: Iterable[str]) -> list[FakeInstance]:
        ids = list(ids)
        unknown = [i for i in ids if i not in self.cloud.instances]
        if unknown:
            raise DependencyError("EC2 call failed (InvalidInstanceID.NotFound)")
        return [self.cloud.instances[i] for i in ids]

    def tag(self, ids: Iterable[str]) -> None:
        for instance in self._known(ids):
            instance.tags[POOL_TAG_KEY] = self.pool_name

    def untag(self, ids: Iterable[str]) -> None:
        for instance in self._known(ids):
            if instance.tags.get(POOL_TAG_KEY) == self.pool_name:
                del instance.tags[POOL_TAG_KEY]

    def terminate(self, ids: Iterable[str]) -> None:
        for instance in self._known(ids):
            instance.state = "terminated"

    def launch(self, token: str, spec: LaunchSpec, slot: int) -> Instance:
        if token in self.cloud.tokens:  # EC2 answers a repeated ClientToken with the same instance
            return self.cloud.instances[self.cloud.tokens[token]].view()
        instance = self.cloud.run_instance(
            spec.ami_id or "ami-template", {POOL_TAG_KEY: self.pool_name, LAUNCH_TOKEN_TAG: token}
        )
        self.cloud.tokens[token] = instance.id
        return instance.view()


class FakeMetrics:
    """:class:`chalicelib.adapters.cloudwatch.PoolMetrics`'s contract over the cloud's datapoints:
    a node's curve is the window's sum when each of its datapoints in the window carries one."""

    def __init__(self, cloud: Cloud, names: MetricNames) -> None:
        self.cloud, self.names = cloud, names

    def read(
        self,
        node_ids: list[str],
        end: datetime,
        window_seconds: int,
        lookback_seconds: int,
        *,
        curve: bool = False,
    ) -> PoolTraffic:
        window_start = end - timedelta(seconds=window_seconds)
        lookback_start = end - timedelta(seconds=max(lookback_seconds, window_seconds))
        traffic = {}
        for node in node_ids:
            points = [p for p in self.cloud.datapoints.get(node, []) if lookback_start <= p[0] < end]
            in_window = [p for p in points if p[0] >= window_start]
            within = None
            if curve and in_window and all(p[3] is not None for p in in_window):
                within = tuple(
                    float(sum(p[3][index] for p in in_window if p[3] is not None))
                    for index in range(len(CAPACITY_FACTORS))
                )
            traffic[node] = NodeTraffic(
                gets=sum(p[1] for p in in_window),
                hits=sum(p[2] for p in in_window),
                last_published=max((p[0] for p in points), default=None),
                within=within,
            )
        return PoolTraffic(traffic)
