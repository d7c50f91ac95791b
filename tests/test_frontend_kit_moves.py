"""Warm moves and drain confirmations, against real memcached processes on loopback.

Each node listens on its own loopback address (127.0.0.2, .3, …) on one port, as the pool's nodes
do on their IPs: SPEC's notices carry IPs only, and the kit takes one port for every node.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from frontend_kit import (
    CacheNode,
    FrontendKit,
    MoveReport,
    Moving,
    Ring,
    Routing,
    ScalerApi,
    WarmMover,
    moves,
)
from frontend_kit.protocol import Connection, Listed
from tests.test_node_agent import MEMCACHED, Memcached, free_port

pytestmark = pytest.mark.skipif(
    not os.access(MEMCACHED, os.X_OK), reason=f"{MEMCACHED} is not installed (apt-get install memcached)"
)


class Pool:
    """Memcached processes on 127.0.0.2, .3, … and one port; ``nodes[i]`` is ``servers[i]``'s node."""

    def __init__(self, count: int) -> None:
        self.port = free_port()
        self.servers = [Memcached(64, host=f"127.0.0.{n + 2}", port=self.port) for n in range(count)]
        for server in self.servers:
            server.start()
        self.nodes = [CacheNode(f"i-{server.host}", server.host, self.port) for server in self.servers]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def server(self, node: CacheNode) -> Memcached:
        return self.servers[self.nodes.index(node)]

    def fill(self, ring: Ring, items: dict[str, bytes], flags: int = 0, exptime: int = 0) -> None:
        """Store each item on its owner under ``ring``, as a front-end routing by it would."""
        by_node: dict[CacheNode, list[str]] = {}
        for key in items:
            by_node.setdefault(ring.node_for(key), []).append(key)
        for node, keys in by_node.items():
            payload = b"".join(
                b"set %s %d %d %d\r\n%s\r\n" % (key.encode(), flags, exptime, len(items[key]), items[key])
                for key in keys
            )
            self.server(node).command(payload, len(keys))

    def peek(self, node: CacheNode, key: str) -> tuple[int, bytes] | None:
        """(flags, value) of ``key`` on ``node``, or None."""
        answer = self.server(node).command(b"get %s\r\n" % key.encode())
        if answer == b"END\r\n":
            return None
        header, _, rest = answer.partition(b"\r\n")
        _, _, flags, size = header.split(b" ")
        return int(flags), rest[: int(size)]

    def listing(self, node: CacheNode) -> dict[bytes, Listed]:
        with Connection(self.server(node).address, connect_timeout=2, io_timeout=2) as connection:
            return {item.key: item for item in connection.metadump()}

    def stats(self, node: CacheNode) -> dict[str, int]:
        with Connection(self.server(node).address, connect_timeout=2, io_timeout=2) as connection:
            stats = connection.stats()
        return {name: int(stats[name]) for name in ("cmd_get", "get_hits", "get_misses", "cmd_touch")}


@pytest.fixture
def pool() -> Iterator[Pool]:
    started = Pool(3)
    yield started
    started.stop()


class FakeClock:
    """A monotonic clock that moves only when slept on or told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class Api:
    """``cache_list`` in memory, with the pool's real nodes, and the confirmations it received."""

    def __init__(self, sequence: int, in_service: list[CacheNode], draining: list[CacheNode] = ()) -> None:
        self.set(sequence, in_service, draining)
        self.confirmed: list[CacheNode] = []
        self.fetches = 0

    def set(self, sequence: int, in_service: list[CacheNode], draining: list[CacheNode] = ()) -> None:
        nodes = [
            {"id": n.id, "ip": n.ip, "index": i, "state": "in_service"} for i, n in enumerate(in_service)
        ]
        nodes += [{"id": n.id, "ip": n.ip, "index": 8, "state": "draining"} for n in draining]
        self.answer = {"cache_pool_ids": [n["id"] for n in nodes], "nodes": nodes, "sequence": sequence}

    def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        return self.answer

    def confirm(self, node: CacheNode) -> None:
        self.confirmed.append(node)


def notice(sequence: int, nodes: list[CacheNode], change: str, removing: list[CacheNode] = ()) -> bytes:
    return json.dumps(
        {
            "sequence": sequence,
            "change": change,
            "mode": "automatic",
            "node_ip": [node.ip for node in nodes],
            "cache_pool_ids": [node.id for node in nodes],
            "added": [],
            "removing": [{"id": node.id, "ip": node.ip} for node in removing],
        }
    ).encode()


def kit_on(
    pool: Pool, nodes: list[CacheNode], mover: WarmMover | None, api: Api | None = None
) -> FrontendKit:
    """A kit routing by ``nodes``, loaded from ``cache_list`` at sequence 0."""
    api = api or Api(0, nodes)
    kit = FrontendKit(api, port=pool.port, mover=mover, confirm_drain=api.confirm)
    kit.apply_pending()
    assert set(kit.ring.nodes) == set(nodes)
    return kit


def moving_keys(old: Ring, new: Ring, count: int, prefix: str = "k") -> list[str]:
    """``count`` keys whose owner differs between the two rings."""
    keys, n = [], 0
    while len(keys) < count:
        key = f"{prefix}:{n}"
        if old.node_for(key) != new.node_for(key):
            keys.append(key)
        n += 1
    return keys


def value_of(key: str) -> bytes:
    return (key * 40).encode()[:900]


def test_a_scale_out_copies_to_the_new_node_the_keys_it_will_own_with_their_flags_and_expiry(
    pool: Pool,
) -> None:
    a, b, c = pool.nodes
    old, new = Ring([a, b]), Ring([a, b, c])
    kit = kit_on(pool, [a, b], WarmMover())
    # Given 1,500 keys on A and B, a third of them with a TTL, all with flags
    keys = [f"user:{n}" for n in range(1500)]
    pool.fill(old, {key: value_of(key) for key in keys[:1000]}, flags=7)
    pool.fill(old, {key: value_of(key) for key in keys[1000:]}, flags=9, exptime=3600)
    before = {node: pool.listing(node) for node in (a, b)}
    # When the scaler announces C
    assert kit.handle({}, notice(1, [a, b, c], "increase"))[0] == 202
    assert kit.apply_pending() == 1
    # Then the kit routes by the new ring, and every key C now owns is on C, as it was on A or B
    assert kit.routing == Routing(new) and kit.ring.nodes == new.nodes
    moved = [key for key in keys if new.node_for(key) == c]
    assert 300 < len(moved) < 700
    on_c = pool.listing(c)
    assert set(on_c) == {key.encode() for key in moved}
    for key in moved:
        assert pool.peek(c, key) == ((7 if key in keys[:1000] else 9), value_of(key))
        source = before[old.node_for(key)][key.encode()]
        assert on_c[key.encode()].exp == source.exp  # -1 (none) or the same absolute expiry
    assert any(on_c[key.encode()].exp > 0 for key in moved)
    (report,) = kit.last_moves
    assert report == MoveReport(
        change="increase",
        sequence=1,
        keys_listed=len(moved),
        keys_copied=len(moved),
        keys_skipped=0,
        keys_left=0,
        seconds=report.seconds,
        budget_exhausted=False,
    )
    assert kit.cache.get(moved[0]) == value_of(moved[0])
    assert kit.cache.get_many(moved[:50] + ["absent"]) == {key: value_of(key) for key in moved[:50]}
    assert api_confirmed(kit) == []


def api_confirmed(kit: FrontendKit) -> list[CacheNode]:
    return kit._fetch_pool.confirmed


def test_the_copy_counts_no_get_on_any_node(pool: Pool) -> None:
    a, b, c = pool.nodes
    kit = kit_on(pool, [a, b], WarmMover())
    pool.fill(Ring([a, b]), {f"k{n}": b"v" * 500 for n in range(2000)})
    before = {node: pool.stats(node) for node in pool.nodes}
    kit.handle({}, notice(1, [a, b, c], "increase"))
    kit.apply_pending()
    after = {node: pool.stats(node) for node in pool.nodes}
    # The scaler's miss rate is built from cmd_get and get_hits: the move leaves both alone on
    # every node (the reads are touches: cmd_touch grew by the keys read, plus the copier's hellos)
    (report,) = kit.last_moves
    assert report.keys_copied > 500
    for node in pool.nodes:
        for counter in ("cmd_get", "get_hits", "get_misses"):
            assert after[node][counter] == before[node][counter], (node.ip, counter)
    assert sum(after[n]["cmd_touch"] - before[n]["cmd_touch"] for n in pool.nodes) >= report.keys_copied


def cold_items(server: Memcached) -> int:
    """Items in the cold segment of the server's LRUs (``stats items``)."""
    answer = server.command(b"stats items\r\n").decode()
    return sum(int(line.rsplit(" ", 1)[1]) for line in answer.splitlines() if ":number_cold " in line)


def test_keys_the_front_end_reads_are_copied_and_kept_though_memcached_bumps_them(pool: Pool) -> None:
    a, b, c = pool.nodes
    old, new = Ring([a, b]), Ring([a, b, c])
    keys = moving_keys(old, new, 400)
    pool.fill(old, {key: b"v" for key in keys})
    # Given items that memcached's LRU maintainer has moved to the cold segment, then read: a
    # second read (the copier's) makes memcached bump each one asynchronously, and its crawler
    # passes over an item waiting for its bump (a listing right after the copy sees none of them)
    deadline = time.monotonic() + 10
    while sum(cold_items(server) for server in pool.servers[:2]) < len(keys):
        assert time.monotonic() < deadline, "memcached never moved the items to its cold segment"
        time.sleep(0.05)
    kit = kit_on(pool, [a, b], WarmMover())
    assert kit.cache.get_many(keys) == dict.fromkeys(keys, b"v")
    kit.handle({}, notice(1, [a, b, c], "increase"))
    kit.apply_pending()
    # Then every one is copied and stays: the recheck asks each key's cas (``me``), never a listing
    (report,) = kit.last_moves
    assert (report.keys_listed, report.keys_copied) == (400, 400)
    assert all(pool.peek(c, key) == (0, b"v") for key in keys)


def test_with_a_short_budget_the_hottest_keys_are_copied_first_and_the_rest_left(pool: Pool) -> None:
    a, b, c = pool.nodes
    old, new = Ring([a, b]), Ring([a, b, c])
    keys = moving_keys(old, new, 450)
    cold, hot = keys[:300], keys[300:]
    pool.fill(old, {key: b"cold" for key in cold})
    # Each memcached's clock ticks once a second, and a key's last access is stamped with it
    for server in pool.servers:
        with Connection(server.address, connect_timeout=2, io_timeout=2) as connection:
            start = connection.stats()["time"]
            while connection.stats()["time"] == start:
                pass
    pool.fill(old, {key: b"hot" for key in hot})
    # Given a budget of 1.5 s and a copy batch that "takes" 1 s (the clock moves in the hook)
    clock = FakeClock()
    mover = WarmMover(budget_seconds=1.5, clock=clock, sleep=clock.sleep, on_read=lambda _: clock.sleep(1))
    report = mover.move(old, new, Moving(), change="increase", sequence=4)
    # Then two batches of 100 went, the 150 hot keys first, and the rest is left
    assert (report.keys_listed, report.keys_copied, report.keys_left) == (450, 200, 250)
    assert report.budget_exhausted and report.seconds == 2.0
    assert all(pool.peek(new.node_for(key), key) == (0, b"hot") for key in hot)
    assert sum(pool.peek(new.node_for(key), key) is not None for key in cold) == 50


def test_the_rate_limit_paces_the_copy_on_the_injected_clock(pool: Pool) -> None:
    a, b, c = pool.nodes
    old, new = Ring([a, b]), Ring([a, b, c])
    pool.fill(old, {key: b"v" for key in moving_keys(old, new, 1000)})
    clock = FakeClock()
    report = WarmMover(keys_per_second=500, clock=clock, sleep=clock.sleep, relist_seconds=0).move(
        old, new, Moving(), change="increase", sequence=1
    )
    # 1,000 keys at 500 a second, a burst of one batch (100) allowed: 1.8 s
    assert report.keys_copied == 1000 and report.seconds == pytest.approx(1.8)


@pytest.mark.parametrize("relist_seconds", [0.5, 0.0])
def test_keys_the_first_listing_missed_are_found_by_the_second_and_copied_once(
    pool: Pool, monkeypatch: pytest.MonkeyPatch, relist_seconds: float
) -> None:
    a, b, c = pool.nodes
    old, new = Ring([a, b]), Ring([a, b, c])
    keys = moving_keys(old, new, 300)
    pool.fill(old, {key: value_of(key) for key in keys})
    # Given a first listing that misses every other key, as memcached's crawler skips the items a
    # read is moving out of the cold LRU (for up to a second, so not in a later listing)
    skipped = {key.encode() for key in keys[::2]}
    listings: list[int] = []
    full_listing = moves._Run.list_moving

    def crawler_skipping_at_first(run: Any, sources: Any) -> list[Any]:
        found = full_listing(run, sources)
        listings.append(len(found))
        return [c for c in found if c.listed.key not in skipped] if len(listings) == 1 else found

    monkeypatch.setattr(moves._Run, "list_moving", crawler_skipping_at_first)
    clock = FakeClock()
    mover = WarmMover(clock=clock, sleep=clock.sleep, relist_seconds=relist_seconds)
    report = mover.move(old, new, Moving(), change="increase", sequence=1)
    arrived = {key for key in keys if pool.peek(c, key) == (0, value_of(key))}
    if relist_seconds:
        # Then, after the pause, the second listing's new keys are copied too, each key once
        assert listings == [300, 300] and clock.now >= 1000.0 + relist_seconds
        assert (report.keys_listed, report.keys_copied, report.keys_left) == (300, 300, 0)
        assert arrived == set(keys)
    else:
        # Without a second listing, the keys the first one missed start cold on their new owner
        assert listings == [300]
        assert (report.keys_listed, report.keys_copied) == (150, 150)
        assert arrived == set(keys[1::2])


def test_a_drain_moves_the_draining_nodes_keys_to_their_new_owners_then_confirms_it(pool: Pool) -> None:
    a, b, c = pool.nodes
    old, new = Ring([a, b, c]), Ring([a, b])
    api = Api(0, [a, b, c])
    seen_at_confirmation: list[tuple[Routing, tuple[int, bytes] | None]] = []
    keys = [f"cart:{n}" for n in range(900)]
    on_c = [key for key in keys if old.node_for(key) == c]

    def confirm(node: CacheNode) -> None:
        seen_at_confirmation.append((kit.routing, pool.peek(new.node_for(on_c[0]), on_c[0])))
        api.confirm(node)

    kit = FrontendKit(api, port=pool.port, mover=WarmMover(), confirm_drain=confirm)
    kit.apply_pending()
    pool.fill(old, {key: value_of(key) for key in keys}, flags=3)
    # When the scaler drains C
    kit.handle({}, notice(1, [a, b], "decrease", removing=[c]))
    kit.apply_pending()
    # Then C's keys are on A and B, and C was confirmed after the switch, with its keys in place
    assert all(pool.peek(new.node_for(key), key) == (3, value_of(key)) for key in on_c)
    assert api.confirmed == [c] and kit.unconfirmed == ()
    assert seen_at_confirmation == [(Routing(new), (3, value_of(on_c[0])))]
    (report,) = kit.last_moves
    assert (report.change, report.keys_listed, report.keys_copied) == ("decrease", len(on_c), len(on_c))


def test_a_drain_is_confirmed_even_when_the_budget_runs_out(pool: Pool) -> None:
    a, b, c = pool.nodes
    clock = FakeClock()
    mover = WarmMover(budget_seconds=0.5, clock=clock, sleep=clock.sleep, on_read=lambda _: clock.sleep(1))
    kit = kit_on(pool, [a, b, c], mover)
    pool.fill(Ring([a, b, c]), {f"k{n}": b"v" for n in range(1200)})
    kit.handle({}, notice(1, [a, b], "decrease", removing=[c]))
    kit.apply_pending()
    (report,) = kit.last_moves
    assert report.budget_exhausted and report.keys_copied == 100 and report.keys_left > 0
    assert api_confirmed(kit) == [c]
    assert kit.ring.nodes == (a, b)


def test_a_key_written_or_deleted_during_the_move_never_ends_with_its_old_value(pool: Pool) -> None:
    a, b, c = pool.nodes
    old, new = Ring([a, b]), Ring([a, b, c])
    keys = moving_keys(old, new, 300)
    pool.fill(old, {key: b"old" for key in keys})
    kit: FrontendKit
    early: list[str] = []
    late: dict[str, str] = {}

    def between_read_and_add(read: list[bytes]) -> None:
        if not early:
            # Before the copier has read them: a write and a delete through the kit
            assert kit.routing.target == new
            early.extend(key for key in keys if key.encode() not in read)
            assert len(kit.routing.nodes_for_write(early[0])) == 2
            assert kit.cache.set(early[0], b"new", flags=5) and kit.cache.delete(early[1])
        elif not late:
            # After the copier read them, before it adds them: through the kit, and straight to
            # the old owner (a write in flight as the move began, or another process's)
            late.update(
                zip(("written", "deleted", "bypassed"), (key.decode() for key in read[:3]), strict=True)
            )
            assert kit.cache.set(late["written"], b"new") and kit.cache.delete(late["deleted"])
            bypassed = late["bypassed"].encode()
            pool.server(old.node_for(bypassed)).command(b"set %s 0 0 3\r\nnew\r\n" % bypassed)

    kit = kit_on(pool, [a, b], WarmMover(on_read=between_read_and_add))
    kit.handle({}, notice(1, [a, b, c], "increase"))
    kit.apply_pending()
    # Then each key C owns holds what was written last, or nothing: never "old" once rewritten
    assert pool.peek(c, early[0]) == (5, b"new") and pool.peek(c, early[1]) is None
    assert pool.peek(c, late["written"]) == (0, b"new") and pool.peek(c, late["deleted"]) is None
    assert pool.peek(c, late["bypassed"]) is None  # the recheck found its source rewritten: no copy
    assert kit.cache.get(late["deleted"]) is None and kit.cache.get(late["written"]) == b"new"
    # The old owners got the kit's writes too (they served the reads until the switch)
    assert pool.peek(old.node_for(late["written"]), late["written"]) == (0, b"new")
    assert pool.peek(old.node_for(late["deleted"]), late["deleted"]) is None
    (report,) = kit.last_moves
    assert (report.keys_copied, report.keys_skipped) == (295, 5)
    touched = {early[0], early[1], *late.values()}
    assert all(pool.peek(c, key) == (0, b"old") for key in keys if key not in touched)


@pytest.mark.parametrize("follow_seconds", [30, 0])
def test_a_follower_process_writes_to_both_owners_so_the_copy_never_undoes_its_delete(
    pool: Pool, follow_seconds: float
) -> None:
    a, b, c = pool.nodes
    old, new = Ring([a, b]), Ring([a, b, c])
    keys = moving_keys(old, new, 300)
    pool.fill(old, {key: b"old" for key in keys})
    # A follower: another process, reloading cache_list, with no mover of its own
    follower_api, clock = Api(0, [a, b]), FakeClock()
    follower = FrontendKit(follower_api, port=pool.port, follow_seconds=follow_seconds, clock=clock)
    follower.apply_pending()
    touched: list[str] = []

    def follower_reloads_while_the_copy_runs(read: list[bytes]) -> None:
        if touched:
            return
        follower_api.set(1, [a, b, c])
        follower._needs_resync = True  # its periodic reload, now
        follower.apply_pending()
        assert follower.routing.node_for(keys[0]) == c  # it reads by the new ring at once
        touched.extend(key for key in keys if key.encode() not in read)  # not read by the copier yet
        assert follower.cache.delete(touched[0]) and follower.cache.set(touched[1], b"follower")

    mover = kit_on(pool, [a, b], WarmMover(on_read=follower_reloads_while_the_copy_runs))
    mover.handle({}, notice(1, [a, b, c], "increase"))
    mover.apply_pending()
    if follow_seconds:
        # Then the follower's delete and write reached the old owner too: the copier skipped
        # them (and its sweep deleted the write, which it cannot tell from a leftover: a miss)
        assert follower.routing == Routing(new, target=old)
        assert pool.peek(c, touched[0]) is None and pool.peek(c, touched[1]) in (None, (0, b"follower"))
        assert mover.last_moves[0].keys_skipped == 2
        clock.sleep(follow_seconds)
        follower.apply_pending()
        assert follower.routing == Routing(new)
    else:
        # Without the window the follower deleted on C alone, and the copy brought "old" back:
        # the reason followers write to both owners
        assert pool.peek(c, touched[0]) == (0, b"old")


def test_a_scale_in_after_a_scale_out_leaves_no_older_value_on_the_old_owner(pool: Pool) -> None:
    a, b, c = pool.nodes
    kit = kit_on(pool, [a, b], WarmMover())
    two, three = Ring([a, b]), Ring([a, b, c])
    keys = moving_keys(two, three, 200)
    pool.fill(two, {key: b"v1" for key in keys})
    kit.handle({}, notice(1, [a, b, c], "increase"))
    kit.apply_pending()
    # While C owns them, the front-end rewrites some keys and deletes others (on C alone)
    for key in keys[:50]:
        kit.cache.set(key, b"v2")
    for key in keys[50:100]:
        kit.cache.delete(key)
    assert pool.peek(two.node_for(keys[0]), keys[0]) == (0, b"v1")  # A or B still holds v1
    # When C is drained
    kit.handle({}, notice(2, [a, b], "decrease", removing=[c]))
    kit.apply_pending()
    # Then A and B hold what C held: v2, nothing, or v1 for the untouched ones; a key may be
    # missing (memcached's crawler can pass over the item just read above: its add then finds it
    # there, and deletes it), never older
    values = [kit.cache.get(key) for key in keys]
    assert set(values[:50]) <= {b"v2", None} and set(values[50:100]) == {None}
    assert set(values[100:]) <= {b"v1", None}
    assert values.count(None) <= 50 + 2
    increase, decrease = kit.last_moves
    assert decrease.leftovers_deleted == 200 and decrease.keys_copied >= 148
    assert api_confirmed(kit) == [c]
    assert set(kit.cache._clients) == {a, b}  # C's connections closed when it left


def test_a_restarted_kit_moves_off_the_draining_nodes_it_finds_in_cache_list_and_confirms_them(
    pool: Pool,
) -> None:
    a, b, c = pool.nodes
    old = Ring([a, b, c])
    pool.fill(old, {f"k{n}": b"v" for n in range(600)})
    on_c = [f"k{n}" for n in range(600) if old.node_for(f"k{n}") == c]
    api = Api(7, [a, b], draining=[c])
    reads_during_the_move: list[Ring] = []
    kit = FrontendKit(
        api,
        port=pool.port,
        mover=WarmMover(on_read=lambda _: reads_during_the_move.append(kit.ring)),
        confirm_drain=api.confirm,
    )
    kit.apply_pending()
    assert set(reads_during_the_move[0].nodes) == {a, b, c}  # the draining node served until the switch
    assert kit.ring.nodes == (a, b) and kit.applied_sequence == 7
    assert all(kit.cache.get(key) == b"v" for key in on_c)
    assert api.confirmed == [c]
    # A later reload that still lists C draining (the scaler is slow to act) moves nothing again
    kit._needs_resync = True
    kit.apply_pending()
    assert len(kit.last_moves) == 1 and api.confirmed == [c, c]


def test_a_node_that_cannot_be_reached_is_left_out_and_its_drain_still_confirmed(pool: Pool) -> None:
    a, b, c = pool.nodes
    kit = kit_on(pool, [a, b, c], WarmMover(connect_timeout=0.5))
    pool.fill(Ring([a, b, c]), {f"k{n}": b"v" for n in range(300)})
    pool.server(c).stop()
    kit.handle({}, notice(1, [a, b], "decrease", removing=[c]))
    kit.apply_pending()
    (report,) = kit.last_moves
    assert report.unreachable == (c.id,) and report.keys_listed == 0
    assert api_confirmed(kit) == [c] and kit.ring.nodes == (a, b)


# -- confirmations, the worker loop, the API -------------------------------------------------


def test_a_failed_confirmation_is_kept_and_tried_again_until_it_passes_or_the_node_is_back() -> None:
    a, b, c = (CacheNode(f"i-{n}", f"10.0.0.{n}") for n in (1, 2, 3))
    api = Api(0, [a, b, c])
    answers = [OSError("503 Service Unavailable"), None]

    def confirm(node: CacheNode) -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        api.confirm(node)

    kit = FrontendKit(api, confirm_drain=confirm)  # no mover: switch and confirm at once
    kit.apply_pending()
    kit.handle({}, notice(1, [a, b], "decrease", removing=[c]))
    assert kit.apply_pending() == 1
    assert kit.ring.nodes == (a, b) and kit.unconfirmed == (c,) and api.confirmed == []
    assert kit.apply_pending() == 0
    assert kit.unconfirmed == () and api.confirmed == [c]
    # A drained node taken back into service before its confirmation passed is not confirmed
    answers[:] = [OSError("timed out")]
    kit.handle({}, notice(2, [a], "decrease", removing=[b]))
    kit.apply_pending()
    assert kit.unconfirmed == (b,)
    kit.handle({}, notice(3, [a, b], "increase"))
    kit.apply_pending()
    assert kit.unconfirmed == () and api.confirmed == [c]


def test_run_reloads_the_pool_every_resync_seconds_on_the_injected_clock() -> None:
    clock = FakeClock()
    stop = threading.Event()
    fetched_at: list[float] = []
    nodes = [CacheNode("i-1", "10.0.0.1")]

    def fetch_pool() -> dict[str, Any]:
        fetched_at.append(clock.now)
        if len(fetched_at) == 4:
            stop.set()
        if len(fetched_at) == 2:
            raise OSError("the API is down")  # logged; tried again at the next round
        return Api(0, nodes)()

    class Ticking(FakeClock):
        def __call__(self) -> float:
            self.now += 7.0  # every look at the clock is 7 s later
            return self.now

    clock = Ticking()
    kit = FrontendKit(fetch_pool, resync_seconds=30, clock=clock)
    kit.run(stop, poll_seconds=0)
    first, failed, retried, last = fetched_at
    assert 30 <= failed - first < 30 + 2 * 7
    assert retried - failed <= 2 * 7  # a failed reload is not held back for resync_seconds
    assert 30 <= last - retried < 30 + 2 * 7
    assert kit.ring.nodes == tuple(nodes)


class ScalerHandler(BaseHTTPRequestHandler):
    """The two routes a front-end calls, answering what the test sets on the server."""

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, self.headers.get("Authorization"), None))
        self._answer(*self.server.answers.pop(0))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(("POST", self.path, self.headers.get("Authorization"), body))
        self._answer(*self.server.answers.pop(0))

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scaler() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScalerHandler)
    server.requests, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_scaler_api_reads_cache_list_and_confirms_drains_with_the_bearer_token(
    scaler: ThreadingHTTPServer,
) -> None:
    api = ScalerApi(f"http://127.0.0.1:{scaler.server_address[1]}/", "t0k3n", timeout=2)
    node = CacheNode("i-9", "10.0.0.9")
    pool = {"cache_pool_ids": ["i-9"], "nodes": [], "sequence": 3}
    terminated = json.dumps({"terminated": "i-9"}).encode()
    scaler.answers += [(200, json.dumps(pool).encode()), (200, terminated), (404, b"{}"), (409, b"{}")]
    assert api.fetch_pool() == pool
    for _ in range(3):  # 200, then 404 and 409: settled all the same
        api.confirm_drain(node)
    assert (
        scaler.requests
        == [("GET", "/api/scaler/cache_list", "Bearer t0k3n", None)]
        + [("POST", "/api/poolsize/change", "Bearer t0k3n", {"cache_ip": "10.0.0.9"})] * 3
    )
    # A 503 (the scaler has not recorded the decrease as delivered yet) or no JSON: OSError, retried
    scaler.answers += [(503, b'{"Code": "ServiceUnavailable"}'), (200, b"<html>"), (401, b"{}")]
    for call in (lambda: api.confirm_drain(node), api.fetch_pool, api.fetch_pool):
        with pytest.raises(OSError):
            call()
    closed = ScalerApi(f"http://127.0.0.1:{free_port()}", None, timeout=1)
    with pytest.raises(OSError):
        closed.fetch_pool()
    with pytest.raises(OSError):
        closed.confirm_drain(node)


def test_with_an_address_the_copy_reaches_nodes_announced_at_ips_nothing_listens_on(pool: Pool) -> None:
    """The local stack's nodes are announced at EC2's private IPs and listen on loopback ports:
    ``address`` says where each really is, and the copy goes there."""
    a, b, c = pool.nodes
    # Given nodes the scaler announces at 10.0.0.x, which are really the pool's A, B and C
    announced = [CacheNode(node.id, f"10.0.0.{n + 1}", pool.port) for n, node in enumerate(pool.nodes)]
    real = dict(zip(announced, pool.nodes, strict=True))
    x, y, z = announced
    keys = [f"user:{n}" for n in range(600)]
    old, new = Ring([x, y]), Ring([x, y, z])
    # memcached holds each key where the announced ring puts it
    by_owner = {key: real[old.node_for(key)] for key in keys}
    for node in (a, b):
        pool.fill(Ring([node]), {key: value_of(key) for key in keys if by_owner[key] == node})
    mover = WarmMover(address=lambda node: real[node].ip and (real[node].ip, pool.port))
    kit = kit_on(pool, [x, y], mover, Api(0, [x, y]))
    # When Z is announced
    kit.handle({}, notice(1, [x, y, z], "increase"))
    kit.apply_pending()
    # Then the keys Z owns were copied into C, where Z really listens
    moved = [key for key in keys if new.node_for(key) == z]
    assert moved and {key.encode() for key in moved} == set(pool.listing(c))
    (report,) = kit.last_moves
    assert report.keys_copied == len(moved)
