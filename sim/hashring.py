"""How the front-end spreads keys over the cache nodes: the front-end kit's ketama, or naive modulo.

``HashRing`` places keys exactly where ``frontend_kit.ring.Ring`` does (libmemcached's weighted
ketama: 160 MD5 points per server, a key's point the first four bytes of its MD5), with the
kit's own ``key_point`` and ``server_points``, so the simulation and the benchmark move the keys
a real front-end moves when the pool changes. A node id such as ``node-0`` stands where the kit
puts a host with the default port (no IP announced: the kit hashes the id), and an int key
hashes as its decimal text, so 7 and "7" land on the same node. Adding a node to N moves about
1/(N+1) of the keys, all to it.

``ModuloRing`` is the naive alternative (``point % N``), kept to show what consistent hashing
saves: there, changing N moves most keys.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal, Protocol

from frontend_kit.ring import CacheNode, key_point, server_points

Hashing = Literal["consistent", "modulo"]
HASHINGS: tuple[Hashing, ...] = ("consistent", "modulo")


@lru_cache(maxsize=1 << 17)
def _point(key: str | int) -> int:
    # Keys repeat minute after minute, so memoising their points keeps a minute's routing cheap.
    return key_point(str(key))


class Router(Protocol):
    """What a front-end needs from a key-to-node mapping."""

    node_ids: tuple[str, ...]

    def node_for(self, key: str | int) -> str | None: ...


class HashRing:
    """The kit's continuum over ``node_ids``, each id hashed as a host on memcached's default port.

    Only the list's content decides the mapping, but for the rare collision of two servers'
    32-bit points, where, as in the kit, the server listed first wins.
    """

    def __init__(self, node_ids: Sequence[str]) -> None:
        # A repeated id would only add the same points twice; the mapping is the same without.
        self.node_ids = tuple(dict.fromkeys(node_ids))
        pairs = sorted(
            (point, order)
            for order, node in enumerate(self.node_ids)
            for point in server_points(CacheNode(node, None))
        )
        self._points = [point for point, _ in pairs]
        self._owners = [self.node_ids[order] for _, order in pairs]

    def node_for(self, key: str | int) -> str | None:
        """The node owning ``key``: the first server point at or after its own; None when empty."""
        if not self._points:
            return None
        index = bisect.bisect_left(self._points, _point(key))
        return self._owners[index % len(self._owners)]


class ModuloRing:
    """``node_ids[point(key) % N]``: the list's order matters, and a change of N reshuffles most keys.

    The list is used as given (a repeated id gets a double share), as a client configured with a
    plain server list would.
    """

    def __init__(self, node_ids: Sequence[str]) -> None:
        self.node_ids = tuple(node_ids)

    def node_for(self, key: str | int) -> str | None:
        if not self.node_ids:
            return None
        return self.node_ids[_point(key) % len(self.node_ids)]


def make_router(node_ids: Sequence[str], hashing: Hashing = "consistent") -> Router:
    """The front-end's mapping for ``hashing``; a ValueError names the choices for anything else."""
    if hashing == "consistent":
        return HashRing(node_ids)
    if hashing == "modulo":
        return ModuloRing(node_ids)
    raise ValueError(f"hashing must be one of {HASHINGS}, got {hashing!r}")
