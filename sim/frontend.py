"""The simulated front-end: it hears the scaler's notifications and routes keys by them.

It answers SPEC's ``increase``/``decrease`` POSTs on loopback, keeps the newest routing list
(``cache_pool_ids`` of the highest ``sequence``; a late or replayed notification is answered 200
and otherwise ignored), and confirms each draining node back to the scaler on the next minute,
as a real front-end would once it had moved that node's keys away.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Self

from frontend_kit.notifications import signature

HOST = "127.0.0.1"
NOTIFY_PATH = "/scaler-notifications"
SIGNATURE_HEADER = "X-Scaler-Signature"
MAX_BODY_BYTES = 64 * 1024
HTTP_TIMEOUT_SECONDS = 3.0
# A confirmation answered 404 (unknown IP) or 409 (not draining) means the node is already gone
# or was taken back: either way there is nothing left to confirm.
SETTLED_STATUSES = frozenset({404, 409})

log = logging.getLogger(__name__)
# The API is the local stack's, on loopback: an http_proxy in the environment must not capture it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(
    method: str, url: str, token: str | None, body: Any = None, timeout: float = HTTP_TIMEOUT_SECONDS
) -> tuple[int, Any]:
    """(status, parsed JSON or None); raises OSError when there is no answer at all."""
    headers = {"Accept": "application/json"}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = int(exc.code), exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


class NotifyEndpoint:
    """An HTTP server on loopback, in a thread, at ``url``: where the scaler's notices arrive.

    Subclasses say what serves (``_make_server``); ``start`` and ``stop`` are safe to repeat."""

    _port = 0
    _server: HTTPServer | None = None
    _thread: threading.Thread | None = None
    _thread_name = "sim-frontend"

    def _make_server(self) -> HTTPServer:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The URL to give the scaler as ``FRONTEND_NOTIFY_URL`` (port 0 is known after start)."""
        port = self._server.server_address[1] if self._server is not None else self._port
        if not port:
            raise RuntimeError("the front-end's port is chosen at start(); call start() first")
        return f"http://{HOST}:{port}{NOTIFY_PATH}"

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = self._make_server()
        # Daemon only so that a caller that dies without stop() does not hang the interpreter.
        serve = self._server.serve_forever
        self._thread = threading.Thread(
            target=serve, kwargs={"poll_interval": 0.1}, name=self._thread_name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (safe to call twice)."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Frontend(NotifyEndpoint):
    """Notifications in on ``url``; ``routing_ids()`` and ``confirm_drains()`` out to the API."""

    def __init__(
        self,
        api_url: str,
        token: str | None,
        *,
        port: int = 0,
        secret: str | None = None,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> None:
        self.api_url, self.token, self.secret, self.timeout = api_url.rstrip("/"), token, secret, timeout
        self._port = port
        self._lock = threading.Lock()
        self._sequence: int | None = None
        self._routing: list[str] | None = None
        self._fallback: list[str] = []
        self._to_confirm: dict[str, str] = {}  # draining node id → its IP, in the order announced

    # -- the notification endpoint ---------------------------------------------------------

    def _make_server(self) -> HTTPServer:
        return HTTPServer((HOST, self._port), self._handler_class())

    def receive(self, body: bytes, signature_header: str | None) -> int:
        """Take one notification; the HTTP status to answer (what the handler calls)."""
        expected = signature(self.secret, body).encode() if self.secret else b""
        # Bytes, not str: compare_digest refuses non-ASCII text, and a header may carry any.
        if self.secret and not hmac.compare_digest(expected, (signature_header or "").encode()):
            log.warning("notification with a missing or wrong %s refused", SIGNATURE_HEADER)
            return 401
        try:
            notice = json.loads(body)
            sequence = int(notice["sequence"])
            routing = [str(node_id) for node_id in notice["cache_pool_ids"]]
            removing = {str(node["id"]): str(node["ip"]) for node in notice.get("removing") or []}
            added = {str(node["id"]) for node in notice.get("added") or []}
        except (ValueError, TypeError, KeyError, AttributeError):
            return 400
        with self._lock:
            if self._sequence is not None and sequence <= self._sequence:
                return 200  # late or replayed: already applied, or superseded
            self._sequence, self._routing = sequence, routing
            self._to_confirm.update(removing)
            # A node taken back from draining serves again: confirming it would lose it.
            for node_id in added | set(routing):
                self._to_confirm.pop(node_id, None)
        return 200

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        frontend = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a client that stalls mid-request cannot hold the server (or stop()) long

            def do_POST(self) -> None:  # the name http.server calls
                text = self.headers.get("Content-Length") or "0"
                length = int(text) if text.isdigit() else -1
                if length < 0:
                    status = 400
                elif length > MAX_BODY_BYTES:
                    status = 413
                else:
                    status = frontend.receive(self.rfile.read(length), self.headers.get(SIGNATURE_HEADER))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per notification would drown the local stack's own output

        return Handler

    # -- what the front-end does with them -------------------------------------------------

    @property
    def sequence(self) -> int | None:
        """The newest notification's sequence, None before the first."""
        with self._lock:
            return self._sequence

    @property
    def to_confirm(self) -> dict[str, str]:
        """Draining nodes not confirmed yet: id → IP."""
        with self._lock:
            return dict(self._to_confirm)

    def routing_ids(self) -> list[str]:
        """The node list keys are spread over: the newest notification's, else the API's.

        Before any notification (or with none configured) the scaler's ``cache_list`` is asked;
        when it does not answer, the last list it gave stands.
        """
        with self._lock:
            if self._routing is not None:
                return list(self._routing)
        try:
            status, body = _request(
                "GET", f"{self.api_url}/api/scaler/cache_list", self.token, timeout=self.timeout
            )
        except OSError as exc:
            log.warning("cache_list unreachable (%s); routing by the last list", exc)
            return list(self._fallback)
        if status == 200 and isinstance(body, dict) and isinstance(body.get("cache_pool_ids"), list):
            self._fallback = [str(node_id) for node_id in body["cache_pool_ids"]]
        else:
            log.warning("cache_list answered %s; routing by the last list", status)
        return list(self._fallback)

    def confirm_drains(self) -> list[str]:
        """Confirm each draining node (``POST /api/poolsize/change``); the ids now settled.

        A node stays to confirm when the API does not answer or answers anything but 2xx, 404
        or 409, so the next minute tries again.
        """
        settled = []
        for node_id, ip in self.to_confirm.items():
            try:
                status, _ = _request(
                    "POST", f"{self.api_url}/api/poolsize/change", self.token, {"cache_ip": ip}, self.timeout
                )
            except OSError as exc:
                log.warning("confirming %s (%s) failed: %s", node_id, ip, exc)
                continue
            if 200 <= status < 300 or status in SETTLED_STATUSES:
                settled.append(node_id)
            else:
                log.warning("confirming %s (%s) answered %s", node_id, ip, status)
        with self._lock:
            for node_id in settled:
                self._to_confirm.pop(node_id, None)
        return settled
