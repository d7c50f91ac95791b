"""Write docs/api.md from openapi.yaml, so the prose description of the API is the checked one.

    .venv/bin/python docs/api_doc.py          # rewrite docs/api.md
    .venv/bin/python docs/api_doc.py --check  # exit 1 when docs/api.md is not what openapi.yaml gives

tests/test_openapi.py holds openapi.yaml to the app; tests/test_api_doc.py holds docs/api.md to
openapi.yaml. Every route, method, parameter, body field, response and schema is rendered from
the YAML: nothing here describes the API by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi.yaml"
DOC = ROOT / "docs" / "api.md"
METHODS = ("get", "post", "put", "patch", "delete")
CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("maxProperties", "at most {} fields"),
    ("pattern", "matches `{}`"),
    ("format", "format {}"),
)


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _resolve(api: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = api
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type(api: dict[str, Any], schema: dict[str, Any]) -> str:
    """A short name for a schema: a link to a component, or its type with what narrows it."""
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/components/schemas/") and ref.count("/") == 3:
            name = _ref_name(ref)
            return f"[{name}](#{name.lower()})"
        return _type(api, _resolve(api, schema))
    for combinator, joiner in (("anyOf", " or "), ("oneOf", " or "), ("allOf", " and ")):
        if combinator in schema and "type" not in schema:
            return joiner.join(_type(api, part) for part in schema[combinator])
    if "const" in schema:
        return f"`{schema['const']!r}`".replace("'", '"')
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and "items" in schema:
        return f"array of {_type(api, schema['items'])}"
    return str(kind)


def _constraints(schema: dict[str, Any]) -> str:
    parts = [template.format(schema[key]) for key, template in CONSTRAINTS if key in schema]
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    if schema.get("uniqueItems"):
        parts.append("unique")
    if "anyOf" in schema and "type" in schema:
        parts.append("; ".join(_constraints(part) for part in schema["anyOf"]))
    return ", ".join(part for part in parts if part)


def _fields(api: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    schema = _resolve(api, schema)
    properties = schema.get("properties") or {}
    if not properties:
        return []
    required = set(schema.get("required") or [])
    lines = ["| field | type | required | constraints | notes |", "| --- | --- | --- | --- | --- |"]
    for name, field in properties.items():
        resolved = _resolve(api, field) if "$ref" in field and field["$ref"].count("/") > 3 else field
        notes = resolved.get("description", "")
        lines.append(
            f"| `{name}` | {_cell(_type(api, resolved))} | {'yes' if name in required else 'no'} "
            f"| {_cell(_constraints(resolved))} | {_cell(notes)} |"
        )
    if schema.get("additionalProperties") is False:
        lines.append("")
        lines.append("No other fields.")
    return lines


def _auth(api: dict[str, Any], operation: dict[str, Any]) -> str:
    security = operation.get("security", api.get("security", []))
    if not security:
        return "public"
    names = [name for requirement in security for name in requirement]
    return " or ".join(
        {"bearerAuth": "bearer token", "cookieAuth": "the dashboard's cookie"}.get(n, n) for n in names
    )


def _operation(api: dict[str, Any], path: str, method: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", operation.get("summary", "").strip(), ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    lines.append(f"- Authentication: {_auth(api, operation)}.")
    if operation.get("x-test-endpoint"):
        lines.append("- Test endpoint: 404 unless `ENABLE_TEST_ENDPOINTS=true`.")
    lines.append("")
    parameters = [_resolve(api, parameter) for parameter in operation.get("parameters", [])]
    if parameters:
        lines += [
            "| parameter | in | type | required | constraints | notes |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for parameter in parameters:
            schema = parameter.get("schema", {})
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | {_cell(_type(api, schema))} "
                f"| {'yes' if parameter.get('required') else 'no'} | {_cell(_constraints(schema))} "
                f"| {_cell(parameter.get('description', ''))} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        needed = "required" if body.get("required") else "optional"
        lines.append(f"Request body ({needed}):")
        if body.get("description"):
            lines += ["", body["description"].strip()]
        lines.append("")
        for media, content in body.get("content", {}).items():
            schema = content.get("schema", {})
            lines.append(f"- `{media}`: {_type(api, schema)}")
        lines.append("")
    lines += ["| status | meaning | body |", "| --- | --- | --- |"]
    for status, response in operation.get("responses", {}).items():
        resolved = _resolve(api, response)
        media = resolved.get("content", {})
        shapes = "; ".join(f"`{kind}` {_type(api, item.get('schema', {}))}" for kind, item in media.items())
        headers = ", ".join(f"`{name}` header" for name in resolved.get("headers", {}))
        answer = _cell(", ".join(filter(None, [shapes, headers])))
        lines.append(f"| {status} | {_cell(resolved.get('description', ''))} | {answer} |")
    lines.append("")
    return lines


def render(api: dict[str, Any]) -> str:
    info = api["info"]
    lines = [
        f"# The HTTP API of {info['title']}",
        "",
        "<!-- Generated from openapi.yaml by docs/api_doc.py; edit openapi.yaml, then run it. -->",
        "",
        info.get("summary", ""),
        "",
        info.get("description", "").strip(),
        "",
        "Servers: "
        + "; ".join(f"`{server['url']}` ({server.get('description', '')})" for server in api["servers"]),
        "",
        "## Authentication",
        "",
    ]
    for name, scheme in api["components"]["securitySchemes"].items():
        lines.append(f"- `{name}`: {_cell(scheme.get('description', ''))}")
    lines += ["", "## Routes", ""]
    for path, item in api["paths"].items():
        for method in METHODS:
            if method in item:
                lines += _operation(api, path, method, item[method])
    lines += ["## Schemas", ""]
    for name, schema in api["components"]["schemas"].items():
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [schema["description"].strip(), ""]
        fields = _fields(api, schema)
        if fields:
            lines += fields
        else:
            summary = _type(api, schema)
            extra = _constraints(schema)
            lines.append(f"{summary}{', ' + extra if extra else ''}.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = render(yaml.safe_load(SPEC.read_text()))
    if args.check:
        if DOC.read_text() != text:
            print(f"{DOC.relative_to(ROOT)} is stale: run docs/api_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
