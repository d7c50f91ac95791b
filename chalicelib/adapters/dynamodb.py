"""DynamoDB adapter: the one table that holds config, membership and history.

Layout (partition key ``pk``, sort key ``sk``, both strings):

- ``pool#<name>`` / ``config``: the config, as JSON in ``data``, with a ``version``.
- ``pool#<name>`` / ``membership``: the pool (nodes in order, notification sequence, tag work
  still owed), as JSON in ``data``, with a ``version``.
- ``pool#<name>#history`` / ``<UTC time to the microsecond>#<kind>#<id>``: one history record,
  as JSON in ``data``, expiring through the table's TTL attribute ``expires_at``.

Config and membership are replaced whole under a condition on ``version``; a writer that
loses the race gets :class:`VersionConflictError` and re-reads. A state change and its history
record are written in one transaction, so neither exists without the other.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters import aws
from chalicelib.domain.clock import WallClock, wall_clock
from chalicelib.domain.config import normalize
from chalicelib.domain.errors import DependencyError, RecordExistsError, VersionConflictError
from chalicelib.domain.pool import Pool
from chalicelib.domain.records import Record, sort_key_time

TTL_ATTRIBUTE = "expires_at"


def _dependency_error(exc: Exception, table: str) -> DependencyError:
    code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
    if code == "ResourceNotFoundException":
        return DependencyError(
            f"DynamoDB table {table!r} not found; create it with `python -m chalicelib.cli bootstrap`"
        )
    return DependencyError(f"DynamoDB call failed ({code})")


class StateStore:
    """Versioned config and membership, and the history, for one pool."""

    def __init__(
        self,
        table_name: str,
        pool_name: str,
        *,
        ttl_days: int = 30,
        client: Any = None,
        wall_clock: WallClock = wall_clock,
    ) -> None:
        self.table_name = table_name
        self.pool_name = pool_name
        self.ttl_days = ttl_days
        self._client = client
        # Only for the records' expiry: storage retention runs on the wall clock, whatever
        # clock (a tick's T, a replayed day) stamped the record.
        self._wall_clock = wall_clock

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else aws.client("dynamodb")

    @property
    def _state_pk(self) -> str:
        return f"pool#{self.pool_name}"

    @property
    def _history_pk(self) -> str:
        return f"pool#{self.pool_name}#history"

    # -- table -------------------------------------------------------------------------

    def create_table(self) -> bool:
        """Create the table (on-demand, TTL on history) unless it exists; True if created."""
        try:
            self.client.create_table(
                TableName=self.table_name,
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            created = True
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise _dependency_error(exc, self.table_name) from exc
            created = False
        try:
            self.client.get_waiter("table_exists").wait(
                TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
            ttl = self.client.describe_time_to_live(TableName=self.table_name)
            if ttl["TimeToLiveDescription"].get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                self.client.update_time_to_live(
                    TableName=self.table_name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
                )
        except (ClientError, BotoCoreError) as exc:
            raise _dependency_error(exc, self.table_name) from exc
        return created

    # -- reads -------------------------------------------------------------------------

    def load_state(self) -> tuple[dict[str, Any], int, Pool]:
        """Config (with its version) and pool in one strongly consistent query."""
        items = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": self._state_pk}},
            ConsistentRead=True,
        )["Items"]
        by_sk = {item["sk"]["S"]: item for item in items}
        config_data, config_version = _unpack(by_sk.get("config"))
        pool_data, pool_version = _unpack(by_sk.get("membership"))
        return normalize(config_data), config_version, Pool.from_data(pool_data, pool_version)

    def load_config(self) -> tuple[dict[str, Any], int]:
        data, version = _unpack(self._get("config"))
        return normalize(data), version

    def load_pool(self) -> Pool:
        data, version = _unpack(self._get("membership"))
        return Pool.from_data(data, version)

    def history(self, minutes: int, until: datetime) -> list[dict[str, Any]]:
        """Records of the ``minutes`` up to ``until`` (the pool's clock), and any stamped later;
        oldest first.

        Anchored on the pool's clock, not on the newest record: records stamped on different
        clocks (a route's before the first tick, a replayed day's) must not hide each other.
        """
        cutoff = until - timedelta(minutes=minutes)
        # "#~" sorts after every "<time>#<kind>#<id>" of that same instant: the cutoff itself is out.
        records: list[dict[str, Any]] = []
        try:
            pages = self.client.get_paginator("query").paginate(
                TableName=self.table_name,
                KeyConditionExpression="pk = :pk AND sk > :from",
                ExpressionAttributeValues={
                    ":pk": {"S": self._history_pk},
                    ":from": {"S": sort_key_time(cutoff) + "#~"},
                },
                ConsistentRead=True,
            )
            for page in pages:
                records.extend(json.loads(item["data"]["S"]) for item in page["Items"])
        except (ClientError, BotoCoreError) as exc:
            raise _dependency_error(exc, self.table_name) from exc
        return records

    # -- writes ------------------------------------------------------------------------

    def save_config(self, config: dict[str, Any], expected_version: int, record: Record) -> None:
        self._transact(self._versioned_put("config", config, expected_version), record)

    def save_pool(self, pool: Pool, *records: Record | None) -> Pool:
        """Write ``pool`` if nobody wrote since it was read; answer it with its new version."""
        self._transact(self._versioned_put("membership", pool.to_data(), pool.version), *records)
        return Pool.from_data(pool.to_data(), pool.version + 1)

    def add_record(self, record: Record) -> None:
        self._call("put_item", TableName=self.table_name, Item=self._record_item(record))

    def has_record(self, record: Record) -> bool:
        key = {"pk": {"S": self._history_pk}, "sk": {"S": self._record_sk(record)}}
        item = self._call("get_item", TableName=self.table_name, Key=key, ConsistentRead=True)
        return "Item" in item

    # -- helpers -----------------------------------------------------------------------

    def _get(self, sk: str) -> dict[str, Any] | None:
        return self._call(
            "get_item",
            TableName=self.table_name,
            Key={"pk": {"S": self._state_pk}, "sk": {"S": sk}},
            ConsistentRead=True,
        ).get("Item")

    def _versioned_put(self, sk: str, data: dict[str, Any], expected_version: int) -> dict[str, Any]:
        put: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": {
                "pk": {"S": self._state_pk},
                "sk": {"S": sk},
                "version": {"N": str(expected_version + 1)},
                "data": {"S": json.dumps(data, sort_keys=True)},
            },
        }
        if expected_version == 0:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "version = :expected"
            put["ExpressionAttributeValues"] = {":expected": {"N": str(expected_version)}}
        return {"Put": put}

    @staticmethod
    def _record_sk(record: Record) -> str:
        return f"{sort_key_time(record.at)}#{record.kind}#{record.fixed_id or uuid.uuid4().hex[:12]}"

    def _record_item(self, record: Record) -> dict[str, Any]:
        expires = self._wall_clock() + timedelta(days=self.ttl_days)
        return {
            "pk": {"S": self._history_pk},
            "sk": {"S": self._record_sk(record)},
            "data": {"S": json.dumps(record.to_dict(), sort_keys=True)},
            TTL_ATTRIBUTE: {"N": str(int(expires.timestamp()))},
        }

    def _transact(self, state_put: dict[str, Any], *records: Record | None) -> None:
        items = [state_put]
        for record in records:
            if record is None:
                continue
            put: dict[str, Any] = {"TableName": self.table_name, "Item": self._record_item(record)}
            if record.fixed_id:
                put["ConditionExpression"] = "attribute_not_exists(pk)"
            items.append({"Put": put})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
            if "ConditionalCheckFailed" in reasons[1:]:
                raise RecordExistsError("that record was written already") from exc
            if reasons[:1] == ["ConditionalCheckFailed"]:
                raise VersionConflictError("another writer changed the state first") from exc
            raise _dependency_error(exc, self.table_name) from exc
        except BotoCoreError as exc:
            raise _dependency_error(exc, self.table_name) from exc

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _dependency_error(exc, self.table_name) from exc


def _unpack(item: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    if item is None:
        return {}, 0
    return json.loads(item["data"]["S"]), int(item["version"]["N"])
