"""``kit.cache``: get, set and delete routed by the kit, for front-end code that wants no more.

One pymemcache ``PooledClient`` per node (thread-safe: a request thread borrows a connection),
made when the node is first used and closed when it leaves the pool. Reads go to the key's owner;
writes and deletes go through ``FrontendKit.will_write``, so that during a warm move they reach the
old owner and the new one and the copier never copies the key afterwards.

A node that cannot be reached is a miss for ``get`` and a ``False`` for ``set``/``delete``
(logged): a cache that is down must not take the front-end down with it.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import MemcacheServerError, MemcacheUnknownError

from frontend_kit.moves import Key, Routing, key_bytes
from frontend_kit.ring import CacheNode

if TYPE_CHECKING:
    from frontend_kit.notifications import FrontendKit

log = logging.getLogger(__name__)

# What a node that is down or out of step raises; a bad key or value (MemcacheClientError) is the
# caller's mistake and is raised as it is.
NODE_ERRORS = (OSError, MemcacheServerError, MemcacheUnknownError)


class KitCache:
    """The pool as one cache: ``get``, ``get_many``, ``set``, ``delete``; values are bytes."""

    def __init__(
        self,
        kit: FrontendKit,
        *,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        max_pool_size: int | None = None,
    ) -> None:
        self._kit = kit
        self._options = {
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "max_pool_size": max_pool_size,
            "default_noreply": False,  # a write is done when it returns: the move's ordering needs it
            "no_delay": True,
        }
        self._clients: dict[CacheNode, PooledClient] = {}
        self._lock = threading.Lock()

    def _client(self, node: CacheNode) -> PooledClient | None:
        if not node.ip:
            return None
        with self._lock:
            client = self._clients.get(node)
            if client is None:
                client = self._clients[node] = PooledClient((node.ip, node.port), **self._options)
            return client

    def prune(self, routing: Routing) -> None:
        """Close the clients of nodes ``routing`` no longer sends anything to."""
        staying = routing.nodes
        with self._lock:
            leaving = [node for node in self._clients if node not in staying]
            closing = [self._clients.pop(node) for node in leaving]
        for client in closing:
            client.close()

    def close(self) -> None:
        with self._lock:
            closing, self._clients = list(self._clients.values()), {}
        for client in closing:
            client.close()

    def get(self, key: Key) -> bytes | None:
        """The value, or None: a miss, no pool yet, or the node could not be reached."""
        raw = key_bytes(key)
        node = self._kit.routing.node_for(raw)
        client = self._client(node) if node is not None else None
        if client is None:
            return None
        try:
            return client.get(raw)
        except NODE_ERRORS as exc:
            log.debug("get from %s failed: %s", node.id, exc)
            return None

    def get_many(self, keys: Iterable[Key]) -> dict[Key, bytes]:
        """The keys found, under the keys as given; one request per node."""
        routing = self._kit.routing
        by_node: dict[CacheNode, dict[bytes, Key]] = defaultdict(dict)
        for key in keys:
            raw = key_bytes(key)
            node = routing.node_for(raw)
            if node is not None:
                by_node[node][raw] = key
        found: dict[Key, bytes] = {}
        for node, wanted in by_node.items():
            client = self._client(node)
            if client is None:
                continue
            try:
                values = client.get_many(list(wanted))
            except NODE_ERRORS as exc:
                log.debug("get_many from %s failed: %s", node.id, exc)
                continue
            found.update((wanted[raw], value) for raw, value in values.items())
        return found

    def set(self, key: Key, value: bytes | str | int, expire: int = 0, flags: int | None = None) -> bool:
        """Store on the key's owner (both owners during a move); True when every one stored it."""
        raw = key_bytes(key)
        routing = self._kit.will_write([raw])
        nodes = routing.nodes_for_write(raw)
        stored = bool(nodes)
        for node in nodes:
            client = self._client(node)
            try:
                done = client is not None and client.set(raw, value, expire=expire, flags=flags)
            except NODE_ERRORS as exc:
                log.debug("set on %s failed: %s", node.id, exc)
                done = False
            stored = stored and bool(done)
        return stored

    def delete(self, key: Key) -> bool:
        """Delete from the key's owner (both owners during a move); False when a node could not be reached."""
        raw = key_bytes(key)
        routing = self._kit.will_write([raw])
        done = True
        for node in routing.nodes_for_write(raw):
            client = self._client(node)
            try:
                if client is not None:
                    client.delete(raw)
            except NODE_ERRORS as exc:
                log.debug("delete on %s failed: %s", node.id, exc)
                done = False
        return done
