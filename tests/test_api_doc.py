"""docs/api.md is openapi.yaml rendered: the prose of the API cannot drift from the checked description."""

from __future__ import annotations

import runpy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
api_doc = runpy.run_path(str(ROOT / "docs" / "api_doc.py"), run_name="api_doc")


def test_docs_api_md_is_what_openapi_yaml_renders_to() -> None:
    rendered = api_doc["render"](yaml.safe_load((ROOT / "openapi.yaml").read_text()))
    assert (ROOT / "docs" / "api.md").read_text() == rendered, "stale: run .venv/bin/python docs/api_doc.py"


def test_every_route_and_every_schema_of_openapi_yaml_has_a_section() -> None:
    api = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    text = api_doc["render"](api)
    for path, item in api["paths"].items():
        for method in item:
            if method in api_doc["METHODS"]:
                assert f"### `{method.upper()} {path}`" in text
    for name in api["components"]["schemas"]:
        assert f"\n### {name}\n" in text


def test_a_field_added_to_openapi_yaml_shows_up_with_its_constraints() -> None:
    api = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    api["components"]["schemas"]["Config"]["properties"]["shadow_probe"] = {
        "type": "integer",
        "minimum": 2,
        "description": "a probe",
    }
    assert "| `shadow_probe` | integer | no | ≥ 2 | a probe |" in api_doc["render"](api)
