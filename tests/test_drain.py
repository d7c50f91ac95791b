"""Telling the front-end and the drain protocol, with a front-end listening on loopback."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from tests.conftest import AUTH, instance_states, post_json
from tests.frontend import FakeFrontend
from tests.test_routes import error
from tests.test_tick import members, nodes, tick

SECRET = "shared-secret"


@pytest.fixture
def frontend(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFrontend]:
    with FakeFrontend() as fake:
        monkeypatch.setenv("FRONTEND_NOTIFY_URL", fake.url)
        monkeypatch.setenv("FRONTEND_NOTIFY_SECRET", SECRET)
        monkeypatch.setenv("FRONTEND_NOTIFY_TIMEOUT_SECONDS", "0.5")
        monkeypatch.setenv("NODE_READINESS", "running")
        yield fake


def state_of(ec2: Any, node_id: str) -> str:
    return instance_states(ec2)[node_id][0]


def four_in_service(client: Client, frontend: FakeFrontend) -> list[dict[str, Any]]:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    assert post_json(client, "/api/scaler/resize", {"target_size": 4}).json_body["action"] == "scale_out"
    assert frontend.notices == [], "increase is sent when nodes are in service, not at launch"
    tick(client, 0)
    return nodes(client)


def test_increase_when_nodes_come_into_service_signed(
    client: Client, ec2: Any, frontend: FakeFrontend
) -> None:
    listed = four_in_service(client, frontend)
    (increase,) = frontend.notices
    assert increase == {
        "sequence": 1,
        "change": "increase",
        "mode": "automatic",
        "node_ip": [n["ip"] for n in listed],
        "cache_pool_ids": [n["id"] for n in listed],
        "added": [{"id": n["id"], "ip": n["ip"]} for n in listed],
        "removing": [],
    }
    headers, body = frontend.received[0]
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-scaler-signature"] == f"sha256={expected}"
    assert headers["content-type"] == "application/json"


def test_scale_in_drains_and_the_front_end_confirms(client: Client, ec2: Any, frontend: FakeFrontend) -> None:
    listed = four_in_service(client, frontend)
    decision = post_json(client, "/api/scaler/resize", {"target_size": 2}).json_body
    assert decision["action"] == "scale_in" and decision["draining"] == [listed[2]["id"], listed[3]["id"]]
    decrease = frontend.notices[-1]
    assert (decrease["sequence"], decrease["change"], decrease["mode"]) == (2, "decrease", "manual")
    assert decrease["removing"] == [{"id": n["id"], "ip": n["ip"]} for n in listed[2:]]
    assert decrease["cache_pool_ids"] == [n["id"] for n in listed[:2]]
    assert {state_of(ec2, n["id"]) for n in listed} == {"running"}, "nothing goes before it is confirmed"
    assert members(client) == [n["id"] for n in listed[:2]]
    assert [n["state"] for n in nodes(client)] == ["in_service", "in_service", "draining", "draining"]

    goner = listed[2]
    confirm = post_json(client, "/api/poolsize/change", {"cache_ip": goner["ip"]})
    assert confirm.status_code == 200 and confirm.json_body == {"terminated": goner["id"]}
    assert state_of(ec2, goner["id"]) in ("shutting-down", "terminated")
    assert post_json(client, "/api/poolsize/change", {"cache_ip": goner["ip"]}).json_body == confirm.json_body
    assert goner["id"] not in [n["id"] for n in nodes(client)]

    serving = post_json(client, "/api/poolsize/change", {"cache_ip": listed[0]["ip"]})
    assert serving.status_code == 409 and "not draining" in error(serving)["Message"]
    unknown = post_json(client, "/api/poolsize/change", {"cache_ip": "192.0.2.1"})
    assert unknown.status_code == 404
    assert post_json(client, "/api/poolsize/change", {"cache_ip": "not-an-ip"}).status_code == 400


def test_an_unconfirmed_drain_ends_at_its_timeout_from_delivery(
    client: Client, ec2: Any, frontend: FakeFrontend
) -> None:
    listed = four_in_service(client, frontend)
    post_json(client, "/api/scaler/resize", {"target_size": 3})
    last = listed[3]["id"]
    tick(client, 1)  # the route delivered; this tick starts the drain clock: 12:01 + 300 s
    for minute in range(2, 6):
        tick(client, minute)
        assert state_of(ec2, last) == "running"
    decision = tick(client, 6)
    assert state_of(ec2, last) in ("shutting-down", "terminated")
    assert decision["terminated"] == [last]
    history = client.http.get("/api/scaler/history", headers=AUTH).json_body["records"]
    assert any("not confirmed within 300 s" in r.get("reason", "") for r in history)


def test_a_front_end_that_fails_keeps_its_nodes_until_it_is_told(
    client: Client, ec2: Any, frontend: FakeFrontend, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = four_in_service(client, frontend)
    monkeypatch.setenv("FRONTEND_NOTIFY_TIMEOUT_SECONDS", "0.1")  # its retries back off less
    frontend.status = 500
    post_json(client, "/api/scaler/resize", {"target_size": 2})
    attempts = len(frontend.received)
    for minute in range(1, 12):  # far past the drain timeout: undelivered, so no clock runs
        tick(client, minute)
    assert len(frontend.received) > attempts, "retried at each tick"
    assert {state_of(ec2, n["id"]) for n in listed} == {"running"}
    frontend.status = 204
    tick(client, 12)
    assert frontend.notices[-1]["change"] == "decrease"
    for minute in range(13, 17):
        tick(client, minute)
    assert {state_of(ec2, n["id"]) for n in listed[2:]} == {"running"}
    tick(client, 17)  # 300 s after delivery at 12:12
    assert {state_of(ec2, n["id"]) for n in listed[2:]} <= {"shutting-down", "terminated"}


def test_a_front_end_that_times_out_is_retried(client: Client, ec2: Any, frontend: FakeFrontend) -> None:
    four_in_service(client, frontend)
    frontend.delay = 1.0  # longer than the 0.5 s timeout
    post_json(client, "/api/scaler/resize", {"target_size": 2})
    frontend.delay = 0.0
    tick(client, 1)
    changes = [n["change"] for n in frontend.notices]
    assert changes == ["increase", "decrease"]


def test_scale_out_takes_draining_nodes_back_first(client: Client, ec2: Any, frontend: FakeFrontend) -> None:
    listed = four_in_service(client, frontend)
    post_json(client, "/api/scaler/resize", {"target_size": 2})
    launched_before = len(instance_states(ec2))
    decision = post_json(client, "/api/scaler/resize", {"target_size": 4}).json_body
    assert decision["taken_back"] == [n["id"] for n in listed[2:]] and "launched" not in decision
    assert len(instance_states(ec2)) == launched_before
    assert members(client) == [n["id"] for n in listed]
    increase = frontend.notices[-1]
    assert increase["change"] == "increase" and [a["id"] for a in increase["added"]] == [
        n["id"] for n in listed[2:]
    ]
    assert increase["sequence"] == 3


def test_without_a_front_end_scale_in_terminates_at_once(client: Client, ec2: Any) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 3})
    decision = post_json(client, "/api/scaler/resize", {"target_size": 1}).json_body
    assert len(decision["terminated"]) == 2 and "draining" not in decision
    assert [n["state"] for n in nodes(client)] == ["launching"]


def test_a_confirmation_before_the_decrease_was_delivered_waits_for_it(
    client: Client, ec2: Any, frontend: FakeFrontend
) -> None:
    listed = four_in_service(client, frontend)
    frontend.status = 500
    post_json(client, "/api/scaler/resize", {"target_size": 3})  # the decrease is not delivered
    goner = listed[3]
    early = post_json(client, "/api/poolsize/change", {"cache_ip": goner["ip"]})
    assert early.status_code == 503 and early.headers["Retry-After"]
    assert "not delivered yet" in error(early)["Message"]
    assert state_of(ec2, goner["id"]) == "running", "no node goes before its decrease is delivered"
    frontend.status = 200
    tick(client, 1)
    confirm = post_json(client, "/api/poolsize/change", {"cache_ip": goner["ip"]})
    assert confirm.status_code == 200 and state_of(ec2, goner["id"]) in ("shutting-down", "terminated")
