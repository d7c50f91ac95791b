"""The front-end kit: its ketama ring, and how it takes the scaler's notices."""

from __future__ import annotations

import hashlib
import struct

import pytest

from frontend_kit.ring import CacheNode, Ring

KEYS = [f"user:{n}" for n in range(4000)]


def _ketama_by_definition(servers: list[tuple[str, int]], key: str) -> tuple[str, int]:
    """libmemcached's weighted ketama written out the long way: every point, then a linear scan."""
    points = []
    for host, port in servers:
        name = host if port == 11211 else f"{host}:{port}"
        for i in range(40):
            digest = hashlib.md5(f"{name}-{i}".encode()).digest()
            points += [(value, (host, port)) for value in struct.unpack("<4I", digest)]
    (wanted,) = struct.unpack("<I", hashlib.md5(key.encode()).digest()[:4])
    at_or_above = [pair for pair in points if pair[0] >= wanted]
    return min(at_or_above or points)[1]


def _nodes(count: int, port: int = 11211) -> list[CacheNode]:
    return [CacheNode(id=f"i-{n:04x}", ip=f"10.0.0.{n + 1}", port=port) for n in range(count)]


def test_an_empty_ring_routes_nowhere() -> None:
    assert Ring().node_for("any") is None


@pytest.mark.parametrize("port", [11211, 11311])
def test_keys_land_where_the_ketama_definition_puts_them(port: int) -> None:
    nodes = _nodes(3, port)
    ring = Ring(nodes)
    servers = [(node.ip, node.port) for node in nodes]
    for key in ["", "a", "user:42", "session:9f8e", "ключ"]:
        host, _ = _ketama_by_definition(servers, key)
        assert ring.node_for(key).ip == host


def test_each_node_gets_160_points_and_the_default_port_is_left_out_of_the_name() -> None:
    assert CacheNode("i-1", "10.0.0.1").server_string == "10.0.0.1"
    assert CacheNode("i-1", "10.0.0.1", 11311).server_string == "10.0.0.1:11311"
    assert CacheNode("i-1", None).server_string == "i-1"
    assert len(Ring(_nodes(4))._points) == 4 * 160


def test_the_mapping_is_stable_and_does_not_depend_on_the_order_nodes_are_listed() -> None:
    nodes = _nodes(4)
    first, again, reversed_ring = Ring(nodes), Ring(nodes), Ring(list(reversed(nodes)))
    assert [first.node_for(k) for k in KEYS] == [again.node_for(k) for k in KEYS]
    assert [first.node_for(k) for k in KEYS] == [reversed_ring.node_for(k) for k in KEYS]


def test_adding_a_node_moves_about_one_in_n_plus_one_keys_all_to_it() -> None:
    nodes = _nodes(5)
    before, after = Ring(nodes[:4]), Ring(nodes)
    moved = [key for key in KEYS if before.node_for(key) != after.node_for(key)]
    assert {after.node_for(key) for key in moved} == {nodes[4]}
    assert 0.5 / 5 < len(moved) / len(KEYS) < 1.5 / 5


def test_every_node_gets_a_fair_share() -> None:
    ring = Ring(_nodes(4))
    shares = {node: 0 for node in ring.nodes}
    for key in KEYS:
        shares[ring.node_for(key)] += 1
    assert all(0.6 / 4 < count / len(KEYS) < 1.4 / 4 for count in shares.values())
