"""Property: whatever body any POST route gets, never a 500, and a 4xx changes nothing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from chalice.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.domain.config import ALIASES, FIELDS
from tests.conftest import AUTH, run_instances
from tests.test_routes import snapshot

POST_ROUTES = [
    "/api/scaler/config",
    "/api/scaler/cache_list",
    "/api/scaler/list",
    "/api/scaler/terminate_all",
    "/api/scaler/set_test_miss_rate",
    "/api/scaler/resize",
    "/api/poolsize/change",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=x",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["true", "false", "0.5", "2", "1e999", "nan", "ratio", "i-0123456789abcdef0"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
names = st.sampled_from(
    [*FIELDS, *ALIASES, "cache_pool_ids", "test_miss_rate", "target_size", "cache_ip"]
) | st.text(max_size=12)


def well_formed(path: str, instance_ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies of the right shape for ``path``, so that the routes' success paths run too."""
    config_values = {
        "max_miss_rate_threshold": st.floats(0.01, 1),
        "min_miss_rate_threshold": st.floats(0, 0.5),
        "auto_mode": st.booleans(),
        "min_pool_size": st.integers(1, 4),
        "max_pool_size": st.integers(4, 8),
        "expand_ratio": st.floats(1.01, 4),
    }
    shapes: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "/api/scaler/config": st.fixed_dictionaries({}, optional=config_values),
        "/api/scaler/cache_list": st.fixed_dictionaries(
            {"cache_pool_ids": st.lists(st.sampled_from(instance_ids), min_size=1, max_size=4, unique=True)}
        ),
        "/api/scaler/set_test_miss_rate": st.fixed_dictionaries({"test_miss_rate": st.floats(0, 1)}),
        "/api/scaler/resize": st.fixed_dictionaries({"target_size": st.integers(0, 9)}),
        "/api/poolsize/change": st.fixed_dictionaries(
            {"cache_ip": st.sampled_from(["10.0.0.1", "::1", "x"])}
        ),
    }
    return shapes.get(path, st.just({}))


def bodies(instance_ids: list[str], path: str) -> st.SearchStrategy[tuple[bytes, str]]:
    ids = st.lists(st.sampled_from(instance_ids) | st.text(max_size=20), max_size=10)
    json_objects = st.dictionaries(names, json_values | ids, max_size=5)
    as_json = json_objects.map(lambda obj: json.dumps(obj).encode())
    as_form = st.lists(
        st.tuples(names, st.text(max_size=20) | st.sampled_from(instance_ids)), max_size=5
    ).map(lambda pairs: urlencode(pairs).encode())
    raw = st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
    shaped = well_formed(path, instance_ids).map(lambda obj: (json.dumps(obj).encode(), "application/json"))
    return shaped | st.tuples(as_json | as_form | raw | st.just(b""), st.sampled_from(CONTENT_TYPES))


@pytest.mark.parametrize("path", POST_ROUTES)
def test_post_routes_never_fail_with_500_and_refusals_change_nothing(
    client: Client, ec2: Any, path: str
) -> None:
    instance_ids = run_instances(ec2, 3) + run_instances(ec2, 1, pool="default")
    seen: dict[int, int] = {}

    @settings(
        max_examples=80,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(bodies(instance_ids, path))
    def post_anything(request: tuple[bytes, str]) -> None:
        body, content_type = request
        before = snapshot(ec2)
        response = client.http.post(path, headers={**AUTH, "Content-Type": content_type}, body=body)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.body
        if 400 <= response.status_code < 500:
            answer = json.loads(response.body)
            assert set(answer) == {"Code", "Message"}
            assert snapshot(ec2) == before

    post_anything()
    print(f"{path}: statuses {dict(sorted(seen.items()))}")  # shown with pytest -s
    assert any(400 <= status < 500 for status in seen), seen
