"""The scheduled function end to end under moto, through Chalice's test client, on chosen clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.adapters import aws
from tests.conftest import AUTH, cw_event, instance_states, post_json, publish

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def tick(client: Client, minute: int, seconds: int = 0) -> dict[str, Any]:
    moment = at(minute) + timedelta(seconds=seconds)
    return client.lambda_.invoke("scale", cw_event(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))).payload


def members(client: Client) -> list[str]:
    return client.http.get("/api/scaler/cache_list", headers=AUTH).json_body["cache_pool_ids"]


def nodes(client: Client) -> list[dict[str, Any]]:
    return client.http.get("/api/scaler/cache_list", headers=AUTH).json_body["nodes"]


def live(ec2: Any) -> list[str]:
    return [
        i for i, (state, pool) in instance_states(ec2).items() if pool == "default" and state == "running"
    ]


def serve(client: Client, minute: int, miss_rate: float, gets: int = 1000) -> None:
    """Every member publishes for the minute before tick ``minute``, at that miss rate."""
    publish(members(client), at(minute - 1), gets=gets, hits=round(gets * (1 - miss_rate)))


def grow_to_eight(client: Client) -> int:
    """1 → 2 → 4 → 8 under a high miss rate; answers the minute of the next tick."""
    assert tick(client, 0)["action"] == "repair"
    minute = 1
    for expected in (2, 4, 8):
        serve(client, minute, 0.9)
        decision = tick(client, minute)
        assert (decision["action"], decision["target_size"]) == ("scale_out", expected), decision
        minute += 1
    serve(client, minute, 0.5)
    assert tick(client, minute)["action"] == "hold"
    return minute + 1


def test_growth_1_2_4_8_and_stop_at_8(client: Client, ec2: Any) -> None:
    assert tick(client, 0)["action"] == "repair"
    assert len(live(ec2)) == 1
    for minute, expected in ((1, 2), (2, 4), (3, 8)):
        serve(client, minute, 0.9)
        decision = tick(client, minute)
        assert decision["miss_rate"] == pytest.approx(0.9)
        assert (decision["previous_size"], decision["target_size"]) == (expected // 2, expected)
        assert decision["action"] == "scale_out" and "above 0.8" in decision["reason"]
        assert len(live(ec2)) == expected
    serve(client, 4, 0.9)
    decision = tick(client, 4)
    assert (decision["action"], decision["target_size"]) == ("hold", 8) and "max_pool_size" in decision[
        "reason"
    ]
    assert len(live(ec2)) == 8
    assert {n["state"] for n in nodes(client)} == {"in_service"}


def test_a_second_scale_out_waits_for_launching_nodes(client: Client, ec2: Any) -> None:
    tick(client, 0)
    serve(client, 1, 0.9)
    assert tick(client, 1)["target_size"] == 2
    publish(members(client)[:1], at(1), gets=1000, hits=100)  # the new node has not published yet
    decision = tick(client, 2)
    assert decision["action"] == "hold" and "still launching" in decision["reason"]
    assert len(live(ec2)) == 2


def test_shrink_needs_the_whole_window_below_the_minimum(client: Client, ec2: Any) -> None:
    minute = grow_to_eight(client)
    for _ in range(4):
        serve(client, minute, 0.05)
        decision = tick(client, minute)
        assert decision["action"] == "hold" and "waits" in decision["reason"], decision
        minute += 1
    serve(client, minute, 0.05)
    decision = tick(client, minute)
    assert (decision["action"], decision["target_size"]) == ("scale_in", 4)
    assert len(live(ec2)) == 4 and len(members(client)) == 4
    # the window starts again after a resize
    for _ in range(4):
        minute += 1
        serve(client, minute, 0.05)
        assert tick(client, minute)["action"] == "hold"
    minute += 1
    serve(client, minute, 0.05)
    assert tick(client, minute)["target_size"] == 2


def test_one_tick_above_the_minimum_restarts_the_window(client: Client) -> None:
    minute = grow_to_eight(client)
    for rate in (0.05, 0.05, 0.05, 0.5, 0.05, 0.05, 0.05, 0.05):
        serve(client, minute, rate)
        assert tick(client, minute)["action"] == "hold"
        minute += 1
    serve(client, minute, 0.05)
    assert tick(client, minute)["action"] == "scale_in"


def test_no_data_changes_nothing(client: Client, ec2: Any) -> None:
    minute = grow_to_eight(client)
    for _ in range(6):  # silence: no datapoint at all
        decision = tick(client, minute)
        assert (decision["action"], decision["miss_rate"], decision["requests"]) == ("hold", None, 0)
        assert "no data" in decision["reason"]
        minute += 1
    serve(client, minute, 0.05, gets=5)  # 40 GETs over 8 nodes: under min_get_requests
    decision = tick(client, minute)
    assert decision["miss_rate"] is None and decision["requests"] == 40
    assert len(live(ec2)) == 8


def test_bounds_first_after_terminate_all(client: Client, ec2: Any) -> None:
    post_json(client, "/api/scaler/config", {"min_pool_size": 2, "auto_mode": False})
    tick(client, 0)
    assert len(live(ec2)) == 2
    assert post_json(client, "/api/scaler/terminate_all", {}).status_code == 200
    assert live(ec2) == []
    decision = tick(client, 1)
    assert (decision["action"], decision["previous_size"], decision["target_size"]) == ("repair", 0, 2)
    assert len(live(ec2)) == 2


def test_bounds_first_after_lowering_max_pool_size(client: Client, ec2: Any) -> None:
    minute = grow_to_eight(client)
    post_json(client, "/api/scaler/config", {"max_pool_size": 3, "min_pool_size": 1, "auto_mode": False})
    decision = tick(client, minute)  # no data, manual mode: the bounds still apply
    assert (decision["action"], decision["target_size"]) == ("scale_in", 3)
    remaining = members(client)
    assert len(remaining) == 3 and sorted(live(ec2)) == sorted(remaining)


def test_the_same_event_twice_launches_once(client: Client, ec2: Any) -> None:
    first = tick(client, 0, seconds=12)
    second = tick(client, 0, seconds=12)
    assert first["action"] == "repair" and second["replayed"] is True
    assert {k: v for k, v in second.items() if k != "replayed"} == first
    assert len(instance_states(ec2)) == 1
    history = client.http.get("/api/scaler/history", headers=AUTH).json_body["records"]
    assert [r["time"] for r in history if r["kind"] == "tick"] == ["2026-11-26T12:00:00Z"]


def test_an_older_event_after_a_newer_one_changes_nothing(client: Client, ec2: Any) -> None:
    tick(client, 5)
    decision = tick(client, 3)
    assert decision["action"] is None and "older" in decision["reason"]
    assert len(instance_states(ec2)) == 1


def test_tick_records_carry_the_decision_requests_and_policy(client: Client) -> None:
    tick(client, 0)
    serve(client, 1, 0.5)
    tick(client, 1)
    records = [r for r in client.http.get("/api/scaler/history", headers=AUTH).json_body["records"]]
    ticks = [r for r in records if r["kind"] == "tick"]
    assert [r["time"] for r in ticks] == ["2026-11-26T12:00:00Z", "2026-11-26T12:01:00Z"]
    last = ticks[-1]
    assert {
        "time",
        "miss_rate",
        "previous_size",
        "target_size",
        "action",
        "reason",
        "requests",
        "policy",
    } <= set(last)
    assert (last["requests"], last["policy"], last["miss_rate"]) == (1000, "ratio", pytest.approx(0.5))
    assert any(r["kind"] == "membership" and "in service" in r["reason"] for r in records)


def test_readiness_running_needs_no_metrics(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_READINESS", "running")
    tick(client, 0)
    tick(client, 1)
    assert [n["state"] for n in nodes(client)] == ["in_service"]


def test_a_launch_that_never_becomes_ready_times_out(client: Client, ec2: Any) -> None:
    tick(client, 0)
    (first,) = members(client)
    for minute in range(1, 10):
        assert tick(client, minute)["action"] == "hold"
    decision = tick(client, 10)  # 600 s after the launch
    assert instance_states(ec2)[first][0] in ("shutting-down", "terminated")
    assert decision["action"] == "repair" and first not in members(client)
    assert len(live(ec2)) == 1


def count_calls(client: Client, minute: int) -> dict[str, int]:
    calls: dict[str, int] = {}

    def count(event_name: str, **_: Any) -> None:
        name = event_name.split(".", 1)[1]
        calls[name] = calls.get(name, 0) + 1

    handlers = [(c, c.meta.events.register("before-call", count)) for c in aws._clients.values()]
    try:
        tick(client, minute)
    finally:
        for c, _ in handlers:
            c.meta.events.unregister("before-call", count)
    return calls


@pytest.mark.parametrize("size", [1, 8])
def test_a_steady_tick_makes_the_same_few_calls_at_any_size(client: Client, size: int) -> None:
    post_json(client, "/api/scaler/config", {"min_pool_size": size, "max_pool_size": size})
    tick(client, 0)
    serve(client, 1, 0.5)
    tick(client, 1)
    serve(client, 2, 0.5)
    tick(client, 2)  # warm: every client exists
    serve(client, 3, 0.5)
    calls = count_calls(client, 3)
    assert calls == {
        "dynamodb.Query": 1,
        "ec2.DescribeInstances": 1,
        "ec2.DescribeInstanceStatus": 1,
        "cloudwatch.GetMetricData": 1,
        "dynamodb.TransactWriteItems": 1,
    }, calls
    assert sum(calls.values()) <= 5


def dies_once_after_acting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next run dies after EC2 acted and before anything was recorded (a Lambda timeout)."""
    from chalicelib.service import executor as scaling

    real_records_of = scaling.records_of

    def die_once(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(scaling, "records_of", real_records_of)
        raise RuntimeError("the Lambda ran out of time")

    monkeypatch.setattr(scaling, "records_of", die_once)


def test_a_tick_that_died_after_launching_is_finished_by_its_retry(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dies_once_after_acting(monkeypatch)
    with pytest.raises(RuntimeError):
        tick(client, 0)
    assert len(instance_states(ec2)) == 1 and members(client) == []  # launched, not yet recorded
    retried = tick(client, 0)
    assert retried["action"] == "repair" and retried["replayed"] is True
    assert len(instance_states(ec2)) == 1, "the retry adopted the instance its token made"
    assert len(members(client)) == 1


def test_a_tick_that_died_after_launching_is_finished_by_the_next_tick(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dies_once_after_acting(monkeypatch)
    with pytest.raises(RuntimeError):
        tick(client, 0)
    decision = tick(client, 1)
    assert decision["time"] == "2026-11-26T12:01:00Z" and decision["action"] == "hold", decision
    assert len(instance_states(ec2)) == 1 and len(members(client)) == 1
    ticks = [
        r["time"]
        for r in client.http.get("/api/scaler/history", headers=AUTH).json_body["records"]
        if r["kind"] == "tick"
    ]
    assert ticks == ["2026-11-26T12:00:00Z", "2026-11-26T12:01:00Z"]


def test_a_cloudwatch_outage_is_no_data_and_never_shrinks(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.adapters.cloudwatch import PoolMetrics
    from chalicelib.domain.errors import DependencyError

    minute = grow_to_eight(client)

    def throttled(*args: Any, **kwargs: Any) -> Any:
        raise DependencyError("CloudWatch GetMetricData failed (Throttling)")

    monkeypatch.setattr(PoolMetrics, "read", throttled)
    for _ in range(6):
        decision = tick(client, minute)
        assert decision["action"] == "hold" and "Throttling" in decision["reason"]
        minute += 1
    assert len(live(ec2)) == 8


def test_a_scheduled_floor_lifts_the_pool_at_its_start_and_lets_it_shrink_after(client: Client) -> None:
    """12:02-12:05 UTC on the ticks' clock (the wall clock is years away): repaired up to 3 at
    12:02, held there under a low miss rate, shrunk at the first tick after it closes."""
    floor = {"start": "12:02", "duration_minutes": 3, "min_pool_size": 3}
    config = {"scheduled_floors": [floor], "scale_in_window_minutes": 2}
    assert post_json(client, "/api/scaler/config", config).status_code == 200
    assert tick(client, 0)["action"] == "repair"
    serve(client, 1, 0.05)
    assert (tick(client, 1)["action"], len(members(client))) == ("hold", 1)
    serve(client, 2, 0.05)
    lifted = tick(client, 2)
    assert (lifted["action"], lifted["previous_size"], lifted["target_size"]) == ("repair", 1, 3)
    assert lifted["reason"].startswith("scheduled floor 3 (12:02 UTC for 3 min every day, until ")
    assert lifted["scheduled_floor"]["ends"] == "2026-11-26T12:05:00Z"
    for minute in (3, 4):
        serve(client, minute, 0.05)
        decision = tick(client, minute)
        assert (decision["action"], decision["target_size"]) == ("hold", 3), decision
    serve(client, 5, 0.05)
    after = tick(client, 5)
    assert (after["action"], after["target_size"]) == ("scale_in", 1), after
    assert "scheduled_floor" not in after and "floor" not in after["reason"]
    assert len(members(client)) == 1


def test_cache_list_says_since_when_and_until_when_a_node_is_launching(client: Client) -> None:
    tick(client, 0)
    (node,) = nodes(client)
    assert (node["state"], node["since"], node["deadline"]) == (
        "launching",
        "2026-11-26T12:00:00Z",
        "2026-11-26T12:10:00Z",  # LAUNCH_TIMEOUT_SECONDS after the tick that launched it
    )
    serve(client, 1, 0.5)
    tick(client, 1)
    (node,) = nodes(client)
    assert (node["state"], node["since"], node["deadline"]) == ("in_service", "2026-11-26T12:01:00Z", None)
