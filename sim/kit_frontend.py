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
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from frontend_kit import CacheNode, FrontendKit, MoveReport, ScalerApi, WarmMover, wsgi_app
from sim.frontend import HOST, NotifyEndpoint

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


class KitFrontend(NotifyEndpoint):
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
        self._thread_name = "kit-frontend"
        self._last_told: MoveReport | None = None

    def _make_server(self) -> WSGIServer:
        server = make_server(HOST, self._port, wsgi_app(self.kit), handler_class=_QuietHandler)
        server.timeout = 5
        return server

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
