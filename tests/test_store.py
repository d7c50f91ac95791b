"""Adapter: the DynamoDB store under moto."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.domain.config import default_config
from chalicelib.domain.errors import DependencyError, VersionConflictError
from chalicelib.domain.pool import IN_SERVICE, LAUNCHING, Node, Pool
from chalicelib.domain.records import Record, config_record, membership_record
from tests.conftest import REGION, TABLE, table_items
from tests.test_config import assert_both_updates_survive, run_two_writers

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_bootstrap_is_safe_to_repeat(store: StateStore) -> None:
    assert store.create_table() is False  # the fixture created it already
    client = boto3.client("dynamodb", region_name=REGION)
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "expires_at"
    assert client.describe_table(TableName=TABLE)["Table"]["BillingModeSummary"]["BillingMode"] == (
        "PAY_PER_REQUEST"
    )


def test_an_empty_table_answers_defaults(store: StateStore) -> None:
    config, version, pool = store.load_state()
    assert config == default_config() and version == 0
    assert pool == Pool()


def test_config_writes_are_versioned(store: StateStore) -> None:
    record = config_record(T0, changed={"auto_mode": False}, previous={"auto_mode": True}, source_ip="x")
    store.save_config({**default_config(), "auto_mode": False}, 0, record)
    with pytest.raises(VersionConflictError):
        store.save_config({**default_config(), "auto_mode": True}, 0, record)
    config, version = store.load_config()
    assert config["auto_mode"] is False and version == 1
    assert [r["kind"] for r in store.history(60, T0)] == ["config"]


def test_a_lost_race_writes_no_history_record(store: StateStore) -> None:
    store.save_pool(Pool(), None)
    stale = Pool()  # version 0, but the table is at 1 now
    with pytest.raises(VersionConflictError):
        store.save_pool(stale.with_nodes([Node("i-0123456789abcdef0", LAUNCHING)]), _membership(T0))
    assert store.history(60, T0) == []
    assert store.load_pool().nodes == ()


def test_pool_round_trips(store: StateStore) -> None:
    pool = Pool(
        nodes=(Node("i-0123456789abcdef0", IN_SERVICE, ip="10.0.0.1"), Node("i-00000000", LAUNCHING)),
        sequence=4,
        pending_untag=("i-11111111",),
    )
    saved = store.save_pool(pool, _membership(T0))
    assert saved.version == 1
    assert store.load_pool() == saved
    assert store.load_state()[2] == saved


def _membership(at: datetime) -> Record:
    return membership_record(at, change="replace", reason="test")


def test_history_is_the_window_up_to_the_pool_clock_and_anything_later(store: StateStore) -> None:
    for minute in (0, 30, 59, 60, 61, 120):
        store.add_record(_membership(T0 + timedelta(minutes=minute)))
    until = T0 + timedelta(minutes=61)
    times = [record["time"] for record in store.history(60, until)]
    # the window is (12:01, 13:01], and 14:00 is stamped later: in too, oldest first
    assert times == [
        "2026-11-26T12:30:00Z",
        "2026-11-26T12:59:00Z",
        "2026-11-26T13:00:00Z",
        "2026-11-26T13:01:00Z",
        "2026-11-26T14:00:00Z",
    ]
    assert len(store.history(61, until)) == 5
    assert len(store.history(62, until)) == 6


def test_history_records_expire_on_the_wall_clock_whatever_clock_stamped_them(moto: None) -> None:
    wall = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
    StateStore(TABLE, "default", wall_clock=lambda: wall).add_record(_membership(T0))
    (item,) = [item for item in table_items() if item["pk"]["S"].endswith("#history")]
    assert int(item["expires_at"]["N"]) == int((wall + timedelta(days=30)).timestamp())
    assert json.loads(item["data"]["S"])["time"] == "2026-11-26T12:00:00Z"


def test_two_config_writers_interleaving_on_dynamodb_both_survive(store: StateStore) -> None:
    interleaved = run_two_writers(store)
    assert interleaved.loads == 3
    assert_both_updates_survive(store)
    assert len([r for r in store.history(60, T0) if r["kind"] == "config"]) == 2


class NaiveStore(StateStore):
    """What the seed did: write whatever was read, with no condition on the version."""

    def _versioned_put(self, sk: str, data: dict[str, Any], expected_version: int) -> dict[str, Any]:
        put = super()._versioned_put(sk, data, expected_version)
        put["Put"].pop("ConditionExpression")
        put["Put"].pop("ExpressionAttributeValues", None)
        return put


def test_the_interleaving_check_fails_on_a_naive_dynamodb_writer(moto: None) -> None:
    naive = NaiveStore(TABLE, "default")
    run_two_writers(naive)
    with pytest.raises(AssertionError):
        assert_both_updates_survive(naive)


def test_a_missing_table_is_a_dependency_error_that_says_how_to_fix_it(moto: None) -> None:
    with pytest.raises(DependencyError, match="cli bootstrap"):
        StateStore("no-such-table", "default").load_config()


def test_a_throttled_write_loses_nothing_and_is_a_dependency_error(store: StateStore) -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    record = config_record(T0, changed={"auto_mode": False}, previous={"auto_mode": True}, source_ip="x")
    with Stubber(client) as stub:
        stub.add_client_error("transact_write_items", "ProvisionedThroughputExceededException")
        with pytest.raises(DependencyError, match="ProvisionedThroughputExceededException"):
            StateStore(TABLE, "default", client=client).save_config(
                {**default_config(), "auto_mode": False}, 0, record
            )
        stub.assert_no_pending_responses()
    assert store.load_config() == (default_config(), 0)


def test_pools_are_kept_apart(moto: None) -> None:
    a, b = StateStore(TABLE, "a"), StateStore(TABLE, "b")
    a.save_pool(Pool(nodes=(Node("i-0123456789abcdef0", IN_SERVICE),)), _membership(T0))
    assert b.load_pool().nodes == () and b.history(60, T0) == []
    assert a.load_pool().pool_size == 1
