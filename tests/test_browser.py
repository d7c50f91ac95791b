"""The dashboard in a real browser: Playwright drives Debian's Chromium against ``python -m local_stack``.

The browser sees the app under a stage prefix, as API Gateway serves it (``/api/…``): every
request is routed through :func:`serve_under_stage`, which strips the prefix before it reaches
``chalice local``, so a URL with a leading slash would miss the stage and be caught. Ticks are
driven from here with ``python -m chalicelib.cli tick --at …`` on one simulated clock, and the
nodes' CloudWatch metrics are published here too: the stack's scheduler and simulated cache tier
are off (``TICK_SECONDS=0``, ``SIMULATE=0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest
import requests

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing (pip install playwright==1.65.2)"
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS = PROJECT_DIR / "artifacts"
HOST = "127.0.0.1"
STAGE = "api"  # .chalice/config.json's api_gateway_stage
TOKEN = "browser-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE_AMI = "ami-12c6146b"  # one of the images moto knows
REGION = "us-east-1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_LINE = "Ctrl-C stops the stack."  # the stack's last start-up line
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
COMMAND_TIMEOUT_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 5.0
WAIT_MS = 15_000  # every browser wait; the page refreshes every 5 s
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # the simulated clock's first tick
CLOCK_START = datetime(2030, 1, 1, tzinfo=UTC)  # the page's own clock, once it is installed
REFRESH_MS, HIDDEN_REFRESH_MS = 5_000, 30_000  # dashboard.js: while visible, while hidden


# -- the local stack ---------------------------------------------------------------------


@dataclass
class Stack:
    process: subprocess.Popen[str]
    port: int
    moto_port: int
    lines: list[str]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def aws_env(self) -> dict[str, str]:
        """What a process needs to act on the stack's AWS emulator, as the stack itself does."""
        return {
            "AWS_ENDPOINT_URL": f"http://{HOST}:{self.moto_port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "NODE_AMI_ID": NODE_AMI,
        }


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra, "PYTHONUNBUFFERED": "1"}
    env.pop("TABLE_NAME", None)  # the dev stage's table, as the stack and the CLI pick it
    return env


@pytest.fixture
def stack() -> Iterator[Stack]:
    port, moto_port = free_ports(2)
    lines: list[str] = []
    env = {"PORT": str(port), "MOTO_PORT": str(moto_port), "SCALER_API_TOKEN": TOKEN, "NODE_AMI_ID": NODE_AMI}
    # This test is the clock and the cache tier: no scheduler, no simulation.
    env.update({"TICK_SECONDS": "0", "SIMULATE": "0"})
    process = subprocess.Popen(
        [sys.executable, "-m", "local_stack"],
        cwd=PROJECT_DIR,
        env={key: value for key, value in child_env(env).items() if key != "AWS_ENDPOINT_URL"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,  # the API child shares it: one killpg stops both
    )
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.strip() == READY_LINE:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not ready.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local stack did not start:\n{''.join(lines)}")
        yield Stack(process, port, moto_port, lines)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_SECONDS)
        reader.join(STOP_TIMEOUT_SECONDS)
        if process.stdout is not None:
            process.stdout.close()


def tick(stack: Stack, minute: int) -> dict[str, Any]:
    """One tick at ``T0 + minute`` through the operators' CLI; its decision."""
    at = (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
    done = subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", "tick", "--at", at],
        cwd=PROJECT_DIR,
        env=child_env(stack.aws_env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def api(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = requests.request(
        method, f"{stack.url}/{path}", json=body, headers=AUTH, timeout=HTTP_TIMEOUT_SECONDS
    )
    assert response.status_code == 200, response.text
    return response.json()


def publish(stack: Stack, minute: int, miss_rate: float, gets: int = 1000) -> None:
    """What every listed node publishes for the minute before the tick at ``T0 + minute``: a
    launching node is in service once it has published (``NODE_READINESS=metrics``)."""
    cloudwatch = boto3.client(
        "cloudwatch", region_name=REGION, endpoint_url=stack.aws_env["AWS_ENDPOINT_URL"]
    )
    stamp = T0 + timedelta(minutes=minute, seconds=-30)
    hits = round(gets * (1 - miss_rate))
    for node in api(stack, "GET", "api/scaler/cache_list")["cache_pool_ids"]:
        cloudwatch.put_metric_data(
            Namespace="Memcache",
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "NodeId", "Value": node}],
                    "Timestamp": stamp,
                    "Value": value,
                    "Unit": "Count",
                }
                for name, value in (("GetRequests", gets), ("Hits", hits))
            ],
        )


# -- the browser ---------------------------------------------------------------------------


def serve_under_stage(page: Page, stack: Stack, strays: list[str]) -> None:
    """Answer ``/api/<path>`` from the stack's ``/<path>``, as API Gateway's stage does; anything
    outside the stage is recorded in ``strays`` and refused, as API Gateway would."""
    prefix = f"/{STAGE}"

    def handle(route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.netloc == f"{HOST}:{stack.port}" and (url.path == prefix or url.path.startswith(prefix + "/")):
            inner = url.path[len(prefix) :] or "/"
            route.fulfill(response=route.fetch(url=urlunsplit(url._replace(path=inner)), max_redirects=0))
        else:
            strays.append(route.request.url)
            route.fulfill(status=403, content_type="application/json", body='{"message":"Forbidden"}')

    page.route("**/*", handle)


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(WAIT_MS)
            yield context.new_page()
        finally:
            browser.close()


def config_field(page: Page, name: str) -> Any:
    return page.locator(f"#config-{name}")


def save_config(page: Page, name: str, value: str) -> None:
    config_field(page, name).fill(value)
    page.locator("#config-save").click()


def test_the_dashboard_in_a_browser(stack: Stack, page: Page) -> None:
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    strays: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    # A refused request (the 400 below) is logged as "Failed to load resource"; anything else
    # (a script error, a Content-Security-Policy refusal) is a failure.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    serve_under_stage(page, stack, strays)
    dashboard = f"{stack.url}/{STAGE}/"
    try:
        # The token, asked for once and kept in a session cookie.
        page.goto(dashboard)
        expect(page.locator("#token-form")).to_be_visible()
        expect(page.locator("#dashboard")).to_be_hidden()
        page.locator("#token").fill(TOKEN)
        page.locator("#token-form button[type=submit]").click()
        expect(page.locator("#dashboard")).to_be_visible()
        expect(config_field(page, "max_miss_rate_threshold")).to_have_value("0.8")
        expect(page.locator("#pool-table tbody")).to_contain_text("The pool has no nodes.")
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "scaler_token"]
        assert (cookie["value"], cookie["path"], cookie["sameSite"]) == (TOKEN, "/", "Strict")
        assert cookie["expires"] == -1, "a session cookie"

        # A threshold saved through the form, then a value the API refuses, with its message.
        save_config(page, "max_miss_rate_threshold", "0.7")
        expect(page.locator("#config-message")).to_contain_text("Saved max_miss_rate_threshold")
        assert api(stack, "GET", "api/scaler/config")["max_miss_rate_threshold"] == 0.7
        save_config(page, "min_miss_rate_threshold", "0.9")
        expect(page.locator("#config-message")).to_contain_text(
            "min_miss_rate_threshold must be below max_miss_rate_threshold"
        )
        expect(page.locator("#config-message")).to_contain_text("400")
        assert api(stack, "GET", "api/scaler/config")["min_miss_rate_threshold"] == 0.2
        page.locator("#config-revert").click()
        expect(config_field(page, "min_miss_rate_threshold")).to_have_value("0.2")
        page.wait_for_function(  # the chart's max line follows the saved config
            "Chart.getChart('miss-rate-chart')?.data.datasets[1]?.data[0]?.y === 0.7", timeout=WAIT_MS
        )

        # Ticks on one simulated clock; the pool table and the charts follow.
        miss_chart, size_chart = page.locator("#miss-rate-chart"), page.locator("#pool-size-chart")
        pool_rows = page.locator("#pool-table tbody tr")
        assert tick(stack, 0)["action"] == "repair"  # min_pool_size 1
        expect(pool_rows).to_have_count(1)
        expect(pool_rows.first).to_contain_text("launching")
        expect(miss_chart).to_have_attribute("data-ticks", "1")
        expect(page.locator("#decisions tbody tr").first).to_contain_text("repair")

        publish(stack, 1, miss_rate=0.5)
        assert tick(stack, 1)["action"] == "hold"
        expect(pool_rows.first).to_contain_text("in_service")
        expect(miss_chart).to_have_attribute("data-ticks", "2")
        expect(page.locator("#miss-rate-summary")).to_contain_text("latest 50.0 %")

        decision = api(stack, "POST", "api/scaler/set_test_miss_rate", {"test_miss_rate": 0.95})
        assert (decision["action"], decision["target_size"]) == ("scale_out", 2), decision
        expect(pool_rows).to_have_count(2)

        publish(stack, 2, miss_rate=0.85)  # above the new max threshold of 0.7
        decision = tick(stack, 2)
        assert (decision["action"], decision["target_size"]) == ("scale_out", 4), decision
        expect(pool_rows).to_have_count(4)
        expect(size_chart).to_have_attribute("data-ticks", "3")
        expect(page.locator("#pool-size-summary")).to_contain_text("latest 2 → 4")

        publish(stack, 3, miss_rate=0.4)
        assert tick(stack, 3)["action"] == "hold"
        expect(page.locator("#pool-table tbody")).not_to_contain_text("launching")
        expect(miss_chart).to_have_attribute("data-ticks", "4")
        expect(page.locator("#decisions tbody tr")).to_have_count(4)
        expect(page.locator("#decisions tbody tr").nth(1)).to_contain_text("scale_out")
        page.wait_for_function(
            "Chart.getChart('pool-size-chart').data.datasets[0].data.map(p => p.y).join() === '1,1,4,4'",
            timeout=WAIT_MS,
        )
        assert "Pool size 4" in page.locator("#pool-summary").inner_text()

        # A scheduled floor and a shadow policy, set in the form; a floor the API refuses first.
        page.locator("#floor-add").click()
        window = page.locator("#config-scheduled_floors tbody tr").first
        window.locator(".floor-start").fill("12:04")
        window.locator(".floor-duration").fill("10")
        window.locator(".floor-size").fill("9")
        window.get_by_label("thu").check()
        config_field(page, "shadow_policy").select_option("predictive")
        page.locator("#config-save").click()
        expect(page.locator("#config-message")).to_contain_text(
            "scheduled_floors[0].min_pool_size: must be an integer 1..8, got 9"
        )
        window.locator(".floor-size").fill("6")
        page.locator("#config-save").click()
        expect(page.locator("#config-message")).to_contain_text("Saved shadow_policy, scheduled_floors")
        saved = api(stack, "GET", "api/scaler/config")
        assert saved["shadow_policy"] == "predictive"
        assert saved["scheduled_floors"] == [
            {"start": "12:04", "duration_minutes": 10, "min_pool_size": 6, "days": ["thu"]}
        ]

        # At its start (T0 is a Thursday) the floor lifts the pool to 6, and the tick says so;
        # the shadow's decision is beside the real one.
        decisions = page.locator("#decisions tbody tr")
        publish(stack, 4, miss_rate=0.4)
        lifted = tick(stack, 4)
        assert (lifted["action"], lifted["target_size"]) == ("repair", 6), lifted
        assert lifted["shadow"]["policy"] == "predictive"
        expect(decisions.first).to_contain_text("scheduled floor 6 (12:04 UTC for 10 min on thu")
        expect(decisions.first.locator("td.shadow")).to_contain_text("predictive: ")
        expect(pool_rows).to_have_count(6)  # the new nodes are launching, with their deadline
        expect(page.locator("#pool-table tbody tr[data-node-id] td.deadline").last).to_have_text(
            "ended unless in service by 12:14 UTC, in 10 min"
        )
        expect(page.locator("#pool-summary")).to_contain_text("scheduled floor 6 until 2026-11-26 12:14 UTC")
        # The minimum each tick decided with, and the shadow's line.
        sizes = "Chart.getChart('pool-size-chart').data.datasets"
        page.wait_for_function(
            f"{sizes}[2].data.at(-1).y === 6 && {sizes}[3].label.startsWith('shadow (predictive)')",
            timeout=WAIT_MS,
        )
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # The HTML list opens with the cookie alone, and links back to the dashboard.
    page.get_by_role("link", name="Instances").click()
    expect(page).to_have_url(f"{stack.url}/{STAGE}/api/scaler/list")
    expect(page.locator("#instances tbody tr")).to_have_count(6)
    page.get_by_role("link", name="Dashboard").click()
    expect(page).to_have_url(dashboard)
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#token-form")).to_be_hidden()

    assert strays == [], "requests outside the stage: a URL with a leading slash"
    assert errors == []

    # API Gateway serves the stage root without its slash too: the page adds it.
    page.goto(f"{stack.url}/{STAGE}")
    expect(page).to_have_url(dashboard)
    expect(page.locator("#pool-table tbody tr")).to_have_count(6)

    # The chart script travels gzipped to a client that accepts it (as API Gateway sends it).
    chart = requests.get(
        f"{stack.url}/assets/chart-4.5.1.umd.min.js",
        headers={"Accept-Encoding": "gzip"},
        stream=True,
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert chart.headers["Content-Encoding"] == "gzip" and chart.raw.read(2) == b"\x1f\x8b"

    check_polling(page)


def set_visibility(page: Page, state: str) -> None:
    """What the browser does when the tab is hidden or shown again."""
    page.evaluate(
        """(state) => {
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state});
            Object.defineProperty(document, 'hidden', {configurable: true, get: () => state === 'hidden'});
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        state,
    )


def check_polling(page: Page) -> None:
    """Every 5 s while the tab is visible, every 30 s while hidden, never while paused, on the
    page's own clock (Playwright's): no real waiting for the timers."""
    expect = sync_api.expect
    status, pause = page.locator("#refresh-status"), page.locator("#refresh-pause")
    page.clock.install(time=CLOCK_START)
    page.reload()
    expect(status).to_have_attribute("data-refreshed", re.compile(r"[1-9]"))
    now_ms = page.evaluate("Date.now()")
    page.clock.pause_at(datetime.fromtimestamp(now_ms / 1000 + 1, UTC))

    def refreshed(count: int) -> None:
        """``count`` refreshes started, and the last of them finished. (Not wait_for_function:
        with the page's clock installed it evaluates strings, which the page's CSP forbids.)"""
        expect(status).to_have_attribute("data-refreshes", str(count))
        expect(status).to_have_attribute("data-refreshed", str(count))

    started = int(status.get_attribute("data-refreshes") or "0")
    refreshed(started)
    page.clock.run_for(REFRESH_MS)
    refreshed(started + 1)
    expect(status).to_have_attribute("data-interval", str(REFRESH_MS))

    set_visibility(page, "hidden")
    expect(status).to_have_attribute("data-interval", str(HIDDEN_REFRESH_MS))
    expect(status).to_contain_text("every 30 s while this tab is hidden")
    page.clock.run_for(HIDDEN_REFRESH_MS - 1000)
    refreshed(started + 1)  # hidden: nothing within 30 s
    page.clock.run_for(1000)
    refreshed(started + 2)
    set_visibility(page, "visible")  # back in view: at once, then every 5 s again
    page.clock.run_for(1)
    refreshed(started + 3)
    expect(status).to_have_attribute("data-interval", str(REFRESH_MS))

    pause.click()
    expect(pause).to_have_attribute("aria-pressed", "true")
    expect(pause).to_have_text("Resume updates")
    expect(status).to_contain_text("updates paused")
    page.clock.run_for(10 * HIDDEN_REFRESH_MS)
    set_visibility(page, "hidden")
    set_visibility(page, "visible")
    page.clock.run_for(HIDDEN_REFRESH_MS)
    refreshed(started + 3)  # paused: nothing, visible or not
    pause.click()
    expect(pause).to_have_attribute("aria-pressed", "false")
    page.clock.run_for(1)
    refreshed(started + 4)
