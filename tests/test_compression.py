"""The dashboard's scripts travel compressed: API Gateway gzips answers of at least the stage's
``minimum_compression_size`` for clients that accept it, and so does the local stack's API
(``local_stack/api.py``), which this test runs in-process on a loopback port."""

from __future__ import annotations

import gzip
import os
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.cli.factory import CLIFactory

from chalicelib.web import pages
from local_stack.api import accepts_gzip, create_server
from tests.conftest import PROJECT_DIR

HOST = "127.0.0.1"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_stage_compresses_answers_of_a_kilobyte_and_more(stage: str) -> None:
    config = CLIFactory(str(PROJECT_DIR), environ=dict(os.environ)).create_config_obj(
        chalice_stage_name=stage
    )
    assert config.minimum_compression_size == 1024


def test_the_assets_are_text_to_api_gateway() -> None:
    """A binary media type would reach API Gateway base64-encoded, and need the client's Accept
    to match it; text is passed through and compressed."""
    from app import app

    for name in pages.ASSET_NAMES:
        found = pages.asset(name)
        assert found is not None and found.content_type.startswith(("text/javascript", "text/css"))
        media = found.content_type.split(";")[0]
        assert media not in app.api.binary_types and "*/*" not in app.api.binary_types


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip, deflate, br, zstd", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("", False),
        (None, False),
        ("br, *;q=0", False),
    ],
)
def test_what_accepts_gzip(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


@pytest.fixture
def local_api(moto: None) -> Iterator[str]:
    """The local stack's API on a free loopback port, for the dev stage; the stage's environment
    variables, which loading the app sets, are taken back afterwards."""
    saved = dict(os.environ)
    server = create_server(HOST, 0, "dev")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server.server_address[1]}"
    finally:
        server.shutdown()
        server.server.server_close()
        thread.join(5)
        os.environ.clear()
        os.environ.update(saved)


def get(url: str, **headers: str) -> Any:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, dict(response.headers), response.read()


def test_the_chart_script_comes_gzipped_to_a_client_that_accepts_it(local_api: str) -> None:
    url = f"{local_api}/assets/{pages.CHART_JS}"
    original = (pages.STATIC_DIR / pages.CHART_JS).read_bytes()
    status, headers, body = get(url, **{"Accept-Encoding": "gzip, deflate, br"})
    assert (status, headers["Content-Encoding"], headers["Vary"]) == (200, "gzip", "Accept-Encoding")
    assert int(headers["Content-Length"]) == len(body) < len(original) // 2
    assert gzip.decompress(body) == original
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    status, headers, body = get(url)  # no Accept-Encoding: as it is
    assert (status, "Content-Encoding" in headers, body) == (200, False, original)


def test_a_small_answer_is_not_compressed(local_api: str) -> None:
    status, headers, body = get(f"{local_api}/api/scaler", **{"Accept-Encoding": "gzip"})
    assert status == 200 and len(body) < 1024 and "Content-Encoding" not in headers
