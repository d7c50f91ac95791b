"""Which cache node holds a key: libmemcached's weighted ketama, so any ketama client agrees.

What is followed is libmemcached 1.0's ``update_continuum`` with ``MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED``
(the ``CONSISTENT_KETAMA`` distribution, MD5 key hash), all weights equal:

- each server gets 160 points: for ``i`` in 0..39 the MD5 digest of ``"<host>:<port>-<i>"``, read as
  four little-endian 32-bit numbers (bytes 0-3, 4-7, 8-11, 12-15). libmemcached leaves the port out
  when it is the default 11211 (``"<host>-<i>"``), and so does this ring: a client of the same pool
  configured with ``host:11211`` lands every key where this ring does;
- a key's point is the first four bytes of its MD5 digest, little-endian;
- the key goes to the first server point at or above its own (libmemcached's lower bound), wrapping
  around to the lowest point past the top of the circle.

Where two servers' points collide (rare: 32-bit values) libmemcached's ``qsort`` picks either; here
the server listed first wins, so the mapping at least never depends on the run.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORT = 11211
STRINGS_PER_SERVER = 40  # 160 points over 4 points per digest, for equal weights
POINTS_PER_STRING = 4


@dataclass(frozen=True)
class CacheNode:
    """A node the scaler announced: its id (``cache_pool_ids``), IP (``node_ip``) and memcached port."""

    id: str
    ip: str | None
    port: int = DEFAULT_PORT

    @property
    def host(self) -> str:
        """What the ring hashes: the IP, or the id while the scaler gave no IP."""
        return self.ip or self.id

    @property
    def server_string(self) -> str:
        """libmemcached's name for the server in the continuum (no port when it is 11211)."""
        return self.host if self.port == DEFAULT_PORT else f"{self.host}:{self.port}"


def key_point(key: str | bytes) -> int:
    """A key's place on the circle: MD5's first four bytes, little-endian."""
    raw = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.md5(raw).digest()[:4], "little")


def server_points(node: CacheNode) -> list[int]:
    """The node's 160 points on the circle."""
    points = []
    for index in range(STRINGS_PER_SERVER):
        digest = hashlib.md5(f"{node.server_string}-{index}".encode()).digest()
        points.extend(
            int.from_bytes(digest[at : at + 4], "little") for at in range(0, 4 * POINTS_PER_STRING, 4)
        )
    return points


class Ring:
    """An immutable continuum over ``nodes``: a new pool means a new ring, never an edited one.

    The kit keeps one reference and replaces it, so a reader sees the old ring or the new one,
    never half of each, and needs no lock.
    """

    __slots__ = ("_owners", "_points", "nodes")

    def __init__(self, nodes: Iterable[CacheNode] = ()) -> None:
        # One entry per server string: a repeated node would only double its own points.
        unique = dict.fromkeys(nodes)
        self.nodes: tuple[CacheNode, ...] = tuple(unique)
        pairs = sorted(
            (point, order) for order, node in enumerate(self.nodes) for point in server_points(node)
        )
        self._points = tuple(point for point, _ in pairs)
        self._owners = tuple(self.nodes[order] for _, order in pairs)

    def node_for(self, key: str | bytes) -> CacheNode | None:
        """The node holding ``key``; None while the scaler has announced no node."""
        return self.node_at(key_point(key))

    def node_at(self, point: int) -> CacheNode | None:
        """The node holding the keys at ``point`` (``key_point``) on the circle."""
        if not self._points:
            return None
        index = bisect.bisect_left(self._points, point)
        return self._owners[index % len(self._owners)]

    def __len__(self) -> int:
        return len(self.nodes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and other.nodes == self.nodes

    def __hash__(self) -> int:
        return hash(self.nodes)

    def __repr__(self) -> str:
        return f"Ring({[node.server_string for node in self.nodes]})"
