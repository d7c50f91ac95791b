"""Every route of SPEC's table, and the dashboard page, as one Chalice blueprint.

Each view parses its input, calls one service and shapes the answer; project errors become
HTTP codes in ``chalicelib.web.http_errors.handle_errors``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from chalice import Blueprint, NotFoundError, Response

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.frontend import Deadline
from chalicelib.domain import config as config_rules
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.node_life import Timeouts, deadline
from chalicelib.domain.notices import last_delivered
from chalicelib.domain.pool import Pool, describe_nodes
from chalicelib.domain.settings import Settings
from chalicelib.service import wiring
from chalicelib.service.config_change import change_config
from chalicelib.service.history import parse_minutes, pool_clock, read_history
from chalicelib.service.manual import parse_target_size, parse_test_miss_rate, resize, set_test_miss_rate
from chalicelib.service.membership import Membership, parse_cache_pool_ids
from chalicelib.service.tick import TickDeps
from chalicelib.web import pages
from chalicelib.web.bodies import ACCEPTED_CONTENT_TYPES, parse_body, require_no_fields, single_valued
from chalicelib.web.http_errors import handle_errors
from chalicelib.web.pages import instances_page

api = Blueprint(__name__)

# API Gateway answers 504 after 29 s, whatever the function's own timeout.
REQUEST_SECONDS = 25.0


def route(path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``api.route`` with the project's error mapping, and JSON or form bodies on POST."""
    if "POST" in options.get("methods", []):
        options.setdefault("content_types", ACCEPTED_CONTENT_TYPES)

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        api.route(path, **options)(handle_errors(view))
        return view

    return register


def _settings() -> Settings:
    return Settings.from_env()


def _store(settings: Settings) -> StateStore:
    return wiring.adapters(settings).store


def _deadline() -> Deadline:
    """What is left of this request: the function's time, within API Gateway's 29 s."""
    return Deadline.of_invocation(api.current_request.lambda_context, cap_seconds=REQUEST_SECONDS)


def _membership(settings: Settings) -> Membership:
    built = wiring.adapters(settings)
    return Membership(built.store, built.ec2, settings, pool_clock, built.notifier, deadline=_deadline())


def _tick_deps() -> TickDeps:
    return TickDeps.from_settings(_settings(), _deadline())


def _cache_list(pool: Pool, settings: Settings) -> dict[str, Any]:
    """SPEC's answer, each node with when it entered its state (the tick's T) and when a tick
    ends it if it stays there (a launch or a drain that times out), for the dashboard."""
    timeouts = Timeouts.of(settings)
    nodes = [
        {**described, "since": node.since, "deadline": deadline(node, timeouts)}
        for described, node in zip(describe_nodes(pool), pool.nodes, strict=True)
    ]
    return {"cache_pool_ids": pool.cache_pool_ids, "nodes": nodes, "sequence": last_delivered(pool)}


def _body() -> tuple[list[tuple[str, Any]], bool]:
    request = api.current_request
    return parse_body(request.raw_body, request.headers.get("content-type"))


def _source_ip() -> str:
    return api.current_request.context.get("identity", {}).get("sourceIp") or "unknown"


def _wants_json() -> bool:
    return "application/json" in api.current_request.headers.get("accept", "").lower()


def _html(text: str) -> Response:
    return Response(body=text, status_code=200, headers={"Content-Type": "text/html; charset=utf-8"})


def _status() -> dict[str, Any]:
    config, _, pool = _store(_settings()).load_state()
    return {"status": "ok", "pool_size": pool.pool_size, "auto_mode": config["auto_mode"]}


@route("/", methods=["GET"])
def home() -> Response:
    """The dashboard: static HTML; its script reads the JSON API with the visitor's token."""
    page = _html(pages.home_page())
    page.headers["Content-Security-Policy"] = pages.CONTENT_SECURITY_POLICY
    return page


@route("/assets/{name}", methods=["GET"])
def static_asset(name: str) -> Response:
    """The dashboard's scripts and styles (public): only the names ``pages.ASSET_NAMES`` lists."""
    found = pages.asset(name)
    if found is None:
        raise NotFoundError(f"no asset named {name!r}")
    # Pages link assets with ``?v=<content hash>``, so a day's caching never serves a stale copy.
    # A text type, which API Gateway compresses (``minimum_compression_size``) for clients that
    # accept it: caches keep the two answers apart by Accept-Encoding.
    headers = {
        "Content-Type": found.content_type,
        "Cache-Control": "public, max-age=86400",
        "Vary": "Accept-Encoding",
    }
    return Response(body=found.body, status_code=200, headers=headers)


@route("/api/scaler", methods=["GET"])
def health() -> dict[str, Any]:
    return _status()


@route("/api/scaler/config", methods=["GET"])
def get_config() -> dict[str, Any]:
    config, _ = _store(_settings()).load_config()
    return config


@route("/api/scaler/config", methods=["POST"])
def post_config() -> dict[str, Any]:
    pairs, from_form = _body()
    fields = single_valued(pairs)
    return change_config(_store(_settings()), fields, from_form=from_form, source_ip=_source_ip())


@route("/api/scaler/cache_list", methods=["GET"])
def get_cache_list() -> dict[str, Any]:
    settings = _settings()
    return _cache_list(_store(settings).load_pool(), settings)


@route("/api/scaler/cache_list", methods=["POST"])
def post_cache_list() -> dict[str, Any]:
    pairs, from_form = _body()
    ids = parse_cache_pool_ids(pairs, from_form=from_form)
    settings = _settings()
    return _cache_list(_membership(settings).replace(ids, source_ip=_source_ip()), settings)


@route("/api/scaler/list", methods=["GET", "POST"], content_types=ACCEPTED_CONTENT_TYPES)
def list_instances() -> Any:
    if api.current_request.method == "POST":
        require_no_fields(_body()[0])
    instances = _membership(_settings()).list_instances()
    if _wants_json():
        return {"instances": instances}
    return _html(instances_page(instances))


@route("/api/scaler/terminate_all", methods=["POST"])
def terminate_all() -> dict[str, Any]:
    require_no_fields(_body()[0])
    return {"terminated": _membership(_settings()).terminate_all(source_ip=_source_ip())}


@route("/api/scaler/set_test_miss_rate", methods=["POST"])
def post_set_test_miss_rate() -> dict[str, Any]:
    pairs, from_form = _body()
    rate = parse_test_miss_rate(single_valued(pairs), from_form=from_form)
    return set_test_miss_rate(_tick_deps(), rate, clock=pool_clock, source_ip=_source_ip())


@route("/api/scaler/resize", methods=["POST"])
def post_resize() -> dict[str, Any]:
    pairs, from_form = _body()
    target = parse_target_size(single_valued(pairs), from_form=from_form)
    return resize(_tick_deps(), target, clock=pool_clock, source_ip=_source_ip())


@route("/api/poolsize/change", methods=["POST"])
def post_poolsize_change() -> dict[str, Any]:
    fields = single_valued(_body()[0])
    unknown = sorted(set(fields) - {"cache_ip"})
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}")
    ip = fields.get("cache_ip")
    try:
        ip = str(ipaddress.ip_address(ip.strip(config_rules.TEXT_SPACE))) if isinstance(ip, str) else None
    except ValueError:
        ip = None
    if ip is None:
        raise ValidationError("cache_ip: must be the IP address of a draining node")
    terminated = _membership(_settings()).confirm_drain(ip, source_ip=_source_ip())
    return {"terminated": terminated}


@route("/api/scaler/history", methods=["GET"])
def history() -> dict[str, Any]:
    params = api.current_request.query_params or {}
    unknown = sorted(set(params) - {"minutes"})
    if unknown:
        raise ValidationError(f"unknown query parameter(s): {', '.join(unknown)}")
    minutes = parse_minutes(params.get("minutes"))
    return {"records": read_history(_store(_settings()), minutes)}
