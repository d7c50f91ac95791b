"""Routes through Chalice's test client, against moto."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from chalice.test import Client

from chalicelib.domain.config import default_config
from tests.conftest import (
    AUTH,
    NODE_AMI,
    OTHER_AMI,
    REGION,
    TOKEN,
    instance_states,
    post_json,
    run_instances,
    table_items,
)
from tests.test_config import REFUSED

PROTECTED = [
    ("GET", "/api/scaler/config"),
    ("POST", "/api/scaler/config"),
    ("GET", "/api/scaler/cache_list"),
    ("POST", "/api/scaler/cache_list"),
    ("GET", "/api/scaler/list"),
    ("POST", "/api/scaler/list"),
    ("POST", "/api/scaler/terminate_all"),
    ("GET", "/api/scaler/history"),
    ("POST", "/api/scaler/set_test_miss_rate"),
    ("POST", "/api/scaler/resize"),
    ("POST", "/api/poolsize/change"),
]


def snapshot(ec2: Any) -> tuple[Any, Any]:
    return table_items(), instance_states(ec2)


def error(response: Any) -> dict[str, str]:
    body = json.loads(response.body)
    assert set(body) == {"Code", "Message"}
    return body


# -- public routes and authentication ------------------------------------------------------


def test_health_is_public(client: Client) -> None:
    response = client.http.get("/api/scaler")
    assert response.status_code == 200
    assert response.json_body == {"status": "ok", "pool_size": 0, "auto_mode": True}


def test_home_page_is_public_html_with_relative_links(client: Client) -> None:
    response = client.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert 'href="api/scaler/list"' in response.body.decode()
    assert 'href="/' not in response.body.decode()


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_refuse_a_missing_or_wrong_token(client: Client, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.http.request(method, path, headers=headers, body=b"")
        assert response.status_code == 401, headers
        assert error(response)["Code"] == "UnauthorizedError"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_accept_the_token(client: Client, method: str, path: str, ec2: Any) -> None:
    (node,) = run_instances(ec2)
    bodies = {
        "/api/scaler/cache_list": {"cache_pool_ids": [node]},
        "/api/scaler/set_test_miss_rate": {"test_miss_rate": 0.5},
        "/api/scaler/resize": {"target_size": 1},
    }
    body = json.dumps(bodies[path]) if method == "POST" and path in bodies else ""
    headers = {**AUTH, "Content-Type": "application/json"}
    if path.endswith("/resize"):
        post_json(client, "/api/scaler/config", {"auto_mode": False})
    response = client.http.request(method, path, headers=headers, body=body)
    if path == "/api/poolsize/change":  # authenticated, then refused for its (empty) input
        assert response.status_code == 400 and "cache_ip" in response.json_body["Message"]
        return
    assert response.status_code == 200, response.body


def test_the_cookie_works_for_gets_only(client: Client) -> None:
    cookie = {"Cookie": f"theme=dark; scaler_token={TOKEN}"}
    assert client.http.get("/api/scaler/config", headers=cookie).status_code == 200
    response = client.http.post(
        "/api/scaler/config", headers={**cookie, "Content-Type": "application/json"}, body="{}"
    )
    assert response.status_code == 401


def test_no_configured_token_refuses_everyone(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALER_API_TOKEN")
    response = client.http.get("/api/scaler/config", headers=AUTH)
    assert response.status_code == 401
    assert "no API token is configured" in error(response)["Message"]
    assert client.http.get("/api/scaler").status_code == 200


def test_the_token_can_live_in_ssm(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from aws_lambda_powertools.utilities import parameters

    monkeypatch.delenv("SCALER_API_TOKEN")
    parameters.clear_caches()
    parameters.base.DEFAULT_PROVIDERS.clear()
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/memcache-scaler/dev/api-token", Value="from-ssm", Type="SecureString"
    )
    try:
        assert (
            client.http.get("/api/scaler/config", headers={"Authorization": "Bearer from-ssm"}).status_code
            == 200
        )
        assert client.http.get("/api/scaler/config", headers=AUTH).status_code == 401
    finally:
        parameters.clear_caches()
        parameters.base.DEFAULT_PROVIDERS.clear()


def test_test_endpoints_are_404_in_prod(prod_client: Client, ec2: Any) -> None:
    run_instances(ec2, pool="default")
    before = snapshot(ec2)
    response = post_json(prod_client, "/api/scaler/terminate_all", {})
    assert response.status_code == 404
    assert error(response)["Code"] == "NotFoundError"
    assert snapshot(ec2) == before


# -- config ---------------------------------------------------------------------------


def test_config_defaults(client: Client) -> None:
    response = client.http.get("/api/scaler/config", headers=AUTH)
    assert response.json_body == default_config()


def test_config_post_merges_and_records_who_changed_what(client: Client) -> None:
    response = post_json(client, "/api/scaler/config", {"max_miss_rate_threshold": 0.9, "auto_mode": "false"})
    assert response.status_code == 200
    assert response.json_body == {**default_config(), "max_miss_rate_threshold": 0.9, "auto_mode": False}
    second = post_json(client, "/api/scaler/config", {"ratio_expand_pool": 3})
    assert second.json_body["max_miss_rate_threshold"] == 0.9 and second.json_body["expand_ratio"] == 3.0
    records = client.http.get("/api/scaler/history", headers=AUTH).json_body["records"]
    assert [r["changed"] for r in records] == [
        {"max_miss_rate_threshold": 0.9, "auto_mode": False},
        {"expand_ratio": 3.0},
    ]
    assert {r["source_ip"] for r in records} == {"127.0.0.1"}
    assert client.http.get("/api/scaler", headers=AUTH).json_body["auto_mode"] is False


def test_config_post_accepts_a_form(client: Client) -> None:
    response = client.http.post(
        "/api/scaler/config",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"ratio_shrink_pool": "0.25", "min_pool_size": "2", "auto_mode": "true"}),
    )
    assert response.status_code == 200, response.body
    assert response.json_body["shrink_ratio"] == 0.25 and response.json_body["min_pool_size"] == 2


def _send(client: Client, raw: dict[str, Any], form: bool) -> Any:
    if form:
        return client.http.post(
            "/api/scaler/config",
            headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
            body=urlencode(raw),
        )
    return post_json(client, "/api/scaler/config", json.dumps(raw))


@pytest.mark.parametrize(("raw", "form", "words"), REFUSED)
def test_each_config_rule_refuses_with_400_and_changes_nothing(
    client: Client, ec2: Any, raw: dict[str, Any], form: bool, words: str
) -> None:
    post_json(client, "/api/scaler/config", {"min_pool_size": 2})
    before = snapshot(ec2)
    response = _send(client, raw, form)
    assert response.status_code == 400
    message = error(response)["Message"]
    # json.dumps writes inf and nan as Infinity and NaN, which the JSON parser refuses first.
    non_finite_json = not form and any(word in json.dumps(raw) for word in ("Infinity", "NaN"))
    assert ("is not a number JSON allows" in message) if non_finite_json else (words in message)
    assert snapshot(ec2) == before


@pytest.mark.parametrize(
    "body",
    [
        {"min_miss_rate_threshold": 0.9},
        {"max_miss_rate_threshold": 0.1},
        {"min_pool_size": 8, "max_pool_size": 7},
        {"max_pool_size": 1, "min_pool_size": 2},
    ],
)
def test_config_rules_are_checked_on_the_merged_result(
    client: Client, ec2: Any, body: dict[str, Any]
) -> None:
    before = snapshot(ec2)
    response = post_json(client, "/api/scaler/config", body)
    assert response.status_code == 400 and "must" in error(response)["Message"]
    assert snapshot(ec2) == before


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        ("[1, 2]", "application/json", 400, "must be a JSON object"),
        ("{", "application/json", 400, "not valid JSON"),
        ('{"auto_mode": true, "auto_mode": false}', "application/json", 400, "appears twice"),
        ("auto_mode=true&auto_mode=false", "application/x-www-form-urlencoded", 400, "given more than once"),
        ("auto_mode", "application/x-www-form-urlencoded", 400, "not a valid form"),
        (b"\xff\xfe", "application/json", 400, "not UTF-8"),
        ("[" * 5000 + "]" * 5000, "application/json", 400, "not valid JSON"),
        ('{"min_get_requests": ' + "9" * 5000 + "}", "application/json", 400, "not valid JSON"),
        ("max_miss_rate_threshold=0.5", "text/plain", 415, "Unsupported media type"),
    ],
)
def test_malformed_bodies(
    client: Client, ec2: Any, body: Any, content_type: str, status: int, words: str
) -> None:
    before = snapshot(ec2)
    response = client.http.post(
        "/api/scaler/config", headers={**AUTH, "Content-Type": content_type}, body=body
    )
    assert response.status_code == status
    assert words in error(response)["Message"]
    assert snapshot(ec2) == before


def test_bodies_over_64_kib_are_refused(client: Client, ec2: Any) -> None:
    before = snapshot(ec2)
    body = json.dumps({"auto_mode": False, "padding": "x" * 65536})
    response = post_json(client, "/api/scaler/config", body)
    assert response.status_code == 413 and error(response)["Code"] == "PayloadTooLargeError"
    assert snapshot(ec2) == before
    just_under = json.dumps({"auto_mode": False}).ljust(65536)
    assert post_json(client, "/api/scaler/config", just_under).status_code == 200


# -- cache_list -------------------------------------------------------------------------


def test_cache_list_adopts_in_order_and_releases_dropped_nodes(client: Client, ec2: Any) -> None:
    a, b, c = run_instances(ec2, 3)
    response = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [b, a]})
    assert response.status_code == 200
    assert response.json_body["cache_pool_ids"] == [b, a]
    assert [(n["id"], n["index"], n["state"]) for n in response.json_body["nodes"]] == [
        (b, 0, "launching"),
        (a, 1, "launching"),
    ]
    assert all(n["ip"] for n in response.json_body["nodes"])
    assert instance_states(ec2)[a] == ("running", "default")

    response = client.http.post(
        "/api/scaler/cache_list",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"cache_pool_ids": f"{a},{c}"}),
    )
    assert response.json_body["cache_pool_ids"] == [a, c]
    states = instance_states(ec2)
    assert states[b] == ("running", None), "a dropped node is released, not terminated"
    assert states[c] == ("running", "default")
    assert client.http.get("/api/scaler/cache_list", headers=AUTH).json_body == response.json_body
    records = [r for r in client.http.get("/api/scaler/history", headers=AUTH).json_body["records"]]
    assert [(r["kind"], r["added"], r["removed"]) for r in records] == [
        ("membership", [b, a], []),
        ("membership", [c], [b]),
    ]


def test_setting_the_same_list_again_changes_nothing(client: Client, ec2: Any) -> None:
    nodes = run_instances(ec2, 2)
    post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": nodes})
    before = snapshot(ec2)
    assert post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": nodes}).status_code == 200
    assert snapshot(ec2) == before


@pytest.mark.parametrize(
    ("make_body", "words"),
    [
        (lambda ids: {"cache_pool_ids": []}, "1..8 ids"),
        (lambda ids: {"cache_pool_ids": ids * 3}, "1..8 ids"),
        (lambda ids: {"cache_pool_ids": [ids[0], ids[0]]}, "more than once"),
        (lambda ids: {"cache_pool_ids": ["i-0000000000000dead"]}, "no such instance"),
        (lambda ids: {"cache_pool_ids": ["not-an-id"]}, "not EC2 instance ids"),
        (lambda ids: {"cache_pool_ids": [ids[0], 7]}, "only strings"),
        (lambda ids: {"cache_pool_ids": ids[0]}, "must be a list"),
        (lambda ids: {"cache_pool_ids": ids, "extra": 1}, "unknown field"),
        (lambda ids: {}, "cache_pool_ids is required"),
        (lambda ids: {"cache_pool_ids": [ids[0], "STOPPED"]}, "instance is stopped"),
        (lambda ids: {"cache_pool_ids": [ids[0], "OTHER_IMAGE"]}, f"is not the node image {NODE_AMI}"),
        (lambda ids: {"cache_pool_ids": [ids[0], "OTHER_POOL"]}, "belongs to pool 'other'"),
    ],
)
def test_cache_list_refuses_bad_lists_and_changes_nothing(
    client: Client, ec2: Any, make_body: Any, words: str
) -> None:
    ids = run_instances(ec2, 3)
    post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": ids[:1]})
    specials = {
        "STOPPED": run_instances(ec2)[0],
        "OTHER_IMAGE": run_instances(ec2, image=OTHER_AMI)[0],
        "OTHER_POOL": run_instances(ec2, pool="other")[0],
    }
    ec2.stop_instances(InstanceIds=[specials["STOPPED"]])
    body = json.loads(json.dumps(make_body(ids)))
    if isinstance(body.get("cache_pool_ids"), list):
        body["cache_pool_ids"] = [
            specials.get(x, x) if isinstance(x, str) else x for x in body["cache_pool_ids"]
        ]
    before = snapshot(ec2)
    response = post_json(client, "/api/scaler/cache_list", body)
    assert response.status_code == 400
    assert words in error(response)["Message"]
    assert snapshot(ec2) == before


def test_cache_list_without_a_node_image_is_a_conflict(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_AMI_ID")
    (node,) = run_instances(ec2)
    response = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [node]})
    assert response.status_code == 409 and "no node image" in error(response)["Message"]


def test_cache_list_uses_the_launch_templates_image(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_AMI_ID")
    monkeypatch.setenv("NODE_LAUNCH_TEMPLATE", "memcache-node")
    ec2.create_launch_template(LaunchTemplateName="memcache-node", LaunchTemplateData={"ImageId": OTHER_AMI})
    (wrong,) = run_instances(ec2)
    (right,) = run_instances(ec2, image=OTHER_AMI)
    assert post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [wrong]}).status_code == 400
    assert post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [right]}).status_code == 200


# -- list, terminate_all, history --------------------------------------------------------


def test_list_answers_json_when_asked_and_html_otherwise(client: Client, ec2: Any) -> None:
    nodes = run_instances(ec2, 2)
    post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": nodes})
    as_json = client.http.get("/api/scaler/list", headers={**AUTH, "Accept": "application/json"})
    instances = as_json.json_body["instances"]
    assert [(i["id"], i["index"], i["state"]) for i in instances] == [
        (nodes[0], 0, "launching"),
        (nodes[1], 1, "launching"),
    ]
    assert all(i["ip"] and i["instance_type"] == "t3.micro" and i["launched_at"] for i in instances)
    as_html = client.http.post("/api/scaler/list", headers=AUTH, body="")
    assert as_html.headers["Content-Type"].startswith("text/html")
    assert nodes[0] in as_html.body.decode() and "<table" in as_html.body.decode()
    assert client.http.post("/api/scaler/list", headers=AUTH, body='{"x": 1}').status_code == 400


def test_terminate_all_ends_listed_and_orphaned_nodes_but_not_released_ones(client: Client, ec2: Any) -> None:
    listed = run_instances(ec2, 2)
    post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": listed})
    (released,) = run_instances(ec2)
    post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [*listed, released]})
    post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": listed})
    (orphan,) = run_instances(ec2, pool="default")
    (stranger,) = run_instances(ec2, pool="other")
    response = post_json(client, "/api/scaler/terminate_all", {})
    assert response.status_code == 200
    assert sorted(response.json_body["terminated"]) == sorted([*listed, orphan])
    states = instance_states(ec2)
    assert {states[i][0] for i in [*listed, orphan]} <= {"shutting-down", "terminated"}
    assert states[released][0] == "running" and states[stranger][0] == "running"
    assert client.http.get("/api/scaler/cache_list", headers=AUTH).json_body == {
        "cache_pool_ids": [],
        "nodes": [],
        "sequence": 0,
    }
    assert client.http.get("/api/scaler", headers=AUTH).json_body["pool_size"] == 0
    last = client.http.get("/api/scaler/history", headers=AUTH).json_body["records"][-1]
    assert last["change"] == "terminate_all" and sorted(last["removed"]) == sorted([*listed, orphan])
    assert post_json(client, "/api/scaler/terminate_all", {}).json_body == {"terminated": []}


@pytest.mark.parametrize("query", ["minutes=0", "minutes=abc", "minutes=-5", "minutes=99999999", "hours=1"])
def test_history_refuses_bad_queries(client: Client, query: str) -> None:
    response = client.http.get(f"/api/scaler/history?{query}", headers=AUTH)
    assert response.status_code == 400 and error(response)["Code"] == "BadRequestError"


def test_history_of_an_empty_table(client: Client) -> None:
    assert client.http.get("/api/scaler/history?minutes=5", headers=AUTH).json_body == {"records": []}


# -- failures of AWS ----------------------------------------------------------------------


def test_a_missing_table_is_503_with_retry_after(client: Client) -> None:
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName="memcache-scaler-dev")
    response = client.http.get("/api/scaler/config", headers=AUTH)
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert "bootstrap" in error(response)["Message"]
    assert client.http.get("/api/scaler").status_code == 503


def test_a_failed_tag_call_answers_503_and_the_retry_finishes_the_work(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.adapters.ec2 import Ec2Nodes
    from chalicelib.domain.errors import DependencyError

    nodes = run_instances(ec2, 2)
    real_tag = Ec2Nodes.tag

    def failing_tag(self: Ec2Nodes, ids: Any) -> None:
        raise DependencyError("EC2 call failed (RequestLimitExceeded)")

    monkeypatch.setattr(Ec2Nodes, "tag", failing_tag)
    response = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": nodes})
    assert response.status_code == 503 and response.headers["Retry-After"]
    # The membership is written (nothing is lost) and the tag work is owed.
    assert client.http.get("/api/scaler/cache_list", headers=AUTH).json_body["cache_pool_ids"] == nodes
    assert {instance_states(ec2)[n][1] for n in nodes} == {None}

    monkeypatch.setattr(Ec2Nodes, "tag", real_tag)
    assert post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": nodes}).status_code == 200
    assert {instance_states(ec2)[n][1] for n in nodes} == {"default"}
