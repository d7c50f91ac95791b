"""The manager-app's client (``scaler_client``) against the app served by ``chalice local`` over
loopback, with the AWS emulator in this process; a proxy in between answers chosen requests with
the errors API Gateway and the app give (429, 502, 503, 504, 403) before it forwards the rest."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import urllib3
from moto.server import ThreadedMotoServer

from chalicelib.adapters.dynamodb import StateStore
from scaler_client import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ScalerClient,
    UnauthorizedError,
    UnavailableError,
    UnexpectedAnswerError,
    UnreachableError,
)
from tests.conftest import NODE_AMI, PROJECT_DIR, REGION, TABLE
from tests.test_local_stack import free_ports

pytestmark = pytest.mark.stack

HOST = "127.0.0.1"
TOKEN = "test-token-for-the-client"
START_TIMEOUT_SECONDS = 30.0
CHALICE_BUSY = {
    "Code": "ServiceUnavailableError",
    "Message": "the pool kept changing under this request; try again",
}


@dataclass
class Emulated:
    """``chalice local`` (stage dev) on ``url``, on the emulator at ``moto_url``."""

    url: str
    moto_url: str

    def dynamodb(self) -> Any:
        return boto3.client(
            "dynamodb",
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    http = urllib3.PoolManager(retries=False, timeout=2.0)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"chalice local exited with {process.returncode}:\n{log.read_text()}")
        try:
            if http.request("GET", f"{url}/api/scaler").status == 200:
                return
        except urllib3.exceptions.HTTPError:
            time.sleep(0.05)
    pytest.fail(f"chalice local did not answer within {START_TIMEOUT_SECONDS:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    moto_port, port = free_ports(2)
    with pytest.MonkeyPatch.context() as patch:
        # The emulator runs in this process: no need for its ~100,000 default images.
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        emulator = ThreadedMotoServer(ip_address=HOST, port=moto_port, verbose=False)
        emulator.start()
        stack = Emulated(f"http://{HOST}:{port}", f"http://{HOST}:{moto_port}")
        StateStore(TABLE, "default", client=stack.dynamodb()).create_table()
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AWS_", "FRONTEND_NOTIFY_", "SCALER_API_TOKEN", "NODE_"))
        }
        env.update(
            AWS_ENDPOINT_URL=stack.moto_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=REGION,
            SCALER_API_TOKEN=TOKEN,
            POOL_NAME="default",
            NODE_AMI_ID=NODE_AMI,
            NODE_READINESS="running",
        )
        log = tmp_path_factory.mktemp("chalice-local") / "output.txt"
        chalice = Path(sys.executable).parent / "chalice"
        options = ["--host", HOST, "--port", str(port), "--stage", "dev", "--no-autoreload"]
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(chalice), "local", *options], cwd=PROJECT_DIR, env=env, stdout=output, stderr=output
            )
        try:
            _wait_for(stack.url, process, log)
            # The first launch takes seconds (the emulator's EC2 data, the app's EC2 client): made
            # here, so that no test's timeouts depend on whether it came first (each test
            # empties the emulator).
            warm_up = ScalerClient(stack.url, TOKEN, timeout=START_TIMEOUT_SECONDS)
            warm_up.set_config(auto_mode=False)
            warm_up.resize(1)
            yield stack
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            emulator.stop()


@pytest.fixture
def api(emulated: Emulated) -> Emulated:
    """The emulator emptied, the table made again: each test starts from a new pool."""
    urllib3.request("POST", f"{emulated.moto_url}/moto-api/reset")
    StateStore(TABLE, "default", client=emulated.dynamodb()).create_table()
    return emulated


@dataclass
class Fault:
    status: int
    body: bytes | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # a slow answer: the client's read timeout runs out first


SLOW = 0.3  # seconds; the clients that meet a slow answer time out after 0.05


class FaultyProxy:
    """Forwards to ``upstream``, except that the next requests get ``faults``, one each."""

    def __init__(self, upstream: str) -> None:
        self.faults: list[Fault] = []
        self.seen: list[str] = []  # every request, "METHOD /path"
        self.forwarded: list[str] = []  # those that reached the app
        self._lock = threading.Lock()
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the names http.server calls
                proxy.handle(self, target.hostname or HOST, target.port or 80)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def fail_next(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def handle(self, request: BaseHTTPRequestHandler, host: str, port: int) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        with self._lock:
            self.seen.append(f"{request.command} {request.path}")
            fault = self.faults.pop(0) if self.faults else None
            if fault is None:
                self.forwarded.append(f"{request.command} {request.path}")
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)  # the slow server, not a wait in the test
            payload = json.dumps(fault.body).encode() if isinstance(fault.body, dict) else fault.body
            headers = {"Content-Type": "application/json", **fault.headers}
            self._answer(request, fault.status, headers, payload)
            return
        upstream = http.client.HTTPConnection(host, port, timeout=10)
        try:
            sent = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(request.command, request.path, body=body or None, headers=sent)
            answer = upstream.getresponse()
            kept = {
                k: v for k, v in answer.getheaders() if k.lower() not in ("connection", "transfer-encoding")
            }
            self._answer(request, answer.status, kept, answer.read())
        finally:
            upstream.close()

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        # A client that timed out has gone: nobody is left to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            request.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    request.send_header(name, value)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)


@pytest.fixture
def proxy(api: Emulated) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(api.url)
    faulty.thread.start()
    yield faulty
    faulty.server.shutdown()
    faulty.server.server_close()


def client_of(
    url: str, sleeps: list[float], token: str = TOKEN, retries: int = 4, timeout: float = 10.0
) -> ScalerClient:
    """A client whose waits are recorded, not slept."""
    return ScalerClient(url, token, retries=retries, sleep=sleeps.append, timeout=timeout)


# -- typed calls against the app ---------------------------------------------------------------


def test_typed_calls_against_the_app(api: Emulated) -> None:
    with client_of(api.url + "/", []) as client:  # a trailing slash is fine
        assert client.health().status == "ok"
        config = client.config()
        assert (config.max_miss_rate_threshold, config.auto_mode, config.policy) == (0.8, True, "ratio")
        assert isinstance(config.expand_ratio, float) and isinstance(config.min_pool_size, int)

        changed = client.set_config(auto_mode=False, max_miss_rate_threshold=0.7, ratio_expand_pool=3)
        assert (changed.auto_mode, changed.max_miss_rate_threshold, changed.expand_ratio) == (False, 0.7, 3.0)
        assert client.config() == changed

        decision = client.resize(2)
        assert (decision.previous_size, decision.target_size, decision.action) == (0, 2, "scale_out")
        pool = client.cache_list()
        assert [node.state for node in pool.nodes] == ["launching", "launching"]
        assert pool.cache_pool_ids == tuple(node.id for node in pool.nodes) and pool.sequence == 0
        assert pool.in_service == ()

        swapped = client.set_cache_list(list(reversed(pool.cache_pool_ids)))
        assert swapped.cache_pool_ids == tuple(reversed(pool.cache_pool_ids))

        records = client.history(minutes=30)
        assert [(r.kind, r.details.get("change")) for r in records] == [
            ("config", None),
            ("membership", "resize"),
            ("membership", "replace"),
        ]
        assert records[0].details["changed"] == {
            "auto_mode": False,
            "max_miss_rate_threshold": 0.7,
            "expand_ratio": 3.0,
        }
        assert all(r.decision is None for r in records)


def test_the_apps_errors_are_typed(api: Emulated) -> None:
    with client_of(api.url, []) as client:
        with pytest.raises(BadRequestError) as bad:
            client.set_config(min_pool_size=2.5, colour="blue")
        assert bad.value.status == 400 and bad.value.code == "BadRequestError"
        assert bad.value.message == "min_pool_size: must be an integer, got 2.5; colour: unknown field"

        with pytest.raises(ConflictError, match="auto_mode is on"):
            client.resize(2)
        with pytest.raises(NotFoundError, match="no node of the pool has IP 10.0.0.9"):
            client.confirm_drain("10.0.0.9")
        with pytest.raises(UnauthorizedError) as unauthorized:
            client_of(api.url, [], token="wrong").config()
        assert unauthorized.value.code == "UnauthorizedError"


# -- retries -----------------------------------------------------------------------------------


def test_429_503_504_are_retried_after_what_retry_after_asks(proxy: FaultyProxy) -> None:
    sleeps: list[float] = []
    proxy.fail_next(
        Fault(429, {"message": "Too Many Requests"}, {"Retry-After": "0"}),
        Fault(503, CHALICE_BUSY, {"Retry-After": "3"}),
        Fault(504, {"message": "Endpoint request timed out"}),  # API Gateway's, without Retry-After
        Fault(503, CHALICE_BUSY, {"Retry-After": "3600"}),
    )
    config = client_of(proxy.url, sleeps).config()
    assert config.max_miss_rate_threshold == 0.8
    assert proxy.seen == ["GET /api/scaler/config"] * 5 and len(proxy.forwarded) == 1
    # Retry-After when given (0, then 3 s), else the backoff (0.5 × 2² after three failures);
    # an hour is cut to max_retry_after.
    assert sleeps == [0, 3.0, 2.0, 30.0]


def test_the_writes_are_retried_they_are_idempotent(proxy: FaultyProxy) -> None:
    client = client_of(proxy.url, [])
    proxy.fail_next(Fault(503, CHALICE_BUSY, {"Retry-After": "1"}))
    assert client.set_config(auto_mode=False).auto_mode is False
    proxy.fail_next(
        Fault(504, {"message": "Endpoint request timed out"}),
        Fault(502, {"message": "Internal server error"}),
    )
    assert client.resize(3).target_size == 3
    assert proxy.forwarded == ["POST /api/scaler/config", "POST /api/scaler/resize"]
    assert len(proxy.seen) == 5


def test_set_test_miss_rate_is_retried_only_when_it_cannot_have_run(proxy: FaultyProxy) -> None:
    sleeps: list[float] = []
    client = client_of(proxy.url, sleeps)
    proxy.fail_next(Fault(503, CHALICE_BUSY, {"Retry-After": "1"}))
    with pytest.raises(UnavailableError) as unavailable:
        client.set_test_miss_rate(0.95)
    assert (unavailable.value.status, unavailable.value.retry_after) == (503, 1.0)
    assert (len(proxy.seen), proxy.forwarded, sleeps) == (1, [], [])

    proxy.fail_next(
        Fault(429, {"message": "Too Many Requests"}, {"Retry-After": "0"})
    )  # API Gateway's throttle
    decision = client.set_test_miss_rate(0.95)
    assert (decision.miss_rate, decision.target_size) == (0.95, 1)
    assert proxy.forwarded == ["POST /api/scaler/set_test_miss_rate"]

    # No answer in time: the request may have run. A read is repeated, this call is not.
    impatient = client_of(proxy.url, sleeps, timeout=0.05)
    proxy.fail_next(Fault(200, {}, delay=SLOW))
    with pytest.raises(UnreachableError, match="no answer"):
        impatient.set_test_miss_rate(0.95)
    assert len(proxy.seen) == 4
    proxy.fail_next(Fault(200, {}, delay=SLOW))
    assert len(impatient.cache_list().cache_pool_ids) == 1
    assert len(proxy.seen) == 6


def test_what_is_still_failing_after_the_retries_is_raised_typed(proxy: FaultyProxy) -> None:
    sleeps: list[float] = []
    proxy.fail_next(*[Fault(503, CHALICE_BUSY, {"Retry-After": "2"})] * 3)
    with pytest.raises(UnavailableError) as busy:
        client_of(proxy.url, sleeps, retries=2).cache_list()
    assert (busy.value.code, busy.value.message) == ("ServiceUnavailableError", CHALICE_BUSY["Message"])
    assert (len(proxy.seen), proxy.forwarded, sleeps) == (3, [], [2.0, 2.0])

    proxy.fail_next(
        *[Fault(502, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})] * 2
    )
    with pytest.raises(UnavailableError) as gateway:
        client_of(proxy.url, [], retries=1).history()
    assert (gateway.value.status, gateway.value.code) == (502, None)
    assert gateway.value.message == "<html><body>502 Bad Gateway</body></html>"


def test_api_gateways_own_bodies_are_typed_errors(proxy: FaultyProxy) -> None:
    sleeps: list[float] = []
    proxy.fail_next(Fault(403, {"message": "Forbidden"}, {"x-amzn-ErrorType": "ForbiddenException"}))
    with pytest.raises(ForbiddenError) as forbidden:
        client_of(proxy.url, sleeps).config()
    assert (forbidden.value.status, forbidden.value.code, forbidden.value.message) == (
        403,
        "ForbiddenException",
        "Forbidden",
    )
    assert (len(proxy.seen), sleeps) == (1, []), "a 403 is not retried"

    proxy.fail_next(Fault(200, b"<html>a captive portal</html>", {"Content-Type": "text/html"}))
    with pytest.raises(UnexpectedAnswerError, match="not JSON"):
        client_of(proxy.url, sleeps).config()


def test_no_answer_at_all_is_unreachable_after_the_retries() -> None:
    (port,) = free_ports(1)
    sleeps: list[float] = []
    with pytest.raises(UnreachableError, match="no answer"):
        ScalerClient(
            f"http://{HOST}:{port}", TOKEN, retries=2, backoff_factor=0.25, sleep=sleeps.append
        ).config()
    assert sleeps == [0, 0.5]
