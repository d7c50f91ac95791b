"""openapi.yaml against the app: the same routes, request schemas that take what the routes take,
answers in the documented shapes, and a fuzzing pass over every operation driven by the description.

The fuzzing pass has schemathesis generate requests from the description (valid ones, and ones that
break it), sends them in-process through Chalice's test client under moto, and checks: never a 5xx,
only documented statuses and shapes, 401 without a usable token, 413 over 64 KiB, and nothing
changed in DynamoDB or EC2 by a 4xx. Fixed budget, derandomized: every run sends the same cases.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jsonschema
import pytest
import schemathesis
import yaml
from chalice.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import GenerationMode

from chalicelib.web import auth
from chalicelib.web.bodies import MAX_BODY_BYTES
from tests.conftest import AUTH, PROJECT_DIR, TOKEN, post_json, run_instances
from tests.test_routes import snapshot
from tests.test_tick import tick

SPEC_PATH = PROJECT_DIR / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
# Examples per operation: 14 operations, about 60 s in all on CI's machine.
FUZZ_EXAMPLES = 45
OPERATIONS = sorted(
    (path, method.upper())
    for path, item in SPEC["paths"].items()
    for method in item
    if method in HTTP_METHODS
)


def resolve(node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by what it points to (the description has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = SPEC
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target)
        return {key: resolve(value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value) for value in node]
    return node


def operation(path: str, method: str) -> dict[str, Any]:
    return resolve(SPEC["paths"][path][method.lower()])


def request_schema(path: str, method: str, media: str) -> dict[str, Any]:
    return operation(path, method)["requestBody"]["content"][media]["schema"]


def is_public(path: str, method: str) -> bool:
    return SPEC["paths"][path][method.lower()].get("security", SPEC["security"]) == []


def _reading(text: str) -> Any:
    """A form field as the description reads it: the text, or the number a JSON reader finds in it
    (what schemathesis does too); the routes read a few more spellings (``.25``, ``+2``)."""
    try:
        number = json.loads(text)
    except ValueError:
        return text
    return number if isinstance(number, int | float) and not isinstance(number, bool) else text


def form_fields(body: str) -> dict[str, Any]:
    """A form body as the schema sees it: a repeated field is a list."""
    fields: dict[str, Any] = {}
    for key, text in parse_qsl(body, keep_blank_values=True):
        value = _reading(text)
        if key in fields:
            previous = fields[key]
            fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[key] = value
    return fields


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """Formats checked too (``ipv4``, ``ipv6``): the description relies on them."""
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def schema_accepts(schema: dict[str, Any], instance: Any) -> bool:
    return validator(schema).is_valid(instance)


# -- the description itself, and its routes against the app's --------------------------------------


def test_the_description_is_valid_openapi_3_1() -> None:
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1")


def test_every_route_of_the_app_is_described_and_nothing_else() -> None:
    from app import app

    registered = {(path, method) for path, methods in app.routes.items() for method in methods}
    assert registered == set(OPERATIONS)


def test_security_is_what_the_auth_middleware_does() -> None:
    public = {(method, path) for path, method in OPERATIONS if is_public(path, method)}
    assert public == {
        (method, path)
        for path, method in OPERATIONS
        if (method, path) in auth.PUBLIC_ROUTES or (method == "GET" and path.startswith(auth.PUBLIC_PREFIXES))
    }
    for path, method in OPERATIONS:
        schemes = SPEC["paths"][path][method.lower()].get("security", SPEC["security"])
        names = {name for requirement in schemes for name in requirement}
        if not is_public(path, method):
            # The cookie lets a browser open pages: GET only; a change needs the header.
            assert names == ({"bearerAuth", "cookieAuth"} if method == "GET" else {"bearerAuth"}), (
                path,
                method,
            )
            assert "401" in operation(path, method)["responses"]
    tests = {path for path, method in OPERATIONS if operation(path, method).get("x-test-endpoint")}
    assert tests == auth.TEST_ROUTES
    assert SPEC["components"]["securitySchemes"]["cookieAuth"]["name"] == auth.COOKIE_NAME


def test_the_documented_limits_are_the_apps() -> None:
    from chalicelib.domain.config import FIELDS, POLICIES, default_config

    config = SPEC["components"]["schemas"]["Config"]
    assert set(config["required"]) == set(FIELDS) == set(config["properties"])
    assert {name: rule["default"] for name, rule in config["properties"].items()} == default_config()
    assert config["properties"]["policy"]["enum"] == list(POLICIES)
    assert str(MAX_BODY_BYTES) in SPEC["info"]["description"]


# -- request bodies: what the routes accept, the schemas accept ------------------------------------


@pytest.fixture
def pool(client: Client, ec2: Any) -> list[str]:
    """Four instances of the node image, one of them already tagged for the pool."""
    return run_instances(ec2, 3) + run_instances(ec2, 1, pool="default")


def send(client: Client, path: str, media: str, body: str) -> Any:
    return client.http.post(path, headers={**AUTH, "Content-Type": media}, body=body.encode())


FLOOR = '{"start": "18:00", "duration_minutes": 2880, "min_pool_size": 4, "days": ["sat"]}'
BAD_FLOORS = [
    '{"start": "18:00", "duration_minutes": 1441, "min_pool_size": 2}',  # every day: at most a day
    '{"start": "7pm", "duration_minutes": 60, "min_pool_size": 2}',
    '{"start": "18:00", "duration_minutes": 60, "min_pool_size": 2, "days": ["Fri"]}',
]
GOOD_BODIES = [
    ("/api/scaler/config", JSON, '{"max_miss_rate_threshold": 0.9, "auto_mode": "false"}'),
    ("/api/scaler/config", JSON, '{"ratio_expand_pool": 3, "min_get_requests": 0, "policy": "ratio"}'),
    ("/api/scaler/config", JSON, "{}"),
    ("/api/scaler/config", FORM, "ratio_expand_pool=3&min_pool_size=2"),
    ("/api/scaler/config", FORM, "auto_mode=TRUE&shrink_ratio=0.25&scale_in_window_minutes=10"),
    # An integer is any whole number (JSON Schema's `integer`), in JSON and in forms.
    ("/api/scaler/config", JSON, '{"min_get_requests": 145.0, "min_pool_size": 1e0}'),
    ("/api/scaler/config", FORM, "min_get_requests=145.0&scale_in_window_minutes=%2010%0A&max_pool_size=8"),
    ("/api/scaler/config", FORM, "auto_mode=%09false%0B%0C&expand_ratio=1e1"),
    ("/api/scaler/config", JSON, '{"shadow_policy": "predictive", "scheduled_floors": [' + FLOOR + "]}"),
    ("/api/scaler/config", JSON, '{"shadow_policy": null, "scheduled_floors": []}'),
    ("/api/scaler/config", FORM, "shadow_policy=&scheduled_floors=" + quote("[" + FLOOR + "]")),
    ("/api/scaler/set_test_miss_rate", JSON, '{"test_miss_rate": 0.95}'),
    ("/api/scaler/set_test_miss_rate", FORM, "test_miss_rate=0"),
    ("/api/scaler/set_test_miss_rate", FORM, "test_miss_rate=1e-3"),
    ("/api/scaler/resize", JSON, '{"target_size": 2}'),
    ("/api/scaler/resize", JSON, '{"target_size": 2.0}'),
    ("/api/scaler/resize", FORM, "target_size=1"),
    ("/api/scaler/resize", FORM, "target_size=1.0"),
    ("/api/scaler/cache_list", JSON, '{"cache_pool_ids": ["{0}", "{1}"]}'),
    ("/api/scaler/cache_list", FORM, "cache_pool_ids={0},{1}"),
    ("/api/scaler/cache_list", FORM, "cache_pool_ids=%20{0}%09,%0A{1},"),
    ("/api/scaler/cache_list", FORM, "cache_pool_ids={2}&cache_pool_ids={3}"),
    ("/api/poolsize/change", JSON, '{"cache_ip": "10.0.0.1"}'),  # accepted, then 404: no such node
    ("/api/poolsize/change", FORM, "cache_ip=%3A%3A1"),
    ("/api/scaler/list", JSON, "{}"),
    ("/api/scaler/list", FORM, ""),
    ("/api/scaler/terminate_all", JSON, ""),
]
BAD_BODIES = [
    ("/api/scaler/config", JSON, '{"max_miss_rate_threshold": "0.5"}'),  # a JSON number must be a number
    ("/api/scaler/config", JSON, '{"colour": "blue"}'),
    ("/api/scaler/config", JSON, '{"expand_ratio": 2, "ratio_expand_pool": 3}'),
    ("/api/scaler/config", JSON, '{"min_pool_size": 9}'),
    ("/api/scaler/config", JSON, '{"auto_mode": "yes"}'),
    ("/api/scaler/config", JSON, '{"shrink_ratio": 1}'),
    ("/api/scaler/config", FORM, "min_pool_size=two"),
    ("/api/scaler/config", FORM, "policy=lru"),
    ("/api/scaler/config", JSON, '{"shadow_policy": ""}'),
    *(("/api/scaler/config", JSON, '{"scheduled_floors": [' + floor + "]}") for floor in BAD_FLOORS),
    ("/api/scaler/set_test_miss_rate", JSON, '{"test_miss_rate": 1.5}'),
    ("/api/scaler/set_test_miss_rate", JSON, "{}"),
    ("/api/scaler/resize", JSON, '{"target_size": "2"}'),
    ("/api/scaler/resize", FORM, "target_size=9"),
    ("/api/scaler/resize", JSON, '{"target_size": 2.5}'),
    ("/api/scaler/resize", FORM, "target_size=2.5"),
    ("/api/scaler/config", JSON, '{"min_get_requests": 9007199254740992}'),
    ("/api/scaler/config", JSON, '{"expand_ratio": 1' + "0" * 400 + "}"),  # no double holds it
    ("/api/scaler/config", FORM, "scale_in_window_minutes=%09%2B3167080%09"),  # out of range, as text
    ("/api/scaler/config", FORM, "max_miss_rate_threshold=947595678"),
    ("/api/scaler/config", FORM, "min_pool_size=2.5"),
    ("/api/scaler/set_test_miss_rate", FORM, "test_miss_rate=%0B%0A14292920%0B%09"),
    ("/api/scaler/cache_list", JSON, '{"cache_pool_ids": "{0}"}'),
    ("/api/scaler/cache_list", JSON, '{"cache_pool_ids": []}'),
    ("/api/scaler/cache_list", JSON, '{"cache_pool_ids": ["i-xyz"]}'),
    ("/api/scaler/cache_list", FORM, "cache_pool_ids=i-xyz"),
    ("/api/scaler/cache_list", FORM, "cache_pool_ids=&cache_pool_ids=&cache_pool_ids="),
    ("/api/scaler/cache_list", FORM, "cache_pool_ids={0},%20{0}"),  # an id twice in one value
    ("/api/scaler/cache_list", FORM, "cache_pool_ids=,{0}"),
    ("/api/scaler/cache_list", FORM, "cache_pool_ids=%20{0}&cache_pool_ids={1}"),  # repeated: exact ids
    ("/api/poolsize/change", JSON, '{"cache_ip": "not-an-ip"}'),
    ("/api/poolsize/change", JSON, '{"cache_ip": "10.0.0.1", "why": "done"}'),
    ("/api/scaler/list", JSON, '{"x": 1}'),
    ("/api/scaler/terminate_all", FORM, "a=b"),
]


def _instance(media: str, body: str) -> Any:
    return (json.loads(body) if body else {}) if media == JSON else form_fields(body)


@pytest.mark.parametrize(("path", "media", "body"), GOOD_BODIES)
def test_bodies_the_route_accepts_the_schema_accepts(
    client: Client, pool: list[str], path: str, media: str, body: str
) -> None:
    body = (
        body.replace("{0}", pool[0]).replace("{1}", pool[1]).replace("{2}", pool[2]).replace("{3}", pool[3])
    )
    if path == "/api/scaler/resize":
        assert post_json(client, "/api/scaler/config", {"auto_mode": False}).status_code == 200
    response = send(client, path, media, body)
    assert response.status_code in (200, 404), response.body  # 404: the IP names no node
    assert schema_accepts(request_schema(path, "POST", media), _instance(media, body))


@pytest.mark.parametrize(("path", "media", "body"), BAD_BODIES)
def test_bodies_the_schema_refuses_the_route_refuses(
    client: Client, pool: list[str], path: str, media: str, body: str
) -> None:
    body = body.replace("{0}", pool[0]).replace("{1}", pool[1])
    assert not schema_accepts(request_schema(path, "POST", media), _instance(media, body))
    response = send(client, path, media, body)
    assert response.status_code == 400, response.body


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("shrink_ratio", ".25", 0.25),
        ("expand_ratio", "+2", 2.0),
        ("min_pool_size", "02", 2),
        ("scale_in_window_minutes", "%0B7%0C", 7),
        ("max_miss_rate_threshold", "1.", 1.0),
    ],
)
def test_a_form_number_may_be_spelled_more_ways_than_json_writes_it(
    client: Client, field: str, text: str, value: Any
) -> None:
    """Beyond the description's reading (a JSON number's text): a sign, leading zeros, a bare point,
    any ASCII whitespace around it. More lenient, never less: each of these is a valid value."""
    response = send(client, "/api/scaler/config", FORM, f"{field}={text}")
    assert response.status_code == 200, response.body
    assert response.json_body[field] == value


# -- the fuzzing pass ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    authorized: bool  # by SPEC's rule: the bearer token, or on a GET the cookie
    oversized: bool

    @property
    def media_accepted(self) -> bool:
        return _accepted_media(self.method, self.headers.get("Content-Type"))


# How a generated request authenticates: mostly properly, so the routes' own checks run.
AUTH_VARIANTS = ["bearer"] * 8 + ["generated", "none", "wrong bearer", "cookie", "wrong cookie", "basic"]


def _encode(body: Any, media: str | None) -> bytes:
    """A generated body as bytes on the wire; what cannot be that media type is sent as it comes."""
    if body is None or type(body).__name__ == "NotSet":
        return b""
    if media == FORM and isinstance(body, dict):
        return urlencode(body, doseq=True).encode()
    if isinstance(body, str | bytes) and media != JSON:
        return body.encode() if isinstance(body, str) else body
    return json.dumps(body, default=lambda value: bytes(value).decode("latin-1")).encode()


# Content types besides the documented ones; None keeps the case's own.
CONTENT_TYPES = [None] * 6 + [
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/json; charset=utf-8",
]


def _accepted_media(method: str, content_type: str | None) -> bool:
    """What Chalice lets through to the view: JSON (also when absent), and on POST form bodies."""
    media = (content_type or JSON).split(";")[0].strip().lower()
    return media == JSON or (method == "POST" and media == FORM)


def _as_sent(case: Any, variant: str, oversize: int | None, content_type: str | None) -> Sent:
    headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
    generated = headers.pop("Authorization", None)
    cookie = None
    if variant == "bearer":
        headers["Authorization"] = f"Bearer {TOKEN}"
    elif variant == "generated" and generated is not None:
        headers["Authorization"] = generated
    elif variant == "wrong bearer":
        headers["Authorization"] = "Bearer not-the-token"
    elif variant == "basic":
        headers["Authorization"] = f"Basic {TOKEN}"
    elif variant in ("cookie", "wrong cookie"):
        cookie = TOKEN if variant == "cookie" else "not-the-token"
        headers["Cookie"] = f"{auth.COOKIE_NAME}={cookie}"
    if case.cookies and "Cookie" not in headers:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in case.cookies.items())
    body = _encode(case.body, case.media_type)
    if content_type or case.media_type:
        headers["Content-Type"] = content_type or case.media_type
    if oversize is not None:
        body = (body + b" " * (MAX_BODY_BYTES + oversize))[: MAX_BODY_BYTES + oversize]
    query = urlencode(case.query or {}, doseq=True)
    authorized = headers.get("Authorization") == f"Bearer {TOKEN}" or (
        case.method.upper() == "GET" and "Authorization" not in headers and cookie == TOKEN
    )
    return Sent(
        method=case.method.upper(),
        path=case.formatted_path + (f"?{query}" if query else ""),
        headers=headers,
        body=body,
        authorized=authorized,
        oversized=oversize is not None,
    )


@cache
def _described() -> Any:
    return schemathesis.openapi.from_path(str(SPEC_PATH))


def _described_with(values: dict[tuple[str, str], list[Any]]) -> Any:
    """The description with some fields narrowed to values that exist in this pool (instance ids,
    node IPs), so that generated requests reach the routes' success and conflict paths too."""
    spec = copy.deepcopy(SPEC)
    for (schema, field), choices in values.items():
        prop = spec["components"]["schemas"][schema]["properties"][field]
        if prop.get("type") == "array":
            prop["items"] = {"enum": choices}
        else:
            spec["components"]["schemas"][schema]["properties"][field] = {"type": "string", "enum": choices}
    return schemathesis.openapi.from_dict(spec)


def requests_for(
    path: str, method: str, known: dict[tuple[str, str], list[Any]] | None = None
) -> st.SearchStrategy[Sent]:
    operations = [_described()[path][method]]
    if known:
        operations.append(_described_with(known)[path][method])
    cases = st.one_of(
        *(
            api_operation.as_strategy(generation_mode=mode)
            for api_operation in operations
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        )
    )
    # About one request in ten carries a body over the limit.
    oversize = st.sampled_from([False] * 9 + [True]).flatmap(
        lambda big: st.integers(1, 8192) if big else st.none()
    )
    return st.builds(
        _as_sent, cases, st.sampled_from(AUTH_VARIANTS), oversize, st.sampled_from(CONTENT_TYPES)
    )


def _documented(path: str, method: str, status: int, content_type: str) -> dict[str, Any] | None:
    """The documented schema of this answer (None for a text one); fails when the status is not."""
    responses = operation(path, method)["responses"]
    assert str(status) in responses, f"{method} {path}: undocumented status {status}"
    content = responses[str(status)].get("content", {})
    media = content_type.split(";")[0].strip()
    assert media in content, f"{method} {path} {status}: undocumented content type {content_type}"
    return content[media]["schema"] if media == JSON else None


SEEN: dict[str, Counter[int]] = {}


@pytest.fixture(scope="module", autouse=True)
def fuzz_report(pytestconfig: pytest.Config) -> Iterator[None]:
    """The pass's numbers, for the closing note: requests sent and statuses seen per operation.
    Written to the terminal (not captured), as the module's tests end."""
    yield
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if not SEEN or reporter is None or capture is None:
        return
    total = sum(sum(seen.values()) for seen in SEEN.values())
    with capture.global_and_fixture_disabled():  # what capsys.disabled() does, for a module fixture
        reporter.write_line("")
        reporter.write_line(f"OpenAPI fuzzing pass: {total} requests over {len(SEEN)} operations")
        for op, seen in SEEN.items():
            reporter.write_line(
                f"  {op}: {sum(seen.values())} requests, statuses {dict(sorted(seen.items()))}"
            )


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_a_body_over_64_kib_is_refused_with_413_and_changes_nothing(
    client: Client, ec2: Any, path: str, method: str
) -> None:
    tick(client, 0)
    url = path.replace("{name}", "dashboard.js")
    for size in (MAX_BODY_BYTES + 1, 1024 * 1024):
        before = snapshot(ec2)
        response = client.http.request(method, url, headers={**AUTH, "Content-Type": JSON}, body=b" " * size)
        if is_public(path, method):
            # Public pages read no body, and answer before any check (auth.py): nothing to refuse.
            assert response.status_code == 200
        else:
            assert response.status_code == 413, response.body
            assert json.loads(response.body)["Code"] == "PayloadTooLargeError"
        assert snapshot(ec2) == before
    at_limit = client.http.request(
        method, url, headers={**AUTH, "Content-Type": JSON}, body=b" " * MAX_BODY_BYTES
    )
    assert at_limit.status_code != 413


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_fuzz_every_operation_from_the_description(
    client: Client, ec2: Any, pool: list[str], path: str, method: str
) -> None:
    tick(client, 0)  # a pool with a node, so that reads and resizes have something to work on
    if path == "/api/scaler/resize":
        post_json(client, "/api/scaler/config", {"auto_mode": False})
    seen = SEEN.setdefault(f"{method} {path}", Counter())
    public = is_public(path, method)
    nodes = client.http.get("/api/scaler/cache_list", headers=AUTH).json_body["nodes"]
    known = {
        ("CacheListRequest", "cache_pool_ids"): pool,
        ("PoolsizeChange", "cache_ip"): [node["ip"] for node in nodes] + ["10.255.0.1"],
    }

    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests_for(path, method, known))
    def fuzz(sent: Sent) -> None:
        before = snapshot(ec2)
        response = client.http.request(sent.method, sent.path, headers=sent.headers, body=sent.body)
        status = response.status_code
        seen[status] += 1
        assert status < 500, (sent, response.body)
        if not public and not sent.authorized:
            assert status == 401, (sent, response.body)
        elif not public and sent.oversized:
            assert status == 413, (sent, response.body)
        elif not sent.media_accepted:
            assert status == 415, (sent, response.body)
        schema = _documented(path, method, status, response.headers.get("Content-Type", JSON))
        if schema is not None:
            validator(schema).validate(json.loads(response.body))
        if 400 <= status < 500:
            assert snapshot(ec2) == before, (sent, response.body)

    fuzz()
