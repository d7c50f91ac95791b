"""The scaler's policy configuration: fields, defaults, parsing and SPEC's rules.

Pure: no boto3, no environment, no clock. :func:`update_config` orchestrates a merge through any
store that offers versioned reads and conditional writes (see ``chalicelib.adapters.dynamodb``).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain import floors, policies
from chalicelib.domain.errors import ValidationError, retry_on_conflict
from chalicelib.domain.records import Record, config_record

MAX_NODES = 8
POLICIES = policies.NAMES
# Integers go through JSON and browsers: keep them exact in a double.
_MAX_SAFE_INT = 2**53 - 1
# What may surround a value given as text (a form's fields, "true"/"false"): ASCII whitespace,
# which openapi.yaml's patterns spell [ \t\n\r\v\f] (str.strip() alone would take more).
TEXT_SPACE = " \t\n\r\v\f"
# A number as form text: a sign, digits with a point anywhere, an exponent.
_NUMBER_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Field:
    kind: str  # "number", "integer", "boolean", "choice" or "floors"
    default: Any
    rule: Callable[[Any], bool]
    rule_text: str
    # Unset (JSON null, or an empty form field) is a value of its own: the field's default.
    nullable: bool = False


FIELDS: dict[str, Field] = {
    "max_miss_rate_threshold": Field("number", 0.8, lambda x: 0 < x <= 1, "0 < x ≤ 1"),
    "min_miss_rate_threshold": Field("number", 0.2, lambda x: 0 <= x < 1, "0 ≤ x < 1"),
    "expand_ratio": Field("number", 2.0, lambda x: x > 1, "> 1"),
    "shrink_ratio": Field("number", 0.5, lambda x: 0 < x < 1, "0 < x < 1"),
    "auto_mode": Field("boolean", True, lambda x: True, "true or false"),
    "min_pool_size": Field("integer", 1, lambda x: 1 <= x <= MAX_NODES, f"1..{MAX_NODES}"),
    "max_pool_size": Field("integer", MAX_NODES, lambda x: 1 <= x <= MAX_NODES, f"1..{MAX_NODES}"),
    "scale_in_window_minutes": Field("integer", 5, lambda x: 1 <= x <= 60, "1..60"),
    "min_get_requests": Field("integer", 50, lambda x: 0 <= x <= _MAX_SAFE_INT, f"0..{_MAX_SAFE_INT}"),
    "policy": Field("choice", "ratio", lambda x: x in POLICIES, " or ".join(map(repr, POLICIES))),
    # Optional fields (README, "Shadow decisions" and "Scheduled floors").
    "shadow_policy": Field(
        "choice",
        None,
        lambda x: x is None or x in POLICIES,
        " or ".join(map(repr, POLICIES)) + ", or null (unset)",
        nullable=True,
    ),
    "scheduled_floors": Field(
        "floors",
        [],
        lambda x: True,
        f"a list of up to {floors.MAX_FLOORS} windows: start (HH:MM UTC), duration_minutes, "
        "min_pool_size, days (optional)",
    ),
}

# The seed's manager-app posted its form with these names.
ALIASES = {"ratio_expand_pool": "expand_ratio", "ratio_shrink_pool": "shrink_ratio"}


def default_config() -> dict[str, Any]:
    return {name: copy.deepcopy(field.default) for name, field in FIELDS.items()}


class _Invalid(Exception):
    def __init__(self, message: str, items: list[str] | None = None) -> None:
        super().__init__(message)
        self.items = items  # problems of the value's parts, each reported on its own


def _coerce(field: Field, value: Any, from_form: bool) -> Any:
    """Turn one received value into the field's type, or raise :class:`_Invalid`."""
    if field.nullable and (value is None or (from_form and isinstance(value, str) and not value.strip())):
        return None
    if field.kind == "floors":
        return _coerce_floors(value, from_form)
    if field.kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip(TEXT_SPACE).lower() in ("true", "false"):
            return value.strip(TEXT_SPACE).lower() == "true"
        raise _Invalid("must be a boolean (true or false)")
    if field.kind == "choice":
        if isinstance(value, str) and field.rule(value):
            return value
        raise _Invalid(f"must be {field.rule_text}")
    wanted = "an integer" if field.kind == "integer" else "a number"
    if from_form and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip(TEXT_SPACE)):
        value = float(value.strip(TEXT_SPACE))  # form text, read as a JSON reader reads a number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"must be {wanted}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid("must be a finite number")
    if field.kind == "integer":
        # JSON has one kind of number, and JSON Schema's integer is any whole one: 2.0 is 2.
        if isinstance(value, float) and not value.is_integer():
            raise _Invalid("must be an integer")
        return int(value)
    try:
        return float(value)
    except OverflowError:  # a JSON integer beyond any double
        raise _Invalid("must be a finite number") from None


def _coerce_floors(value: Any, from_form: bool) -> list[dict[str, Any]]:
    """A form carries the list as JSON text (empty: no windows); JSON bodies send the list."""
    if from_form and isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise _Invalid("must be a JSON list of windows") from None
    try:
        return floors.parse_floors(value, max_size=MAX_NODES)
    except floors.FloorsError as exc:
        raise _Invalid(str(exc), exc.problems) from None


def parse_patch(
    raw: Mapping[str, Any],
    *,
    from_form: bool = False,
    fields: Mapping[str, Field] = FIELDS,
    aliases: Mapping[str, str] = ALIASES,
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Validate the fields of a POST, one by one, into canonical names and types.

    Form bodies carry only strings, so numbers are parsed from text there; JSON bodies must
    send numbers as numbers. An integer is any whole number (``2``, ``2.0``, ``2e0``), as in JSON
    Schema. Booleans may be the strings "true"/"false" in both.
    """
    problems: list[str] = [f"{name}: required" for name in required if name not in raw]
    patch: dict[str, Any] = {}
    for key, value in raw.items():
        name = aliases.get(key, key)
        field = fields.get(name)
        if field is None:
            problems.append(f"{key}: unknown field")
            continue
        if name in patch:
            problems.append(f"{key}: given twice (as {name} and its alias)")
            continue
        try:
            coerced = _coerce(field, value, from_form)
        except _Invalid as exc:
            if exc.items is not None:
                problems.extend(
                    f"{key}{item}" if item.startswith("[") else f"{key}: {item}, got {_show(value)}"
                    for item in exc.items
                )
            else:
                problems.append(f"{key}: {exc}, got {_show(value)}")
            continue
        if not field.rule(coerced):
            problems.append(f"{key}: must be {field.rule_text}, got {_show(value)}")
            continue
        patch[name] = coerced
    if problems:
        raise ValidationError("; ".join(problems))
    return patch


def check_rules(config: Mapping[str, Any]) -> None:
    """SPEC's rules that tie fields together, checked on the merged config."""
    problems = []
    if not config["min_miss_rate_threshold"] < config["max_miss_rate_threshold"]:
        problems.append(
            "min_miss_rate_threshold must be below max_miss_rate_threshold "
            f"(would be {config['min_miss_rate_threshold']} and {config['max_miss_rate_threshold']})"
        )
    if not config["min_pool_size"] <= config["max_pool_size"]:
        problems.append(
            "min_pool_size must not exceed max_pool_size "
            f"(would be {config['min_pool_size']} and {config['max_pool_size']})"
        )
    if problems:
        raise ValidationError("; ".join(problems))


def normalize(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A full config from what the table holds: defaults fill fields it lacks."""
    config = default_config()
    for name, field in FIELDS.items():
        if name in stored:
            value = stored[name]
            config[name] = float(value) if field.kind == "number" else value
    return config


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ConfigStore(Protocol):
    def load_config(self) -> tuple[dict[str, Any], int]: ...

    def save_config(self, config: dict[str, Any], expected_version: int, record: Record) -> None: ...


def update_config(
    store: ConfigStore,
    patch: Mapping[str, Any],
    *,
    source_ip: str,
    now: datetime,
) -> dict[str, Any]:
    """Merge ``patch`` into the stored config atomically and answer the config after it.

    Each attempt reads the config and its version, merges, checks SPEC's rules on the result
    and writes only if nobody wrote in between; a lost race re-reads and merges again, so
    concurrent writers never lose an update. Writes nothing when nothing changes.
    """

    def attempt() -> dict[str, Any]:
        current, version = store.load_config()
        merged = {**current, **patch}
        check_rules(merged)
        changed = {name: merged[name] for name in patch if merged[name] != current[name]}
        if changed:
            previous = {name: current[name] for name in changed}
            record = config_record(now, changed=changed, previous=previous, source_ip=source_ip)
            store.save_config(merged, version, record)
        return merged

    return retry_on_conflict(attempt, busy="the config kept changing under this update")
