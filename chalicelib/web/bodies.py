"""Request bodies: JSON or form-encoded, refused clearly when they are not what SPEC allows."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from chalicelib.domain.errors import ValidationError

MAX_BODY_BYTES = 64 * 1024
FORM = "application/x-www-form-urlencoded"
ACCEPTED_CONTENT_TYPES = ["application/json", FORM]


def _reject_constant(name: str) -> Any:
    raise ValidationError(f"body is not valid JSON: {name} is not a number JSON allows")


def _unique(pairs: list[tuple[str, Any]], complaint: Callable[[str], str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(complaint(key))
        result[key] = value
    return result


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return _unique(pairs, lambda key: f"body is not valid JSON: key {key!r} appears twice")


def media_type(content_type: str | None) -> str:
    return (content_type or "application/json").split(";")[0].strip().lower()


def parse_body(raw: bytes | str, content_type: str | None) -> tuple[list[tuple[str, Any]], bool]:
    """The body's fields as (name, value) pairs, and whether it was a form.

    Pairs rather than a dict so that a form may repeat a key where that means a list; an
    empty body is no fields. JSON must be an object, without NaN/Infinity or repeated keys.
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("body is not UTF-8 text") from exc
    if media_type(content_type) == FORM:
        try:
            return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text.strip())), True
        except ValueError as exc:
            raise ValidationError(f"body is not a valid form: {exc}") from exc
    if not text.strip():
        return [], False
    try:
        parsed = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except ValidationError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ValidationError(f"body must be a JSON object, got {type(parsed).__name__}")
    return list(parsed.items()), False


def single_valued(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Fields that may appear once each (form bodies may repeat a key by mistake)."""
    return _unique(pairs, lambda key: f"{key}: given more than once")


def require_no_fields(pairs: list[tuple[str, Any]]) -> None:
    """For routes that take no input: any field is a mistake worth reporting."""
    if pairs:
        names = ", ".join(sorted({key for key, _ in pairs}))
        raise ValidationError(f"this route takes no fields, got: {names}")
