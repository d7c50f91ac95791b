"""Where notifications may go: https in prod, never link-local or metadata addresses, no redirects."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.adapters import observability
from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.frontend import Notifier, notifier_for, notify_url_problem
from chalicelib.domain.settings import Settings
from tests.conftest import PROJECT_DIR
from tests.frontend import FakeFrontend
from tests.test_tick import tick

NOTICE = {"sequence": 7, "change": "increase", "mode": "automatic"}
PROD_ENV = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())["stages"]["prod"][
    "environment_variables"
]


@pytest.mark.parametrize(
    "url",
    [
        "https://frontend.example.com/scaler",
        "https://10.0.3.7:8443/notify",
        "https://[2001:db8::7]/notify",
        "https://ip-10-0-3-7.ec2.internal/notify",  # a private DNS name is fine: not the metadata service
    ],
)
def test_https_front_ends_are_fine_in_prod(url: str) -> None:
    assert notify_url_problem(url, "prod") is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://frontend.example.com/scaler", "https in prod"),
        ("https://localhost/notify", "this machine"),
        ("https://LOCALHOST./notify", "this machine"),
        ("https://api.localhost/notify", "this machine"),
        ("https://127.0.0.1:9001/2018-06-01/runtime", "this machine"),  # Lambda's runtime API
        ("https://[::1]/notify", "this machine"),
        ("https://0.0.0.0/notify", "this machine"),
        ("https://2130706433/notify", "this machine"),  # 127.0.0.1 as one number
        ("https://[::ffff:127.0.0.1]/notify", "this machine"),  # IPv4-mapped loopback
        ("https://[::ffff:7f00:1]/notify", "this machine"),
        ("https://[::ffff:0.0.0.0]/notify", "this machine"),
    ],
)
def test_prod_refuses_plain_http_and_this_machine(url: str, why: str) -> None:
    assert why in (notify_url_problem(url, "prod") or "")
    assert notify_url_problem(url, "dev") is None, "the local stack's front-end listens on loopback over http"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://169.254.170.2/v2/credentials",  # ECS task credentials
        "http://169.254.1.1:8080/",
        "http://[fe80::1]/",
        "http://[fe80::1%25eth0]/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",  # 169.254.169.254 as one number
        "http://0xa9fea9fe/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0251.0376.0251.0376/",  # octal
        "http://169.254.43518/",
        "http://instance-data/latest/meta-data/",
        "http://instance-data.ec2.internal/latest/meta-data/",
    ],
)
@pytest.mark.parametrize("stage", ["dev", "prod", None])
def test_link_local_and_metadata_addresses_are_refused_in_every_stage(url: str, stage: str | None) -> None:
    assert notify_url_problem(url, stage) is not None


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://frontend.example.com/",
        "https://",
        "frontend.example.com/notify",
        "http://x:port/",
    ],
)
def test_only_http_urls_with_a_host(url: str) -> None:
    assert notify_url_problem(url, "dev") is not None


def test_the_stage_comes_from_the_environment() -> None:
    assert Settings.from_env({"STAGE": " Prod "}).stage == "prod"
    assert Settings.from_env({}).stage is None


# -- a refused URL: the notifier sends nothing, says why, and the tick goes on ---------------------


def test_a_refused_url_gives_a_notifier_that_sends_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    observability.metrics.clear_metrics()
    settings = Settings(frontend_notify_url="http://169.254.169.254/", stage="dev")
    notifier = notifier_for(settings)
    assert notifier is not None and notifier.refusal is not None
    posted: list[str] = []
    notifier._post = lambda url, *_: posted.append(url) or 200  # type: ignore[assignment]
    assert notifier.deliver(NOTICE) is False
    assert posted == []
    assert observability.metrics.metric_set["NotificationFailures"]["Value"] == [1.0]
    observability.metrics.clear_metrics()
    error, warning = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert error["level"] == "ERROR" and "refused" in error["message"] and "link-local" in error["problem"]
    assert warning["level"] == "WARNING" and warning["sequence"] == 7 and "link-local" in warning["last"]


@pytest.fixture
def frontend(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFrontend]:
    with FakeFrontend() as fake:
        monkeypatch.setenv("FRONTEND_NOTIFY_URL", fake.url)  # http on loopback: fine in dev only
        monkeypatch.setenv("FRONTEND_NOTIFY_TIMEOUT_SECONDS", "0.5")
        monkeypatch.setenv("NODE_READINESS", "running")
        yield fake


def test_prod_refuses_to_send_over_http_and_keeps_the_notification_queued(
    prod_client: Client, frontend: FakeFrontend, capsys: pytest.CaptureFixture[str]
) -> None:
    prod = StateStore(PROD_ENV["TABLE_NAME"], "default")
    prod.create_table()
    tick(prod_client, 0)  # launches a node
    decision = tick(prod_client, 1)  # in service: its increase is queued, and not sent to http://
    assert decision["action"] == "hold"
    assert frontend.received == []
    (queued,) = prod.load_pool().outbox
    assert queued["change"] == "increase"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"level"' in line]
    assert any(line["level"] == "ERROR" and line.get("problem") == "must be https in prod" for line in lines)


def test_the_same_url_is_fine_in_dev(client: Client, frontend: FakeFrontend) -> None:
    tick(client, 0)
    tick(client, 1)
    assert [notice["change"] for notice in frontend.notices] == ["increase"]


# -- no redirects: a 3xx is a failed delivery, and nothing follows it ------------------------------


class Redirector:
    """Answers every POST with a redirect to ``/landed``, and records what it was asked for."""

    def __init__(self, status: int) -> None:
        self.requests: list[tuple[str, str]] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                recorded.append((self.command, self.path))
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(status if self.path != "/landed" else 200)
                self.send_header("Location", "/landed")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer  # http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_delivery_and_is_not_followed(status: int) -> None:
    redirector = Redirector(status)
    try:
        notifier = Notifier(redirector.url, timeout=1.0, attempts=1)
        assert notifier.deliver(NOTICE) is False
    finally:
        redirector.close()
        observability.metrics.clear_metrics()
    assert redirector.requests == [("POST", "/notify")]


# -- which answers are worth another attempt -------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "attempts"),
    [(400, 1), (401, 1), (403, 1), (404, 1), (410, 1), (422, 1), (408, 3), (429, 3), (500, 3), (503, 3)],
)
def test_only_timeouts_throttling_and_server_errors_are_retried_at_once(answer: int, attempts: int) -> None:
    posted: list[int] = []

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        posted.append(answer)
        return answer

    try:
        notifier = Notifier("https://frontend.example/notify", post=post, sleep=lambda _: None)
        assert notifier.deliver(NOTICE) is False
    finally:
        observability.metrics.clear_metrics()
    assert len(posted) == attempts


def test_no_answer_at_all_is_retried() -> None:
    tried: list[float] = []

    def refused(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        tried.append(timeout)
        raise ConnectionRefusedError("refused")

    try:
        notifier = Notifier("https://frontend.example/notify", post=refused, sleep=lambda _: None)
        assert notifier.deliver(NOTICE) is False
    finally:
        observability.metrics.clear_metrics()
    assert len(tried) == 3
