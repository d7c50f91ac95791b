"""Consistent hashing with virtual nodes, as a front-end spreads keys over the cache nodes.

The hash is blake2b, never Python's ``hash`` (salted per process), so a key maps to the same node
in every run and every process. Adding a node to N moves about 1/(N+1) of the keys, all to it.
``ModuloRing`` is the naive alternative (``hash % N``), kept to show what consistent hashing
saves: there, changing N moves most keys.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal, Protocol

VIRTUAL_NODES = 100
Hashing = Literal["consistent", "modulo"]
HASHINGS: tuple[Hashing, ...] = ("consistent", "modulo")


@lru_cache(maxsize=1 << 17)
def _point(key: str | int) -> int:
    # Keys repeat minute after minute, so memoising their points keeps a minute's routing cheap.
    # An int key hashes as its decimal text, so 7 and "7" land on the same point.
    return int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(), "big")


class Router(Protocol):
    """What a front-end needs from a key-to-node mapping."""

    node_ids: tuple[str, ...]

    def node_for(self, key: str | int) -> str | None: ...


class HashRing:
    """Maps keys onto ``node_ids`` (order does not change the mapping, only the list's content)."""

    def __init__(self, node_ids: Sequence[str], virtual_nodes: int = VIRTUAL_NODES) -> None:
        # A repeated id would only add the same virtual nodes twice; the mapping is the same without.
        self.node_ids = tuple(dict.fromkeys(node_ids))
        pairs = sorted(
            (_point(f"{node}#{replica}"), node) for node in self.node_ids for replica in range(virtual_nodes)
        )
        self._points = [point for point, _ in pairs]
        self._owners = [node for _, node in pairs]

    def node_for(self, key: str | int) -> str | None:
        """The node owning ``key``: the first virtual node clockwise from its point; None when empty."""
        if not self._points:
            return None
        index = bisect.bisect_right(self._points, _point(key))
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
