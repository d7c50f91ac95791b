"""The dashboard at ``GET /`` and its assets, through Chalice's test client.

What a browser does with them is ``tests/test_browser.py``'s part.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from chalice.test import Client

from chalicelib.domain.config import FIELDS
from chalicelib.web import pages
from tests.conftest import AUTH

ASSET_TYPES = {
    pages.CHART_JS: "text/javascript",
    pages.DASHBOARD_JS: "text/javascript",
    pages.DASHBOARD_CSS: "text/css",
}
# Elements that dashboard.js and the browser test rely on.
STABLE_IDS = [
    "token-form",
    "token",
    "dashboard",
    "config-form",
    "config-message",
    "pool-table",
    "pool-summary",
    "miss-rate-chart",
    "pool-size-chart",
    "history-minutes",
    "decisions",
    "refresh-status",
    "refresh-pause",
    "floor-add",
    "floor-row",
]
CHART_JS_SHA256 = "48444a82d4edcb5bec0f1965faacdde18d9c17db3063d042abada2f705c9f54a"


def page_text(client: Client) -> str:
    response = client.http.get("/")
    assert response.status_code == 200
    return response.body.decode()


def referenced_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href|action)="([^"]*)"', html)


def test_the_dashboard_is_public_html(client: Client) -> None:
    response = client.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    html = response.body.decode()
    for ident in STABLE_IDS:
        assert f'id="{ident}"' in html, ident


def test_the_dashboard_uses_only_relative_urls(client: Client) -> None:
    html = page_text(client)
    assert 'src="/' not in html and 'href="/' not in html
    assert "http" not in html.lower()
    urls = referenced_urls(html)
    assert urls, "the page should reference its assets"
    for url in urls:
        assert not url.startswith(("/", "//")) and "://" not in url, url
    # The script's own requests are relative too.
    script = pages.asset(pages.DASHBOARD_JS)
    assert script is not None
    for path in re.findall(r"""['"]((?:/|https?:)?[^'"\s]*api/scaler[^'"\s]*)['"]""", script.body):
        assert path.startswith("api/scaler/"), path


def test_the_dashboard_links_its_assets_with_their_version(client: Client) -> None:
    urls = referenced_urls(page_text(client))
    for name in ASSET_TYPES:
        found = pages.asset(name)
        assert found is not None
        assert f"assets/{name}?v={found.version}" in urls


def test_the_dashboard_has_a_control_for_every_config_field(client: Client) -> None:
    html = page_text(client)
    for name, field in FIELDS.items():
        assert f'id="config-{name}" name="{name}" data-kind="{field.kind}"' in html, name


def test_the_dashboard_allows_only_the_apps_own_scripts(client: Client) -> None:
    policy = client.http.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self' 'sha256-" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy


@pytest.mark.parametrize(("name", "content_type"), ASSET_TYPES.items())
def test_assets_are_public_with_their_content_type(client: Client, name: str, content_type: str) -> None:
    response = client.http.get(f"/assets/{name}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == f"{content_type}; charset=utf-8"
    assert response.body.decode() == (pages.STATIC_DIR / name).read_text(encoding="utf-8")
    # The version query the page adds changes nothing, and neither does a token.
    assert client.http.get(f"/assets/{name}?v=whatever", headers=AUTH).body == response.body


def test_the_vendored_chart_library_is_unchanged_and_keeps_its_licence() -> None:
    data = (pages.STATIC_DIR / pages.CHART_JS).read_bytes()
    assert hashlib.sha256(data).hexdigest() == CHART_JS_SHA256
    header = data[:200].decode()
    assert "Chart.js v4.5.1" in header and "Released under the MIT License" in header


@pytest.mark.parametrize(
    "name",
    [
        "nothing.js",
        "dashboard.js.map",
        "chart-4.5.1.umd.min.js.map",
        "..%2Froutes.py",
        "..%2F..%2Fapp.py",
        "%2E%2E%2Fpages.py",
        "..",
        "pages.py",
        "DASHBOARD.JS",
    ],
)
def test_unknown_or_traversal_asset_names_are_404(client: Client, name: str) -> None:
    response = client.http.get(f"/assets/{name}")
    assert response.status_code == 404
    assert response.json_body["Code"] == "NotFoundError"


@pytest.mark.parametrize("path", ["/assets/../app.py", "/assets/static/dashboard.js", "/assets/"])
def test_paths_beyond_one_asset_name_are_not_served(client: Client, path: str) -> None:
    assert client.http.get(path).status_code in (403, 404)


def test_assets_are_looked_up_by_name_never_joined_to_a_path() -> None:
    for name in ["../routes.py", "../../app.py", "/etc/passwd", "static/dashboard.js", ""]:
        assert pages.asset(name) is None
    assert set(pages.ASSET_NAMES) <= {path.name for path in pages.STATIC_DIR.iterdir()}


def test_the_instances_page_links_back_to_the_dashboard(client: Client) -> None:
    response = client.http.get("/api/scaler/list", headers=AUTH)
    assert response.status_code == 200
    assert '<a href="../../">Dashboard</a>' in response.body.decode()
