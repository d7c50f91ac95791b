"""The front-end kit: its ketama ring, and how it takes the scaler's notices."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import struct

import pytest

from frontend_kit import FrontendKit, Moving, Routing, wsgi_app
from frontend_kit.notifications import signature
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


# -- notices ---------------------------------------------------------------------------------

SECRET = "s3cret"


def _notice(sequence: int, ips: list[str], change: str = "increase") -> dict:
    return {
        "sequence": sequence,
        "change": change,
        "mode": "automatic",
        "node_ip": ips,
        "cache_pool_ids": [f"i-{ip.rsplit('.', 1)[1]}" for ip in ips],
        "added": [],
        "removing": [],
    }


def _signed(notice: dict) -> tuple[dict[str, str], bytes]:
    """Headers and body exactly as the scaler's own notifier makes them."""
    from chalicelib.adapters.frontend import Notifier

    body = json.dumps(notice, separators=(",", ":")).encode()
    return Notifier("http://front.example/notify", SECRET).headers(body), body


class FakeApi:
    """``GET /api/scaler/cache_list`` in memory: what it answers, and how often it was asked."""

    def __init__(self, sequence: int = 0, ips: list[str] | None = None) -> None:
        self.calls = 0
        self.set(sequence, ips or [])

    def set(self, sequence: int, ips: list[str], draining: list[str] = ()) -> None:
        nodes = [{"id": f"i-{ip}", "ip": ip, "index": n, "state": "in_service"} for n, ip in enumerate(ips)]
        nodes += [{"id": f"i-{ip}", "ip": ip, "index": 9, "state": "draining"} for ip in draining]
        self.answer = {"cache_pool_ids": [node["id"] for node in nodes], "nodes": nodes, "sequence": sequence}

    def __call__(self) -> dict:
        self.calls += 1
        return self.answer


def _ips(ring: Ring) -> set[str]:
    return {node.ip for node in ring.nodes}


def _ring_ips(kit: FrontendKit) -> set[str]:
    return _ips(kit.ring)


def _synced_kit(sequence: int = 0, ips: list[str] | None = None) -> tuple[FrontendKit, FakeApi]:
    api = FakeApi(sequence, ips or ["10.0.0.1"])
    kit = FrontendKit(api, secret=SECRET)
    kit.apply_pending()
    return kit, api


def test_a_notice_signed_by_the_scalers_own_notifier_is_queued_not_applied() -> None:
    kit, _ = _synced_kit()
    status, answer = kit.handle(*_signed(_notice(1, ["10.0.0.1", "10.0.0.2"])))
    assert (status, answer["status"]) == (202, "queued")
    assert _ring_ips(kit) == {"10.0.0.1"}  # nothing moves inside the request
    assert kit.apply_pending() == 1
    assert _ring_ips(kit) == {"10.0.0.1", "10.0.0.2"}
    assert kit.ring.node_for("k").ip in {"10.0.0.1", "10.0.0.2"}


@pytest.mark.parametrize(
    "signature_header",
    [None, "", "sha256=" + "0" * 64, "sha1=abc", "sha256=ünïcode", "SIGNED"],
)
def test_a_missing_or_wrong_signature_is_refused_with_401(signature_header: str | None) -> None:
    kit, _ = _synced_kit()
    headers, body = _signed(_notice(1, ["10.0.0.2"]))
    del headers["X-Scaler-Signature"]
    if signature_header is not None:
        headers["X-Scaler-Signature"] = signature_header
    assert kit.handle(headers, body)[0] == 401
    assert kit.apply_pending() == 0


def test_a_signature_over_other_bytes_or_with_another_secret_is_refused() -> None:
    kit, _ = _synced_kit()
    headers, body = _signed(_notice(1, ["10.0.0.2"]))
    assert kit.handle(headers, body.replace(b"10.0.0.2", b"10.0.0.9"))[0] == 401
    other = "sha256=" + hmac.new(b"other", body, hashlib.sha256).hexdigest()
    assert kit.handle({"X-Scaler-Signature": other}, body)[0] == 401
    # The header's name is case-insensitive, as HTTP's are.
    assert kit.handle({"x-scaler-signature": headers["X-Scaler-Signature"]}, body)[0] == 202


def test_without_a_secret_no_signature_is_asked_for() -> None:
    kit = FrontendKit(FakeApi())
    assert kit.handle({}, json.dumps(_notice(1, ["10.0.0.2"])).encode())[0] == 202


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"sequence": 1}', b'{"sequence": "1", "change": "increase"}'],
)
def test_a_body_that_is_not_a_notice_is_a_400(body: bytes) -> None:
    kit = FrontendKit(FakeApi(), secret=SECRET)
    assert kit.handle({"X-Scaler-Signature": signature(SECRET, body)}, body)[0] == 400
    mismatched = _notice(1, ["10.0.0.2"]) | {"cache_pool_ids": []}
    assert kit.handle(*_signed(mismatched))[0] == 400


def test_a_resent_sequence_is_answered_2xx_and_not_applied_again() -> None:
    kit, api = _synced_kit()
    first = _signed(_notice(1, ["10.0.0.1", "10.0.0.2"]))
    assert kit.handle(*first)[0] == 202
    assert kit.handle(*first) == (200, {"sequence": 1, "status": "already received"})  # still queued
    assert kit.apply_pending() == 1
    assert kit.handle(*first) == (200, {"sequence": 1, "status": "already received"})  # applied
    assert kit.apply_pending() == 0
    assert (kit.applied_sequence, api.calls) == (1, 1)


def test_queued_notices_are_applied_in_sequence_order_whatever_order_they_came_in() -> None:
    applied: list[tuple[int, set[str]]] = []
    api = FakeApi(0, ["10.0.0.1"])
    kit = FrontendKit(api, secret=SECRET, on_applied=lambda n, ring: applied.append((n.sequence, _ips(ring))))
    kit.apply_pending()
    notices = {
        1: ["10.0.0.1", "10.0.0.2"],
        2: ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        3: ["10.0.0.1", "10.0.0.3"],
    }
    for sequence in (3, 1, 2):
        assert kit.handle(*_signed(_notice(sequence, notices[sequence])))[0] == 202
    assert kit.apply_pending() == 3
    assert applied == [(sequence, set(ips)) for sequence, ips in sorted(notices.items())]
    assert (api.calls, _ring_ips(kit)) == (1, {"10.0.0.1", "10.0.0.3"})


def test_a_gap_in_sequence_reloads_the_pool_through_the_api() -> None:
    kit, api = _synced_kit()
    kit.handle(*_signed(_notice(1, ["10.0.0.1", "10.0.0.2"])))
    kit.apply_pending()
    # Notice 2 is lost; the scaler moves on to 3 (its cache_list says 3 was the last sent).
    api.set(3, ["10.0.0.2", "10.0.0.4"], draining=["10.0.0.1"])
    kit.handle(*_signed(_notice(3, ["10.0.0.2", "10.0.0.4"], change="decrease")))
    assert api.calls == 1  # the request itself fetches nothing
    kit.apply_pending()
    assert api.calls == 2
    assert kit.applied_sequence == 3
    assert _ring_ips(kit) == {"10.0.0.2", "10.0.0.4"}  # in service only: never a draining node


def test_a_restarted_numbering_reloads_the_pool() -> None:
    kit, api = _synced_kit(sequence=40)
    assert kit.handle(*_signed(_notice(41, ["10.0.0.1", "10.0.0.2"])))[0] == 202
    kit.apply_pending()
    api.set(1, ["10.0.0.7"])  # the scaler's state was rebuilt: its numbers start again
    assert kit.handle(*_signed(_notice(1, ["10.0.0.7"])))[0] == 202
    kit.apply_pending()
    assert (api.calls, kit.applied_sequence, _ring_ips(kit)) == (2, 1, {"10.0.0.7"})
    assert kit.handle(*_signed(_notice(2, ["10.0.0.7", "10.0.0.8"])))[0] == 202
    kit.apply_pending()
    assert (api.calls, _ring_ips(kit)) == (2, {"10.0.0.7", "10.0.0.8"})


def test_a_failed_reload_keeps_the_queue_for_the_next_call() -> None:
    def unreachable() -> dict:
        raise OSError("connection refused")

    kit = FrontendKit(unreachable, secret=SECRET)
    kit.handle(*_signed(_notice(5, ["10.0.0.5"])))
    with pytest.raises(OSError):
        kit.apply_pending()
    assert kit.ring.node_for("k") is None  # never a guess before the pool is known
    kit._fetch_pool = FakeApi(4, ["10.0.0.1"])
    assert kit.apply_pending() == 1
    assert _ring_ips(kit) == {"10.0.0.5"}


def test_during_a_move_reads_go_to_the_old_owner_and_writes_to_both() -> None:
    nodes = _nodes(3)
    old, new = Ring(nodes[:2]), Ring(nodes)
    routing = Routing(old, target=new, moving=Moving())
    moving = next(key for key in KEYS if old.node_for(key) != new.node_for(key))
    staying = next(key for key in KEYS if old.node_for(key) == new.node_for(key))
    assert routing.node_for(moving) == old.node_for(moving)
    assert routing.nodes_for_write(moving) == (old.node_for(moving), nodes[2])
    assert routing.nodes_for_write(staying) == (old.node_for(staying),)
    assert Routing(new).nodes_for_write(moving) == (nodes[2],) and Routing(Ring()).nodes_for_write("k") == ()
    assert routing.nodes == frozenset(nodes) and routing == Routing(old, target=new)


def test_without_a_mover_the_ring_switches_and_the_drained_node_is_confirmed_at_once() -> None:
    confirmed: list[CacheNode] = []
    api = FakeApi(0, ["10.0.0.1", "10.0.0.2"])
    kit = FrontendKit(api, secret=SECRET, confirm_drain=confirmed.append)
    body = _notice(1, ["10.0.0.1"], change="decrease") | {
        "removing": [{"id": "i-10.0.0.2", "ip": "10.0.0.2"}]
    }
    kit.apply_pending()
    assert kit.will_write(["k"]) == Routing(Ring(_nodes_of(api)))
    kit.handle(*_signed(body))
    kit.apply_pending()
    assert _ring_ips(kit) == {"10.0.0.1"} and [node.ip for node in confirmed] == ["10.0.0.2"]
    assert kit.last_moves == [] and kit.unconfirmed == ()


def test_a_follower_writes_to_the_old_owners_too_for_follow_seconds_after_its_pool_changed() -> None:
    now = [100.0]
    api = FakeApi(0, ["10.0.0.1"])
    kit = FrontendKit(api, follow_seconds=30, clock=lambda: now[0])
    kit.apply_pending()
    old = kit.ring
    assert kit.routing == Routing(old)  # the first load is no change
    api.set(1, ["10.0.0.1", "10.0.0.2"])
    kit._needs_resync = True
    kit.apply_pending()
    new = kit.ring
    assert kit.routing == Routing(new, target=old) and len(new) == 2
    moved = next(key for key in KEYS if old.node_for(key) != new.node_for(key))
    assert kit.routing.node_for(moved).ip == "10.0.0.2"
    assert [node.ip for node in kit.will_write([moved]).nodes_for_write(moved)] == ["10.0.0.2", "10.0.0.1"]
    now[0] += 29
    kit._needs_resync = True  # a reload that changes nothing keeps the window open
    kit.apply_pending()
    assert kit.routing == Routing(new, target=old)
    now[0] += 1
    kit.apply_pending()
    assert kit.routing == Routing(new)


def _nodes_of(api: FakeApi) -> list[CacheNode]:
    return [
        CacheNode(node["id"], node["ip"]) for node in api.answer["nodes"] if node["state"] == "in_service"
    ]


# -- the WSGI app ----------------------------------------------------------------------------


def _call(app, method: str, headers: dict[str, str], body: bytes) -> tuple[str, dict]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/scaler-notifications",
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "wsgi.input": io.BytesIO(body),
    }
    environ |= {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    started: list[str] = []
    chunks = app(environ, lambda status, _headers: started.append(status))
    return started[0], json.loads(b"".join(chunks))


def test_the_wsgi_app_passes_headers_and_body_to_the_kit() -> None:
    kit, _ = _synced_kit()
    app = wsgi_app(kit)
    headers, body = _signed(_notice(1, ["10.0.0.1", "10.0.0.2"]))
    assert _call(app, "POST", headers, body) == ("202 Accepted", {"sequence": 1, "status": "queued"})
    assert _call(app, "POST", {}, body)[0] == "401 Unauthorized"
    assert _call(app, "GET", headers, b"")[0] == "405 Method Not Allowed"
    assert _call(app, "POST", headers, b"x" * (64 * 1024 + 1))[0] == "413 Content Too Large"
    kit.apply_pending()
    assert _ring_ips(kit) == {"10.0.0.1", "10.0.0.2"}
