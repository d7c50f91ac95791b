"""Routes that resize by hand: set_test_miss_rate (test hook) and resize (manual mode)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.test import Client

from tests.conftest import AUTH, instance_states, post_json
from tests.test_routes import error, snapshot
from tests.test_tick import live, members, tick


def test_set_test_miss_rate_runs_the_ratio_rule_now_whatever_the_mode(client: Client, ec2: Any) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    tick(client, 0)  # repair to 1
    response = post_json(client, "/api/scaler/set_test_miss_rate", {"test_miss_rate": 0.95})
    assert response.status_code == 200
    decision = response.json_body
    assert (decision["action"], decision["previous_size"], decision["target_size"]) == ("scale_out", 1, 2)
    assert decision["miss_rate"] == 0.95 and set(decision) >= {"time", "reason"}
    assert len(live(ec2)) == 2
    # ignores the safety rules: a node is still launching, and it grows again
    again = post_json(client, "/api/scaler/set_test_miss_rate", {"test_miss_rate": 1})
    assert again.json_body["target_size"] == 4 and len(live(ec2)) == 4
    shrink = client.http.post(
        "/api/scaler/set_test_miss_rate",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        body="test_miss_rate=0",
    )
    assert (shrink.json_body["action"], shrink.json_body["target_size"]) == ("scale_in", 2)
    assert len(live(ec2)) == 2 and len(members(client)) == 2
    records = client.http.get("/api/scaler/history", headers=AUTH).json_body["records"]
    assert [r["change"] for r in records if r["kind"] == "membership"][-3:] == ["set_test_miss_rate"] * 3


def test_nodes_launched_by_a_route_are_stamped_by_the_next_tick(client: Client) -> None:
    post_json(client, "/api/scaler/set_test_miss_rate", {"test_miss_rate": 0.9})
    assert members(client)
    tick(client, 0)
    # launched at 12:00 by the tick's clock: still launching nine minutes later, timed out at ten
    for minute in range(1, 10):
        tick(client, minute)
    assert len(members(client)) == 1
    tick(client, 10)
    history = client.http.get("/api/scaler/history", headers=AUTH).json_body["records"]
    assert any("launch timed out" in r.get("reason", "") for r in history)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"test_miss_rate": 1.5}, "must be in [0, 1]"),
        ({"test_miss_rate": -0.1}, "must be in [0, 1]"),
        ({"test_miss_rate": "0.5"}, "must be a number"),
        ({"test_miss_rate": None}, "must be a number"),
        ({}, "test_miss_rate: required"),
        ({"test_miss_rate": 0.5, "x": 1}, "x: unknown field"),
        ('{"test_miss_rate": NaN}', "not a number JSON allows"),
    ],
)
def test_set_test_miss_rate_refuses_bad_input(client: Client, ec2: Any, body: Any, words: str) -> None:
    before = snapshot(ec2)
    response = post_json(client, "/api/scaler/set_test_miss_rate", body)
    assert response.status_code == 400 and words in error(response)["Message"]
    assert snapshot(ec2) == before


def test_set_test_miss_rate_is_404_in_prod(prod_client: Client) -> None:
    assert post_json(prod_client, "/api/scaler/set_test_miss_rate", {"test_miss_rate": 1}).status_code == 404


def test_resize_by_hand_in_manual_mode(client: Client, ec2: Any) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    response = post_json(client, "/api/scaler/resize", {"target_size": 3})
    assert response.status_code == 200
    assert (response.json_body["action"], response.json_body["target_size"]) == ("scale_out", 3)
    assert len(live(ec2)) == 3
    down = post_json(client, "/api/scaler/resize", {"target_size": 1})
    assert down.json_body["action"] == "scale_in" and len(live(ec2)) == 1
    same = post_json(client, "/api/scaler/resize", {"target_size": 1})
    assert same.json_body["action"] == "hold"


def test_resize_is_409_while_auto_mode_is_on(client: Client, ec2: Any) -> None:
    before = snapshot(ec2)
    response = post_json(client, "/api/scaler/resize", {"target_size": 3})
    assert response.status_code == 409 and "auto_mode is on" in error(response)["Message"]
    assert snapshot(ec2) == before


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"target_size": 0}, "must be 1..8"),
        ({"target_size": 9}, "must be 1..8"),
        ({"target_size": 2.5}, "must be an integer"),
        ({"target_size": 5.0}, "within [1, 4]"),  # a whole number is an integer, refused by the bounds
        ({"target_size": 5}, "within [1, 4]"),
        ({}, "target_size: required"),
    ],
)
def test_resize_refuses_sizes_outside_the_bounds(client: Client, ec2: Any, body: Any, words: str) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False, "max_pool_size": 4})
    before = snapshot(ec2)
    response = post_json(client, "/api/scaler/resize", json.dumps(body))
    assert response.status_code == 400 and words in error(response)["Message"]
    assert snapshot(ec2) == before
    assert instance_states(ec2) == {}
