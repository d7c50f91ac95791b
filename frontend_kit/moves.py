"""Warm moves: before the ring changes, copy each key that changes owner to its new owner.

A move, as ``WarmMover.move`` runs it while the kit routes reads by the old ring and writes to
both owners (``Routing``):

1. **Leftovers.** Every node that gains keys is listed (``lru_crawler metadump all``) and the
   keys it will own but does not own now are deleted from it: they are what it kept from an
   earlier pool (a node taken back from draining, or the old owner of keys a scale-out had moved
   away and a scale-in brings back), possibly older than their owner's. ``add`` never overwrites,
   so without this an older value would survive the copy.
2. **Listing.** Every node that loses keys is listed; a key is copied when that node owns it
   under the old ring and another node owns it under the new one. Hottest first (latest ``la``).
3. **Copy**, in batches (pipelined, one round trip per node each): ``gats`` from the source with
   the item's own expiry (counted by memcached as a touch, never as a GET: see ``protocol``), then,
   holding the kit's lock, ``add`` to the new owner with the same flags and absolute expiry, for
   every key that ``FrontendKit.will_write`` has not marked since the move began. A writer marks
   under that lock before writing to both owners, so either the copy lands first and the write
   overwrites it, or the key is marked and never copied. An item whose ``cas`` changed between the
   listing and the read was written meanwhile: it is deleted from the source instead (``gats``
   just gave it the listed expiry, maybe not its own), and not copied; a key the new owner
   already holds (``NOT_STORED``) without the kit having written it is deleted there. At most
   ``keys_per_second`` keys, until ``budget_seconds`` have passed since the move began.
4. **Hold**, until ``hold_seconds`` have passed since the move began (see "Many processes" in
   ``FrontendKit``): front-ends that follow the pool through ``cache_list`` have reloaded it and
   stopped writing to the old owners by then.
5. **Recheck.** Each copied key's ``cas`` is read again on its source (``me``, memcached's meta
   debug command: no GET, no touch, no LRU bump); a key whose ``cas`` changed or that is gone
   was written or deleted on the source after it was read (by a write in flight when the move
   began, or by another process): its copy is deleted.
6. **Sweep.** The new owners are listed again, and the keys they will own that were neither
   copied nor written through the kit are deleted. Then the kit switches.

memcached's crawler is no snapshot: it passes over an item another thread holds at that moment
(one read twice from the cold end of its LRU, waiting up to a second for its bump, or one the LRU
maintainer is moving: 32 of 100,000 items just written, in one run of ``bench.kit_moves``), so a
listing can miss items. A key a source's listing misses is not copied (a miss later, never an
older value); a leftover must be missed by both listings of its node (steps 1 and 6), while its
key gets no ``add`` (step 3), to survive. The recheck asks for each key rather than list: the
copy's own reads make the items it copied likely to be passed over.

Leftovers, the hold, the recheck and the sweep are not cut short by the budget: they are what
keeps an older value from being served. A node that cannot be reached is left out (logged, and
named in the report); its keys are skipped, not waited for.

Assumed: the nodes' clocks agree (absolute expiries are copied as they are; EC2's time sync
keeps them within milliseconds), and front-ends do not ``touch`` items during a move (a touch
between the listing and the read is undone by the read).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from frontend_kit.protocol import Connection, Listed, Value, valid_key
from frontend_kit.ring import CacheNode, Ring, key_point

log = logging.getLogger(__name__)

BATCH_KEYS = 100
BATCH_BYTES = 1 << 20

Key = str | bytes
OnRead = Callable[[list[bytes]], None]
# Where a node's memcached really listens, when not at its announced IP and port (a test rig, an
# SSH tunnel, the local stack's loopback ports); None while it has no address.
Address = Callable[[CacheNode], "tuple[str, int] | None"]


def key_bytes(key: Key) -> bytes:
    """The key as memcached and the ring see it (``str`` as UTF-8)."""
    return key.encode() if isinstance(key, str) else bytes(key)


class Moving:
    """What a move shares with the front-end's writers: the lock that orders a copy against a
    write, and the keys written or deleted through the kit since the move began.

    ``FrontendKit.will_write`` marks keys here (holding ``lock``) before they are written; the
    copier checks and adds while holding it. ``mark`` takes the lock itself.
    """

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self.lock = lock if lock is not None else threading.Lock()
        self.written: set[bytes] = set()

    def mark(self, keys: Iterable[Key]) -> None:
        with self.lock:
            self.written.update(key_bytes(key) for key in keys)


@dataclass(frozen=True)
class Routing:
    """Where keys go, as one immutable snapshot: the kit replaces it whole, never edits it.

    ``ring`` is where reads go; during a move it is still the old ring, ``target`` the ring being
    moved to, and writes go to the owners under both.
    """

    ring: Ring
    target: Ring | None = None
    moving: Moving | None = field(default=None, compare=False, repr=False)

    def node_for(self, key: Key) -> CacheNode | None:
        """Where ``key`` is read: its owner under ``ring``; None while the pool is unknown."""
        return self.ring.node_for(key)

    def nodes_for_write(self, key: Key) -> tuple[CacheNode, ...]:
        """Where ``key`` is written or deleted: its owner, and during a move its new owner too."""
        owners = [self.ring.node_for(key)]
        if self.target is not None:
            owners.append(self.target.node_for(key))
        return tuple(node for node in dict.fromkeys(owners) if node is not None)

    @property
    def nodes(self) -> frozenset[CacheNode]:
        """Every node this routing may send a request to."""
        return frozenset(self.ring.nodes) | frozenset(self.target.nodes if self.target else ())


@dataclass(frozen=True)
class MoveReport:
    """What one move did. ``keys_copied + keys_skipped + keys_left == keys_listed``."""

    change: str  # "increase" | "decrease"
    sequence: int
    keys_listed: int  # keys found on the sources that change owner
    keys_copied: int
    keys_skipped: int  # written/deleted during the move, already present (add NOT_STORED), or gone on read
    keys_left: int  # not copied when the budget ran out
    seconds: float
    budget_exhausted: bool
    leftovers_deleted: int = 0  # older values the new owners held from an earlier pool
    unreachable: tuple[str, ...] = ()  # ids of the nodes that could not be reached


@dataclass(frozen=True, slots=True)
class _Candidate:
    source: CacheNode
    target: CacheNode
    listed: Listed


@dataclass(frozen=True, slots=True)
class _Copied:
    source: CacheNode
    target: CacheNode
    key: bytes
    cas: int


def parties(old: Ring, new: Ring) -> tuple[list[CacheNode], list[CacheNode]]:
    """The nodes that may lose keys (sources) and those that may gain some (targets).

    On a ketama circle an added node only takes points from the others, and a removed node's
    points only go to the others: so with a node added every old node may lose keys, and with
    a node removed every remaining node may gain some.
    """
    before, after = set(old.nodes), set(new.nodes)
    added, removed = after - before, before - after
    sources = list(old.nodes) if added else [node for node in old.nodes if node in removed]
    targets = list(new.nodes) if removed else [node for node in new.nodes if node in added]
    return sources, targets


class _Bucket:
    """A token bucket on the injected clock: ``take`` sleeps off any debt."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.rate, self.burst, self.clock, self.sleep = rate, burst, clock, sleep
        self.tokens, self.stamp = burst, clock()

    def take(self, count: int) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - count
        self.stamp = now
        if self.tokens < 0:
            self.sleep(-self.tokens / self.rate)


class _Connections:
    """One copier connection per node, opened when first needed; a node that fails is dropped."""

    def __init__(self, connect_timeout: float, io_timeout: float, address: Address | None = None) -> None:
        self.connect_timeout, self.io_timeout = connect_timeout, io_timeout
        self.address = address
        self._open: dict[CacheNode, Connection | None] = {}
        self.unreachable: list[str] = []

    def get(self, node: CacheNode) -> Connection | None:
        if node not in self._open:
            try:
                where = self.address(node) if self.address is not None else None
                if where is None:
                    if self.address is not None or not node.ip:
                        raise OSError("no address for it yet")
                    where = (node.ip, node.port)
                self._open[node] = Connection(
                    where, connect_timeout=self.connect_timeout, io_timeout=self.io_timeout
                )
            except OSError as exc:
                self._failed(node, exc)
        return self._open[node]

    def fail(self, node: CacheNode, exc: OSError) -> None:
        connection = self._open.get(node)
        if connection is not None:
            connection.abort()
        self._failed(node, exc)

    def _failed(self, node: CacheNode, exc: OSError) -> None:
        log.warning("warm move: node %s (%s) left out: %s", node.id, node.ip, exc)
        self._open[node] = None
        if node.id not in self.unreachable:
            self.unreachable.append(node.id)

    def close(self) -> None:
        for connection in self._open.values():
            if connection is not None:
                connection.close()
        self._open.clear()


class WarmMover:
    """Copies the keys that change owner, as the module says; ``move`` is called by the kit's worker.

    ``hold_seconds``: the move rechecks and switches no sooner than this after it began; with
    front-end processes that follow the pool through ``cache_list``, their ``resync_seconds``
    (and ``poll_seconds``) plus their ``follow_seconds``.
    ``io_timeout``: how long one answer from a node may take. ``on_read`` is told each batch's keys
    after they are read and before they are added (tests interleave writes there). ``address``:
    where to reach a node, when not at its announced IP and port. ``relist_seconds``: the pause
    before the sources are listed a second time (0: once), for the keys the first listing missed.
    """

    def __init__(
        self,
        *,
        budget_seconds: float = 20.0,
        keys_per_second: float = 20_000.0,
        connect_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        hold_seconds: float = 0.0,
        io_timeout: float = 5.0,
        on_read: OnRead | None = None,
        address: Address | None = None,
        relist_seconds: float = 0.5,
    ) -> None:
        if keys_per_second <= 0 or budget_seconds < 0 or hold_seconds < 0:
            raise ValueError("keys_per_second must be positive, budget_seconds and hold_seconds not negative")
        self.budget_seconds, self.keys_per_second = budget_seconds, keys_per_second
        self.connect_timeout, self.io_timeout = connect_timeout, io_timeout
        self.hold_seconds = hold_seconds
        self._clock, self._sleep, self._on_read = clock, sleep, on_read
        self.address, self.relist_seconds = address, relist_seconds
        self.batch_keys = max(1, min(BATCH_KEYS, int(keys_per_second)))

    def move(self, old: Ring, new: Ring, moving: Moving, *, change: str, sequence: int) -> MoveReport:
        """Copy from ``old``'s owners to ``new``'s the keys that change owner; what was done."""
        started = self._clock()
        sources, targets = parties(old, new)
        connections = _Connections(self.connect_timeout, self.io_timeout, self.address)
        run = _Run(self, old, new, moving, connections)
        try:
            run.delete_leftovers(targets)
            deadline = started + self.budget_seconds
            candidates = run.list_moving(sources)
            left = run.copy(candidates, deadline)
            if left == 0 and self.relist_seconds > 0 and self._clock() + self.relist_seconds < deadline:
                # memcached's crawler skips an item while a read moves it out of the cold LRU (for
                # up to a second): right after traffic, most of the hottest keys. A second listing
                # once those moves are done finds them.
                self._sleep(self.relist_seconds)
                listed = {(candidate.source, candidate.listed.key) for candidate in candidates}
                more = [c for c in run.list_moving(sources) if (c.source, c.listed.key) not in listed]
                left = run.copy(more, deadline)
                candidates += more
            remaining = started + self.hold_seconds - self._clock()
            if remaining > 0:
                self._sleep(remaining)
            run.recheck()
            run.sweep(targets)
        finally:
            connections.close()
        report = MoveReport(
            change=change,
            sequence=sequence,
            keys_listed=len(candidates),
            keys_copied=len(run.copied),
            keys_skipped=run.skipped,
            keys_left=left,
            seconds=self._clock() - started,
            budget_exhausted=left > 0,
            leftovers_deleted=run.leftovers,
            unreachable=tuple(connections.unreachable),
        )
        log.info(
            "warm move %s #%d: %d keys change owner, %d copied, %d skipped, %d left, %.2f s%s",
            change,
            sequence,
            report.keys_listed,
            report.keys_copied,
            report.keys_skipped,
            report.keys_left,
            report.seconds,
            " (budget spent)" if report.budget_exhausted else "",
        )
        return report


class _Run:
    """One move's state: its connections and its counts."""

    def __init__(self, mover: WarmMover, old: Ring, new: Ring, moving: Moving, connections: _Connections):
        self.mover, self.old, self.new, self.moving = mover, old, new, moving
        self.connections = connections
        self.copied: list[_Copied] = []
        self.skipped = 0
        self.leftovers = 0
        self.keys: dict[bytes, bytes] = {}  # each key as listed → decoded, for the next listings

    def _metadump(self, node: CacheNode) -> list[Listed] | None:
        """The node's items; None when it cannot be reached."""
        connection = self.connections.get(node)
        if connection is None:
            return None
        try:
            return connection.metadump(self.mover._sleep, self.keys)
        except OSError as exc:
            self.connections.fail(node, exc)
            return None

    def _cas(self, node: CacheNode, keys: list[bytes]) -> dict[bytes, int] | None:
        """The cas of each of ``keys`` still on ``node`` (``me``, a batch a round trip); None when
        the node cannot be reached."""
        connection = self.connections.get(node)
        if connection is None:
            return None
        found: dict[bytes, int] = {}
        try:
            for at in range(0, len(keys), BATCH_KEYS * 10):
                found |= connection.cas(keys[at : at + BATCH_KEYS * 10])
        except OSError as exc:
            self.connections.fail(node, exc)
            return None
        return found

    def _delete(self, node: CacheNode, keys: Sequence[bytes]) -> int:
        """Delete ``keys`` from ``node`` but those marked by a writer; the caller holds the lock."""
        keys = [key for key in keys if key not in self.moving.written]
        connection = self.connections.get(node) if keys else None
        if connection is None:
            return 0
        try:
            return connection.delete(keys)
        except OSError as exc:
            self.connections.fail(node, exc)
            return 0

    def delete_leftovers(
        self, targets: Iterable[CacheNode], spare: set[tuple[CacheNode, bytes]] = frozenset()
    ):
        """Delete from each target the keys it will own and does not own now, but ``spare``'s."""
        for target in targets:
            keys = [
                item.key
                for item in self._metadump(target) or ()
                if self.new.node_at(point := key_point(item.key)) == target
                and self.old.node_at(point) != target
                and (target, item.key) not in spare
            ]
            for at in range(0, len(keys), BATCH_KEYS):
                with self.moving.lock:
                    self.leftovers += self._delete(target, keys[at : at + BATCH_KEYS])

    def list_moving(self, sources: Iterable[CacheNode]) -> list[_Candidate]:
        """The keys each source owns now and another node owns under the new ring, hottest first."""
        candidates = []
        for source in sources:
            for item in self._metadump(source) or ():
                point = key_point(item.key)
                target = self.new.node_at(point)
                if target != source and target is not None and self.old.node_at(point) == source:
                    candidates.append(_Candidate(source, target, item))
        candidates.sort(key=lambda candidate: candidate.listed.la, reverse=True)  # stable: ties keep order
        return candidates

    def copy(self, candidates: list[_Candidate], deadline: float) -> int:
        """Copy hottest first until done or ``deadline``; how many candidates were never tried."""
        mover = self.mover
        bucket = _Bucket(mover.keys_per_second, mover.batch_keys, mover._clock, mover._sleep)
        at = 0
        while at < len(candidates) and mover._clock() < deadline:
            batch, size = [], 0
            while at < len(candidates) and len(batch) < mover.batch_keys and size < BATCH_BYTES:
                batch.append(candidates[at])
                size += candidates[at].listed.size
                at += 1
            bucket.take(len(batch))
            if mover._clock() >= deadline:
                at -= len(batch)
                break
            self._copy_batch(batch)
        return len(candidates) - at

    def _copy_batch(self, batch: list[_Candidate]) -> None:
        readable: list[tuple[_Candidate, Value]] = []
        by_source: dict[CacheNode, list[_Candidate]] = defaultdict(list)
        for candidate in batch:
            if valid_key(candidate.listed.key):
                by_source[candidate.source].append(candidate)
            else:
                self.skipped += 1  # a binary-protocol key the text protocol cannot carry
        for source, wanted in by_source.items():
            found = self._read(source, [candidate.listed for candidate in wanted])
            rewritten = []
            for candidate in wanted:
                value = found.get(candidate.listed.key)
                if value is not None and value.cas == candidate.listed.cas:
                    readable.append((candidate, value))
                else:
                    self.skipped += 1  # gone (expired, evicted, deleted), or written since the listing
                    if value is not None:
                        rewritten.append(candidate.listed.key)
            if rewritten:
                # Reading gave them the listed expiry, maybe not the one their writer set: gone is
                # safer. A key the kit marked keeps its value; its new owner has it with the right one.
                with self.moving.lock:
                    self._delete(source, rewritten)
        if self.mover._on_read is not None:
            self.mover._on_read([candidate.listed.key for candidate, _ in readable])
        by_target: dict[CacheNode, list[tuple[_Candidate, Value]]] = defaultdict(list)
        with self.moving.lock:
            for candidate, value in readable:
                if candidate.listed.key in self.moving.written:
                    self.skipped += 1
                else:
                    by_target[candidate.target].append((candidate, value))
            for target, items in by_target.items():
                self._add(target, items)

    def _read(self, source: CacheNode, items: list[Listed]) -> dict[bytes, Value]:
        connection = self.connections.get(source)
        if connection is None:
            return {}
        try:
            return connection.gats(items)
        except OSError as exc:
            self.connections.fail(source, exc)
            return {}

    def _add(self, target: CacheNode, items: list[tuple[_Candidate, Value]]) -> None:
        """``add`` the batch to ``target``; the caller holds the lock."""
        connection = self.connections.get(target)
        answers: list[bytes] = []
        if connection is not None:
            try:
                answers = connection.add([(c.listed.key, value, c.listed.exptime) for c, value in items])
            except OSError as exc:
                self.connections.fail(target, exc)
        present = []
        for index, (candidate, value) in enumerate(items):
            answer = answers[index] if index < len(answers) else b""
            if answer == b"STORED":
                self.copied.append(_Copied(candidate.source, target, candidate.listed.key, value.cas))
                continue
            self.skipped += 1
            if answer == b"NOT_STORED":
                present.append(candidate.listed.key)
            elif answer.startswith(b"SERVER_ERROR"):
                log.warning("warm move: %s refused a copy: %s", target.id, answer.decode())
        # Not marked, yet there: a leftover the listing missed, or a write by a process that
        # already routes by the new ring. Only gone is sure not to be older than the owner's.
        self.leftovers += self._delete(target, present)

    def recheck(self) -> None:
        """Delete the copies whose source item was written or deleted after it was read."""
        by_source: dict[CacheNode, dict[bytes, _Copied]] = defaultdict(dict)
        for copied in self.copied:
            by_source[copied.source][copied.key] = copied
        stale: list[_Copied] = []
        for source, copies in by_source.items():
            current = self._cas(source, list(copies))
            if current is None:
                # It went away: what was copied is what it held last that anybody could read.
                log.warning("warm move: %s not rechecked, its %d copies kept", source.id, len(copies))
                continue
            stale += [copied for key, copied in copies.items() if current.get(key) != copied.cas]
        if not stale:
            return
        by_target: dict[CacheNode, list[bytes]] = defaultdict(list)
        for copied in stale:
            by_target[copied.target].append(copied.key)
        with self.moving.lock:
            # A marked key was written to both owners after its copy: the new owner's value is the latest.
            for target, keys in by_target.items():
                self._delete(target, keys)
        gone = {(copied.target, copied.key) for copied in stale}
        self.copied = [copied for copied in self.copied if (copied.target, copied.key) not in gone]
        self.skipped += len(gone)

    def sweep(self, targets: Iterable[CacheNode]) -> None:
        """The leftovers again, sparing the copies: a second listing finds what the first missed."""
        self.delete_leftovers(targets, spare=frozenset((copied.target, copied.key) for copied in self.copied))
