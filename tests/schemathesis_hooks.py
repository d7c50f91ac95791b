"""Schemathesis hooks for the CLI pass against the local stack (``tests/test_openapi_stack.py``).

Loaded by ``schemathesis run`` through ``SCHEMATHESIS_HOOKS``; nothing here runs under pytest.

- ``positive_data_accepted``: schemathesis' ``positive_data_acceptance`` (a request the description
  accepts must not be refused with a 400), except for the refusals that depend on the state the
  request meets, which no schema can say (openapi.yaml's description lists them): the config rules
  between fields, checked on the merged config; a ``target_size`` outside the config's pool sizes;
  ``cache_pool_ids`` that name no instance of the node image. A 400 passes only when every problem
  its message names is one of those; one malformed field fails it.
- ``before_call``: a form field whose value is an empty list sends nothing; when that leaves the
  form empty, requests streams the empty body chunked, which ``chalice local``'s HTTP server does not
  read (API Gateway does), and the next request on the connection breaks. The body is made the
  empty form it is on the wire, so it goes with a Content-Length.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import schemathesis
from schemathesis import Case, CheckContext, HookContext, Response

FORM = "application/x-www-form-urlencoded"
_ID = r"i-[0-9a-f]+"
# The refusals of a well-formed request that depend on the state it meets, one problem each.
STATE_RULES = re.compile(
    "|".join(
        (
            r"min_miss_rate_threshold must be below max_miss_rate_threshold \(would be [^)]*\)",
            r"min_pool_size must not exceed max_pool_size \(would be [^)]*\)",
            r"target_size: must be within \[\d+, \d+\] \(min_pool_size\.\.max_pool_size\)",
            rf"{_ID}: (no such instance|instance is \w+, not pending or running"
            r"|image .* is not the node image .*|has no instance profile, .*"
            r"|instance profile .* is not the node instance profile .*|belongs to pool .*)",
            rf"being terminated by the pool, cannot be adopted: {_ID}(, {_ID})*",
        )
    )
)


def refused_for_state(message: str) -> bool:
    """Does this 400's message name only problems of state, none of the request's own form?"""
    return all(STATE_RULES.fullmatch(problem) for problem in message.split("; "))


class RefusedValidRequest(AssertionError):
    pass


@schemathesis.check
def positive_data_accepted(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    try:
        message = json.loads(response.content)["Message"]
    except (ValueError, KeyError, TypeError):
        message = ""
    if not refused_for_state(message):
        raise RefusedValidRequest(f"a request the description accepts was refused: {message!r}")
    return None


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    body = case.body
    form = (case.media_type or "").startswith(FORM)
    if form and isinstance(body, Mapping) and body and not urlencode(body, doseq=True):
        case.body = {}
