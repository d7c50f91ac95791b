"""Reconciliation, replacement, one writer and injected faults: nodes are never lost."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib.adapters.ec2 import Ec2Nodes
from chalicelib.domain.errors import DependencyError
from tests.conftest import AUTH, REGION, TABLE, instance_states, post_json, publish, run_instances
from tests.frontend import FakeFrontend
from tests.test_tick import at, live, members, nodes, serve, tick


def history(client: Client) -> list[dict[str, Any]]:
    return client.http.get("/api/scaler/history?minutes=10080", headers=AUTH).json_body["records"]


def three_in_service(client: Client) -> list[str]:
    post_json(client, "/api/scaler/config", {"min_pool_size": 3, "max_pool_size": 3})
    tick(client, 0)
    serve(client, 1, 0.5)
    tick(client, 1)
    assert {n["state"] for n in nodes(client)} == {"in_service"}
    return members(client)


# -- reconciliation ---------------------------------------------------------------------


def test_an_orphan_does_not_survive_two_ticks(client: Client, ec2: Any) -> None:
    (orphan,) = run_instances(ec2, pool="default")  # tagged, in no list, in no plan
    tick(client, 0)
    assert instance_states(ec2)[orphan][0] == "running", "first seen: given one tick of grace"
    tick(client, 1)
    assert instance_states(ec2)[orphan][0] in ("shutting-down", "terminated")
    assert orphan not in members(client)
    assert any("in no list or plan" in r.get("reason", "") for r in history(client))


def test_a_node_terminated_out_of_band_leaves_the_list_and_is_replaced(client: Client, ec2: Any) -> None:
    first, *_ = three_in_service(client)
    ec2.terminate_instances(InstanceIds=[first])
    serve(client, 2, 0.5)
    decision = tick(client, 2)
    assert first not in members(client)
    assert (decision["action"], decision["previous_size"], decision["target_size"]) == ("replace", 3, 3)
    assert len(live(ec2)) == 3


def test_a_stopped_node_is_replaced(client: Client, ec2: Any) -> None:
    first, *rest = three_in_service(client)
    ec2.stop_instances(InstanceIds=[first])
    serve(client, 2, 0.5)
    decision = tick(client, 2)
    assert decision["action"] == "replace" and "stopped" in decision["reason"]
    assert first not in members(client) and len(members(client)) == 3
    assert instance_states(ec2)[first][0] in ("shutting-down", "terminated")


def test_a_silent_node_is_replaced_one_at_a_time(client: Client, ec2: Any) -> None:
    ids = three_in_service(client)
    for minute in range(2, 7):  # ids[0] and ids[1] fall silent, ids[2] keeps publishing
        publish(ids[2:], at(minute - 1), gets=1000, hits=500)
        decision = tick(client, minute)
        if decision["action"] == "replace":
            break
    assert decision["action"] == "replace" and "published nothing for 300 s" in decision["reason"]
    assert len([i for i in ids if i not in members(client)]) == 1, "one node at a time"


def test_a_pool_wide_silence_replaces_nothing(client: Client, ec2: Any) -> None:
    ids = three_in_service(client)
    for minute in range(2, 12):
        assert tick(client, minute)["action"] == "hold"
    assert members(client) == ids


# -- one writer -------------------------------------------------------------------------


def _plan_held_by_a_route(store_pool_claimed_at: str) -> None:
    from chalicelib.adapters.dynamodb import StateStore

    store = StateStore(TABLE, "default")
    pool = store.load_pool()
    plan = {
        "source": "resize",
        "mode": "manual",
        "notify": False,
        "time": None,
        "label": "v1",
        "summary": {"action": "hold", "reason": "r", "time": "x", "previous_size": 0, "target_size": 0},
        "take_back": [],
        "launch": [],
        "drain": [],
        "terminate": [],
        "recent_miss_rates": [],
        "events": [],
        "claimed_at": store_pool_claimed_at,
    }
    from dataclasses import replace

    from chalicelib.domain.plan import Plan

    store.save_pool(replace(pool, pending_plan=Plan.from_data(plan)))


def test_a_route_finding_the_pool_held_answers_503_and_a_tick_holds(client: Client, ec2: Any) -> None:
    from datetime import UTC, datetime

    _plan_held_by_a_route(datetime.now(UTC).isoformat())
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    response = post_json(client, "/api/scaler/resize", {"target_size": 2})
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "another writer holds the pool" in json.loads(response.body)["Message"]
    decision = tick(client, 0)
    assert decision["action"] == "hold" and "another writer" in decision["reason"]
    assert instance_states(ec2) == {}


def test_an_expired_lease_is_taken_over(client: Client, ec2: Any) -> None:
    from datetime import UTC, datetime, timedelta

    _plan_held_by_a_route((datetime.now(UTC) - timedelta(hours=1)).isoformat())
    decision = tick(client, 0)
    assert decision["action"] == "repair" and len(live(ec2)) == 1


def test_a_concurrent_writer_makes_the_tick_look_again(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.adapters.dynamodb import StateStore

    real_save = StateStore.save_pool
    raced: list[bool] = []

    def save_after_a_rival(self: StateStore, pool: Any, *records: Any) -> Any:
        if not raced:
            raced.append(True)
            real_save(self, self.load_pool())  # a route wrote first: the version moved on
        return real_save(self, pool, *records)

    monkeypatch.setattr(StateStore, "save_pool", save_after_a_rival)
    decision = tick(client, 0)
    assert decision["action"] == "repair" and raced
    assert len(instance_states(ec2)) == 1 and len(members(client)) == 1


# -- EC2 failures -------------------------------------------------------------------------


def test_a_partial_launch_records_what_happened(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_launch = Ec2Nodes.launch
    calls: list[int] = []

    def launch_once(self: Ec2Nodes, *args: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise DependencyError("EC2 call failed (RequestLimitExceeded)")
        return real_launch(self, *args)

    monkeypatch.setattr(Ec2Nodes, "launch", launch_once)
    post_json(client, "/api/scaler/config", {"min_pool_size": 3})
    decision = tick(client, 0)
    assert len(decision["launched"]) == 1 and "RequestLimitExceeded" in decision["errors"][0]
    assert len(instance_states(ec2)) == 1 and len(members(client)) == 1
    monkeypatch.setattr(Ec2Nodes, "launch", real_launch)
    decision = tick(client, 1)
    assert decision["action"] == "repair" and len(members(client)) == 3 and len(live(ec2)) == 3


def test_a_failed_terminate_keeps_its_intent_and_the_next_tick_finishes_it(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 3})
    real_terminate = Ec2Nodes.terminate

    def failing(self: Ec2Nodes, ids: Any) -> None:
        raise DependencyError("EC2 call failed (UnauthorizedOperation)")

    monkeypatch.setattr(Ec2Nodes, "terminate", failing)
    decision = post_json(client, "/api/scaler/resize", {"target_size": 1}).json_body
    assert "UnauthorizedOperation" in decision["errors"][0]
    # No longer members (the pool size is what was decided), not lost: still live, still owed.
    assert len(members(client)) == 1 and len(live(ec2)) == 3
    owed = set(live(ec2)) - set(members(client))
    tick(client, 0)  # still failing: retried, still owed
    assert len(live(ec2)) == 3
    monkeypatch.setattr(Ec2Nodes, "terminate", real_terminate)
    decision = tick(client, 1)
    assert set(decision["terminated"]) == owed
    assert live(ec2) == members(client) and len(members(client)) == 1


# -- swaps with a front-end ---------------------------------------------------------------


def test_a_swap_tells_the_front_end_before_releasing(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeFrontend() as frontend:
        monkeypatch.setenv("FRONTEND_NOTIFY_URL", frontend.url)
        monkeypatch.setenv("FRONTEND_NOTIFY_TIMEOUT_SECONDS", "0.5")
        monkeypatch.setenv("NODE_READINESS", "running")
        a, b, c = run_instances(ec2, 3)
        post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [a, b]})
        tick(client, 0)
        assert [n["change"] for n in frontend.notices] == ["increase"]
        frontend.status = 503
        post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [a, c]})
        assert instance_states(ec2)[b] == ("running", "default"), "not released before its decrease"
        tick(client, 1)  # retried, still failing; and b is no orphan
        assert instance_states(ec2)[b] == ("running", "default")
        frontend.status = 200
        tick(client, 2)
        changes = [(n["change"], [x["id"] for x in n["added"] + n["removing"]]) for n in frontend.notices]
        assert changes[:2] == [("increase", [a, b]), ("decrease", [b])]
        tick(client, 3)  # the tick after the delivery releases it
        assert instance_states(ec2)[b] == ("running", None), "released: untagged, not terminated"
        assert frontend.notices[-1]["change"] == "increase" and frontend.notices[-1]["added"][0]["id"] == c


def test_live_instances_never_exceed_eight(client: Client, ec2: Any) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 8})
    assert (
        post_json(client, "/api/scaler/set_test_miss_rate", {"test_miss_rate": 1}).json_body["action"]
        == "hold"
    )
    assert len(live(ec2)) == 8
    boto3.client("ec2", region_name=REGION)  # nothing else launched anything


def test_an_impaired_node_is_replaced(client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    first, *rest = three_in_service(client)
    monkeypatch.setattr(Ec2Nodes, "impaired", lambda self, ids: {first} & set(ids))
    serve(client, 2, 0.5)
    decision = tick(client, 2)
    assert decision["action"] == "replace" and "impaired" in decision["reason"]
    assert first not in members(client) and len(members(client)) == 3


def test_tag_work_ec2_keeps_refusing_stops_neither_ticks_nor_the_route_that_drops_the_node(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = run_instances(ec2, 2)

    def refused(self: Ec2Nodes, ids: Any) -> None:
        if list(ids):
            raise DependencyError("EC2 call failed (UnauthorizedOperation)")

    monkeypatch.setattr(Ec2Nodes, "tag", refused)
    response = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [a, b]})
    assert response.status_code == 503, "the tag failed: the caller is told"
    assert members(client) == [a, b], "the new list stands; its tag work stays owed"
    decision = tick(client, 0)
    assert decision["time"] == "2026-11-26T12:00:00Z" and "action" in decision
    dropped = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [a]})
    assert members(client) == [a] and dropped.status_code == 503  # a's own tag is still refused
    assert instance_states(ec2)[b] == ("running", None), "b was never tagged, and is released"
