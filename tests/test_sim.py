"""The simulated cache tier: pure parts first, then the front-end on loopback, then a step under moto."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from frontend_kit.ring import CacheNode, Ring
from sim.frontend import Frontend, signature
from sim.hashring import HashRing
from sim.lru import LruNode
from sim.memcached_tier import MemcachedTier
from sim.simulation import Simulation
from sim.tier import CacheTier
from sim.workload import DAY_MINUTES, NODE_CAPACITY, Workload, shape
from tests.conftest import REGION, run_instances

MEMCACHED = "/usr/bin/memcached"

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
HTTP_TIMEOUT = 3.0  # every request a test makes is bounded by this


# -- LRU -------------------------------------------------------------------------------------


def test_lru_evicts_the_least_recently_used() -> None:
    node = LruNode(3)
    for key in ("a", "b", "c"):
        node.set(key)
    assert node.get("a")  # a is now the most recent, so b is the oldest
    node.set("d")
    assert list(node) == ["c", "a", "d"]
    assert "b" not in node and len(node) == 3


def test_lru_cache_aside_misses_once_then_hits() -> None:
    node = LruNode(2)
    assert [node.access(key) for key in ("x", "x", "y", "z", "x")] == [False, True, False, False, False]


def test_lru_refuses_no_capacity() -> None:
    with pytest.raises(ValueError):
        LruNode(0)


# -- consistent hashing ----------------------------------------------------------------------

KEYS = [f"k:{n}" for n in range(20_000)]


def test_ring_adding_a_node_moves_about_one_in_n_keys_all_to_it() -> None:
    before = HashRing(["i-1", "i-2", "i-3", "i-4"])
    after = HashRing(["i-1", "i-2", "i-3", "i-4", "i-5"])
    moved = [key for key in KEYS if before.node_for(key) != after.node_for(key)]
    assert 0.12 < len(moved) / len(KEYS) < 0.28  # 1/5 expected
    assert {after.node_for(key) for key in moved} == {"i-5"}


def test_ring_spreads_keys_and_ignores_list_order() -> None:
    ring = HashRing(["i-1", "i-2", "i-3", "i-4"])
    shares = {node: 0 for node in ring.node_ids}
    for key in KEYS:
        shares[ring.node_for(key)] += 1  # type: ignore[index]
    assert all(0.15 < count / len(KEYS) < 0.35 for count in shares.values())
    reordered = HashRing(["i-3", "i-1", "i-4", "i-2"])
    assert all(ring.node_for(key) == reordered.node_for(key) for key in KEYS[:2000])


def test_ring_is_the_same_in_every_process() -> None:
    # Fixed answers: Python's salted hash() would change them from run to run.
    ring = HashRing(["i-a", "i-b", "i-c"])
    assert [ring.node_for(key) for key in ("k:1", "k:2", "k:3")] == ["i-b", "i-c", "i-b"]
    assert HashRing([]).node_for("k:1") is None


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_ring_places_every_key_where_the_front_end_kit_does(size: int) -> None:
    # The simulated front-end and a real one (frontend_kit.ring, libmemcached's ketama) must move
    # the same keys when the pool changes: node names are hosts on the default port, int keys
    # their decimal text.
    names = [f"node-{n}" for n in range(size)]
    ours, kits = HashRing(names), Ring([CacheNode(name, None) for name in names])
    keys: list[str | int] = [*range(30_000), *(f"k:{n}" for n in range(3_000)), 1_000_000 + 77]
    for key in keys:
        owner = kits.node_for(str(key))
        assert owner is not None and ours.node_for(key) == owner.id, key


# -- workload --------------------------------------------------------------------------------


def test_workload_is_deterministic_per_seed_whatever_the_call_order() -> None:
    first, second = Workload(seed=7), Workload(seed=7)
    later = first.requests(70)
    assert first.requests(3) == second.requests(3)
    assert second.requests(70) == later
    assert Workload(seed=8).requests(70) != later


def test_workload_has_a_quiet_morning_a_flash_crowd_and_a_night() -> None:
    load = Workload(seed=0)
    morning, crowd, night = load.requests(20), load.requests(75), load.requests(180)
    crowd_share = sum(key.startswith("f0:") for key in crowd) / len(crowd)
    assert 0.4 < crowd_share < 0.6
    assert not any(key.startswith("f") for key in morning + night)
    assert len(crowd) > 4 * len(morning) > 4 * len(night)
    # The next day's crowd is made of new keys, cold everywhere again.
    assert any(key.startswith("f1:") for key in load.requests(DAY_MINUTES + 75))
    # The night's keys fit in one node, so a pool of one is enough then.
    assert shape(180).active_keys <= NODE_CAPACITY


def test_every_minute_has_data_and_stays_cheap() -> None:
    counts = [len(requests) for requests in map(Workload(seed=0).requests, range(DAY_MINUTES))]
    assert min(counts) >= 50  # the scaler's default min_get_requests: the night is never "no data"
    assert max(counts) <= 4_000


def _miss_rates(nodes: int, minutes: range) -> list[float]:
    tier, ids, load = CacheTier(boot_minutes=0), [f"i-{n}" for n in range(nodes)], Workload(seed=0)
    rates = []
    for minute in minutes:
        tier.sync(ids, minute)
        counts = tier.serve(load.requests(minute), ids).values()
        rates.append(1 - sum(hits for _, hits in counts) / sum(gets for gets, _ in counts))
    return rates


def test_the_day_crosses_the_friendly_thresholds_clearly() -> None:
    """With max 0.3 / min 0.1: one node is too few in the crowd, eight are enough, nights shrink."""
    day = range(0, 130)
    one, four, eight = (_miss_rates(nodes, day) for nodes in (1, 4, 8))
    crowd, night = slice(65, 85), slice(120, 130)
    assert max(one[20:30]) < 0.1
    assert min(one[crowd]) > 0.5 and min(four[crowd]) > 0.35
    assert min(eight[crowd]) > 0.15 and max(eight[crowd]) < 0.28
    assert max(one[night] + four[night] + eight[night]) < 0.1


# -- the tier --------------------------------------------------------------------------------


def test_a_cold_node_misses_then_hits() -> None:
    tier = CacheTier(boot_minutes=0)
    tier.sync(["i-a"], 0)
    assert tier.serve(["k:1", "k:2"], ["i-a"]) == {"i-a": (2, 0)}
    assert tier.serve(["k:1", "k:2", "k:3"], ["i-a"]) == {"i-a": (3, 2)}


def test_a_removed_node_loses_its_data() -> None:
    tier = CacheTier(boot_minutes=0)
    tier.sync(["i-a", "i-b"], 0)
    keys = [f"k:{n}" for n in range(200)]
    tier.serve(keys, ["i-a", "i-b"])
    on_b = [key for key in keys if HashRing(["i-a", "i-b"]).node_for(key) == "i-b"]
    tier.sync(["i-a"], 1)
    assert tier.node_ids == ["i-a"]
    assert tier.serve(on_b, ["i-a"]) == {"i-a": (len(on_b), 0)}  # b's keys are gone with it
    tier.sync(["i-a", "i-b"], 2)  # an instance by that id again: a new, empty node
    assert len(tier.node("i-b")) == 0


def test_booting_nodes_do_not_serve_and_every_serving_node_reports() -> None:
    tier = CacheTier(boot_minutes=1)
    tier.sync(["i-a"], 5)
    assert tier.serving_ids == []
    assert tier.serve(["k:1", "k:2"], ["i-a"]) == {}  # the front-end's requests fail: no node counts them
    tier.sync(["i-a", "i-b"], 6)
    assert tier.serving_ids == ["i-a"]
    result = tier.serve([f"k:{n}" for n in range(50)], ["i-a", "i-b", "i-gone"])
    assert set(result) == {"i-a"}
    assert 0 < result["i-a"][0] < 50  # keys routed to i-b (booting) or i-gone are not counted
    tier.sync(["i-a", "i-b"], 7)
    assert tier.serve([], ["i-a"]) == {"i-a": (0, 0), "i-b": (0, 0)}  # zeros included


# -- the front-end ---------------------------------------------------------------------------


def _notice(sequence: int, ids: list[str], removing: Sequence[str] = (), added: Sequence[str] = ()) -> bytes:
    node = {"i-1": "10.0.0.1", "i-2": "10.0.0.2", "i-3": "10.0.0.3"}
    return json.dumps(
        {
            "sequence": sequence,
            "change": "decrease" if removing else "increase",
            "mode": "automatic",
            "node_ip": [node[i] for i in ids],
            "cache_pool_ids": ids,
            "added": [{"id": i, "ip": node[i]} for i in added],
            "removing": [{"id": i, "ip": node[i]} for i in removing],
        }
    ).encode()


def test_frontend_keeps_the_newest_list_and_the_nodes_to_confirm() -> None:
    frontend = Frontend("http://127.0.0.1:9", None)
    assert frontend.receive(_notice(1, ["i-1", "i-2", "i-3"], added=["i-3"]), None) == 200
    assert frontend.receive(_notice(2, ["i-1"], removing=["i-2", "i-3"]), None) == 200
    assert frontend.receive(_notice(1, ["i-1", "i-2", "i-3"]), None) == 200  # replayed: ignored
    assert (frontend.sequence, frontend.routing_ids()) == (2, ["i-1"])
    assert frontend.to_confirm == {"i-2": "10.0.0.2", "i-3": "10.0.0.3"}
    frontend.receive(_notice(3, ["i-1", "i-3"], added=["i-3"]), None)  # taken back while draining
    assert frontend.to_confirm == {"i-2": "10.0.0.2"}
    for bad in (b"{not json", b"[1]", b'{"sequence": 4, "cache_pool_ids": ["i-1"], "removing": ["i-2"]}'):
        assert frontend.receive(bad, None) == 400
    assert frontend.sequence == 3


def test_frontend_checks_the_signature_when_it_has_a_secret() -> None:
    frontend = Frontend("http://127.0.0.1:9", None, secret="s3cret")
    body = _notice(1, ["i-1"])
    assert frontend.receive(body, None) == 401
    assert frontend.receive(body, signature("other", body)) == 401
    assert frontend.receive(body, "sha256=\u00e9") == 401  # not ASCII: refused, not a crash
    assert frontend.sequence is None
    assert frontend.receive(body, signature("s3cret", body)) == 200
    assert frontend.sequence == 1


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_frontend_serves_notifications_on_loopback_and_stops_clean() -> None:
    frontend = Frontend("http://127.0.0.1:9", None, secret="s3cret")
    frontend.start()
    try:
        url = frontend.url
        assert url.startswith("http://127.0.0.1:")
        body = _notice(4, ["i-2", "i-1"])
        assert _post(url, body, {"X-Scaler-Signature": signature("s3cret", body)}) == 200
        assert _post(url, body, {"X-Scaler-Signature": "sha256=00"}) == 401
        assert frontend.routing_ids() == ["i-2", "i-1"]
        thread = frontend._thread
    finally:
        frontend.stop()
    assert thread is not None and not thread.is_alive()
    with pytest.raises(OSError):
        _post(url, body)  # the socket is closed: refused
    frontend.stop()  # twice is fine


class FakeApi:
    """The scaler's API, as far as the front-end uses it: ``cache_list`` and drain confirmations."""

    def __init__(self, cache_pool_ids: list[str], answers: dict[str, int] | None = None) -> None:
        self.cache_pool_ids, self.answers = cache_pool_ids, answers or {}
        self.calls: list[tuple[str, str, str | None, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the names http.server calls
                api.calls.append(("GET", self.path, self.headers.get("Authorization"), None))
                self._answer(200, {"cache_pool_ids": api.cache_pool_ids, "nodes": []})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                api.calls.append(("POST", self.path, self.headers.get("Authorization"), body))
                status = api.answers.get(body.get("cache_ip"), 200)
                self._answer(status, {"terminated": "i-x"} if status == 200 else {"Code": "X", "Message": ""})

            def _answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi([])
    api.thread.start()
    yield api
    api.server.shutdown()
    api.server.server_close()
    api.thread.join()


def test_frontend_confirms_drains_and_forgets_the_settled(fake_api: FakeApi) -> None:
    fake_api.answers = {"10.0.0.2": 404, "10.0.0.3": 503}
    frontend = Frontend(fake_api.url, "tok")
    frontend.receive(_notice(1, []), None)
    frontend.receive(_notice(2, [], removing=["i-1", "i-2", "i-3"]), None)
    assert frontend.confirm_drains() == ["i-1", "i-2"]  # 200 confirmed, 404 already gone
    assert frontend.to_confirm == {"i-3": "10.0.0.3"}  # 503: again next minute
    posts = [(path, auth, body) for method, path, auth, body in fake_api.calls if method == "POST"]
    assert posts[0] == ("/api/poolsize/change", "Bearer tok", {"cache_ip": "10.0.0.1"})
    assert len(posts) == 3


def test_frontend_routes_by_cache_list_until_notified(fake_api: FakeApi) -> None:
    fake_api.cache_pool_ids = ["i-1", "i-2"]
    frontend = Frontend(fake_api.url + "/", "tok")
    assert frontend.routing_ids() == ["i-1", "i-2"]
    assert fake_api.calls == [("GET", "/api/scaler/cache_list", "Bearer tok", None)]
    frontend.receive(_notice(1, ["i-3"]), None)
    assert frontend.routing_ids() == ["i-3"]
    assert len(fake_api.calls) == 1
    unreachable = Frontend("http://127.0.0.1:9", "tok", timeout=HTTP_TIMEOUT)
    assert unreachable.routing_ids() == []  # nothing known yet: every GET fails at the front-end


# -- one step against moto -------------------------------------------------------------------


def _published(node_id: str, end: datetime) -> dict[str, list[float]]:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    queries = [
        {
            "Id": metric.lower(),
            "MetricStat": {
                "Metric": {
                    "Namespace": "Memcache",
                    "MetricName": metric,
                    "Dimensions": [{"Name": "NodeId", "Value": node_id}],
                },
                "Period": 60,
                "Stat": "Sum",
            },
        }
        for metric in ("GetRequests", "Hits")
    ]
    reply = cloudwatch.get_metric_data(
        MetricDataQueries=queries, StartTime=end - timedelta(seconds=60), EndTime=end
    )
    return {result["Id"]: result["Values"] for result in reply["MetricDataResults"]}


def test_step_serves_the_minute_and_publishes_every_serving_node(moto: None, fake_api: FakeApi) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    routed, idle = run_instances(ec2, 2, pool="default")
    (other,) = run_instances(ec2, 1, pool="another")
    fake_api.cache_pool_ids = [routed]  # the front-end routes to one node; the other serves nothing
    with Simulation("default", fake_api.url, "tok", seed=3, start=T0) as simulation:
        booting = simulation.step(T0 + timedelta(seconds=42))  # truncated to the minute: minute 0
        assert (booting["minute"], booting["nodes"], booting["booting"], booting["gets"]) == (0, 0, 2, 0)
        assert booting["miss_rate"] is None and booting["requests"] > 0
        end = T0 + timedelta(minutes=1)
        summary = simulation.step(end)
    assert summary["minute"] == 1 and summary["nodes"] == 2 and summary["routing"] == 1
    assert summary["gets"] == summary["requests"] > 0 and 0 < summary["hits"] < summary["gets"]
    assert _published(routed, end) == {"getrequests": [summary["gets"]], "hits": [summary["hits"]]}
    assert _published(idle, end) == {"getrequests": [0.0], "hits": [0.0]}  # zeros are published
    assert _published(other, end) == {"getrequests": [], "hits": []}
    assert _published(routed, T0) == {"getrequests": [], "hits": []}  # nothing while booting


# --- the tier on real memcached ---------------------------------------------------------------


def test_the_memcached_tier_serves_cache_aside_counts_from_stats_and_stops_its_processes(
    tmp_path: Path,
) -> None:
    if not os.access(MEMCACHED, os.X_OK):
        pytest.skip(f"{MEMCACHED} is not installed (apt-get install memcached)")
    # The agents publish nowhere here (no endpoint answers): only their start is waited for.
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x"}
    tier = MemcachedTier(binary=MEMCACHED, workdir=tmp_path, agent_env={**env, "AWS_SECRET_ACCESS_KEY": "x"})
    try:
        # Given two running instances
        tier.sync(["i-a", "i-b"], 0)
        pids = [p.pid for node in tier._nodes.values() for p in (node.memcached, node.agent) if p]
        assert len(pids) == 4 and tier.serving_ids == ["i-a", "i-b"]
        keys = [f"k:{n}" for n in range(50)]
        # When a minute GETs 50 keys twice, routed over both, and one id that runs nowhere
        first = tier.serve_minute(keys + keys, ["i-a", "i-b"])
        ring = HashRing(["i-a", "i-b", "i-gone"])
        stray = tier.serve_minute(keys, ["i-a", "i-b", "i-gone"])
        # Then each key missed once (cache-aside SET it) and hit after; memcached's counters say so
        assert (first.gets, first.hits, first.failed) == (100, 50, 0)
        gone = sum(ring.node_for(key) == "i-gone" for key in keys)
        assert (stray.gets, stray.hits, stray.failed) == (50 - gone, 50 - gone, gone)
        # And an instance that stops running takes its processes with it
        tier.sync(["i-a"], 1)
        assert tier.node_ids == ["i-a"]
    finally:
        tier.stop()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists() and _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
