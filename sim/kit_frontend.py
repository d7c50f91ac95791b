"""The real tier's front-end: ``frontend_kit`` itself, between the scaler and real memcached.

The kit's WSGI app answers the scaler's notices on loopback; ``apply`` runs the kit's worker
once (the local stack calls it at each simulated minute, after the tier has started the new
instances' memcached and before the minute's traffic), so a scale-out's keys are copied to the
new node before the ring routes to it, and a drain's keys are copied off the draining node
before the kit confirms it. Nodes are announced by their EC2 IPs, which nothing listens on
here: ``address`` says where each node's memcached really is (a loopback port of the tier).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from frontend_kit import CacheNode, FrontendKit, MoveReport, ScalerApi, WarmMover, wsgi_app

HOST = "127.0.0.1"
NOTIFY_PATH = "/scaler-notifications"
HTTP_TIMEOUT_SECONDS = 3.0

log = logging.getLogger(__name__)

Address = Callable[[CacheNode], "tuple[str, int] | None"]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per notice would drown the local stack's own output


class KitRouter:
    """``sim.hashring.Router`` over the kit's current ring: key → the id of the node it reads from."""

    def __init__(self, kit: FrontendKit) -> None:
        routing = kit.routing
        self._ring = routing.ring
        self.node_ids = tuple(node.id for node in routing.ring.nodes)

    def node_for(self, key: str | int) -> str | None:
        node = self._ring.node_for(str(key))
        return None if node is None else node.id


class KitFrontend:
    """Notices in on ``url``; ``apply()`` moves keys and confirms drains; ``router()`` routes."""

    def __init__(
        self,
        api_url: str,
        token: str | None,
        address: Address,
        *,
        port: int = 0,
        secret: str | None = None,
        mover: WarmMover | None = None,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> None:
        self.api = ScalerApi(api_url, token, timeout=timeout)
        self.kit = FrontendKit(
            self.api.fetch_pool,
            secret=secret,
            mover=mover if mover is not None else WarmMover(address=address),
            confirm_drain=self.api.confirm_drain,
        )
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._last_told: MoveReport | None = None

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
        self._server = make_server(HOST, self._port, wsgi_app(self.kit), handler_class=_QuietHandler)
        self._server.timeout = 5
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="kit-frontend", daemon=True
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

    def apply(self) -> list[MoveReport]:
        """Apply the queued notices (moving keys, confirming drains); the moves made now.

        An unreachable API is logged and left for the next minute, as the kit's own worker does."""
        try:
            self.kit.apply_pending()
        except OSError as exc:
            log.warning("the scaler's API did not answer (%s): the pool is reloaded next minute", exc)
        # The kit keeps its last few reports: the new ones are those after the last one told.
        moves = self.kit.last_moves
        told = next((at for at in range(len(moves) - 1, -1, -1) if moves[at] is self._last_told), -1)
        fresh = moves[told + 1 :]
        if fresh:
            self._last_told = fresh[-1]
        return fresh

    def router(self) -> KitRouter:
        return KitRouter(self.kit)
