"""The scaler's notices in (SPEC, "Telling the front-end"), a new ring out, never inside the request.

``handle`` checks and queues a notice and answers at once; ``apply_pending`` (a worker's job)
applies what is queued in ``sequence`` order, moving keys warm when it has a ``WarmMover`` and
confirming drains when it has a ``confirm_drain``. Whenever the kit cannot be sure it has every
notice (a gap in ``sequence``, a number it saw with another content, a lower one it never saw, or
no pool yet) it reloads the pool from ``GET /api/scaler/cache_list`` through the injected
``fetch_pool``; ``run`` also reloads it every ``resync_seconds``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from frontend_kit.moves import Key, MoveReport, Moving, Routing, WarmMover, key_bytes
from frontend_kit.ring import DEFAULT_PORT, CacheNode, Ring

if TYPE_CHECKING:
    from frontend_kit.cache import KitCache

SIGNATURE_HEADER = "X-Scaler-Signature"
CHANGES = ("increase", "decrease")
IN_SERVICE = "in_service"
DRAINING = "draining"
# How many applied sequences are remembered to tell a resend (same content) from a reset.
REMEMBERED_SEQUENCES = 1024
REMEMBERED_MOVES = 32

log = logging.getLogger(__name__)

FetchPool = Callable[[], Mapping[str, Any]]
OnApplied = Callable[["Notice", Ring], None]
ConfirmDrain = Callable[[CacheNode], None]


class NotANoticeError(ValueError):
    """The body is not one of SPEC's notices."""


@dataclass(frozen=True)
class Notice:
    """One notice: its number, what changed, and the in-service nodes after the change."""

    sequence: int
    change: str
    mode: str
    nodes: tuple[CacheNode, ...]
    removing: tuple[CacheNode, ...]
    fingerprint: str  # of the content, key order aside: a resend matches, a reset's notice does not

    @classmethod
    def parse(cls, body: bytes, port: int = DEFAULT_PORT) -> Notice:
        try:
            notice = json.loads(body)
            sequence, change = notice["sequence"], notice["change"]
            ids, ips = notice["cache_pool_ids"], notice["node_ip"]
            if type(sequence) is not int or sequence < 1 or change not in CHANGES:
                raise NotANoticeError(f"sequence {sequence!r}, change {change!r}")
            if not isinstance(ids, list) or not isinstance(ips, list) or len(ids) != len(ips):
                raise NotANoticeError("cache_pool_ids and node_ip must be lists of one length")
            pairs = zip(ids, ips, strict=True)
            nodes = tuple(CacheNode(str(node_id), str(ip) if ip else None, port) for node_id, ip in pairs)
            removing = tuple(
                CacheNode(str(node["id"]), str(node["ip"]) if node.get("ip") else None, port)
                for node in notice.get("removing") or []
            )
            fingerprint = hashlib.sha256(json.dumps(notice, sort_keys=True).encode()).hexdigest()
        except NotANoticeError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise NotANoticeError(f"{type(exc).__name__}: {exc}") from exc
        return cls(sequence, change, str(notice.get("mode", "")), nodes, removing, fingerprint)


def signature(secret: str, body: bytes) -> str:
    """SPEC's header value: ``sha256=`` and the hex HMAC-SHA256 of the raw body under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), "")


class FrontendKit:
    """The front-end's view of the pool: ``routing`` to send keys by, kept current by notices.

    ``fetch_pool`` returns the body of ``GET /api/scaler/cache_list``; ``port`` is the memcached
    port of every node (SPEC's notices carry IPs only). The kit starts out needing a resync: until
    ``apply_pending`` has loaded the pool, ``ring`` routes nowhere rather than to a guess.

    **A change.** With a ``mover``, when the pool changes from one non-empty pool to another, the
    worker publishes ``Routing(old, target=new)`` (reads by the old ring, writes to both owners:
    see ``will_write``), runs the move, then publishes ``Routing(new)``. Without one it switches
    at once (the keys that change owner go cold). Then, with a ``confirm_drain``, it confirms each
    node the change removed (a ``decrease``'s ``removing``), whether or not the move's budget ran
    out, so a drain never waits for the scaler's timeout because of the kit; a confirmation that
    raises ``OSError`` is kept and tried again by every later ``apply_pending`` until it passes or
    the node is no longer draining (back in service, or gone from ``cache_list``).

    **A resync** (a reload from ``cache_list``: on a gap, on a restarted numbering, and every
    ``resync_seconds`` under ``run``) is a change like a notice's, from the current ring to the
    in-service nodes listed, with one addition: ``draining`` nodes the kit has not moved off yet
    (a kit that just started, or that missed the ``decrease``) count as part of the pool being
    left. So a restarted front-end, seeing draining nodes, moves their keys to their new owners
    (reading by the in-service and draining nodes meanwhile), then confirms them; a kit that has
    moved off a node already only confirms it again. Every draining node listed is confirmed:
    the scaler answers a repeated confirmation the same, and a node no longer draining 404 or 409.

    **Many processes.** The scaler has one notify URL, so one process is notified: route that URL
    to a single process (a small sidecar, or one web process on a port of its own), give its kit
    the ``mover`` and ``confirm_drain``, and run its worker (``run``). Every web process (each
    gunicorn worker, say) is a follower: a kit without either, ``follow_seconds`` set, that
    reloads ``cache_list`` every ``resync_seconds`` under ``run``. When a reload changes its pool,
    a follower reads by the new ring at once (keys not copied yet are cold) and for
    ``follow_seconds`` writes and deletes on the old owner too (``Routing(new, target=old)``), so
    the mover's checks see every write made while it copies: a follower's delete can never be
    undone by a copy, nor its write be followed by an older one. With R the followers'
    ``resync_seconds`` (plus their ``poll_seconds``) and B the mover's budget: ``follow_seconds``
    ≥ B plus the time to list the nodes (B + 10 s), and the mover's ``hold_seconds`` ≥ R +
    ``follow_seconds``, so that it rechecks, switches and confirms a drain only once every
    follower has stopped writing to the old owners. A follower that cannot reach the API for
    longer than R lags behind that schedule.
    """

    def __init__(
        self,
        fetch_pool: FetchPool,
        *,
        secret: str | None = None,
        port: int = DEFAULT_PORT,
        on_applied: OnApplied | None = None,
        mover: WarmMover | None = None,
        confirm_drain: ConfirmDrain | None = None,
        resync_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        follow_seconds: float = 0.0,
    ) -> None:
        self._fetch_pool, self._secret, self._port = fetch_pool, secret, port
        self._on_applied = on_applied  # told each notice and the ring it made, in the worker
        self._mover, self._confirm_drain = mover, confirm_drain
        self._resync_seconds, self._clock = resync_seconds, clock
        self._follow_seconds, self._follow_until = follow_seconds, float("-inf")
        self._lock = threading.Lock()  # guards the queue and the numbers below
        self._worker = threading.Lock()  # one apply_pending at a time
        self._routing_lock = threading.Lock()  # orders a move's copies against will_write
        self._queued: dict[int, Notice] = {}
        self._seen: OrderedDict[int, str] = OrderedDict()  # sequence → fingerprint
        self._applied = 0
        self._needs_resync = True
        self._last_resync = float("-inf")
        self._routing = Routing(Ring())
        self._moves: deque[MoveReport] = deque(maxlen=REMEMBERED_MOVES)
        self._to_confirm: dict[CacheNode, None] = {}  # drained nodes not confirmed yet, in order
        self._left: set[CacheNode] = set()  # draining nodes the kit has moved off (or switched away from)
        self._cache: KitCache | None = None
        self._confirmed_this_call: set[CacheNode] = set()  # tried in this apply_pending

    @property
    def routing(self) -> Routing:
        """Where keys go now: one reference, replaced whole, so a reader needs no lock."""
        return self._routing

    @property
    def ring(self) -> Ring:
        """Where reads go (during a move, still the old ring)."""
        return self._routing.ring

    @property
    def applied_sequence(self) -> int:
        """The last notice reflected in ``ring`` (or the ``sequence`` of the last resync)."""
        return self._applied

    @property
    def needs_resync(self) -> bool:
        return self._needs_resync

    @property
    def last_moves(self) -> list[MoveReport]:
        """The last warm moves' reports, oldest first."""
        return list(self._moves)

    @property
    def unconfirmed(self) -> tuple[CacheNode, ...]:
        """Drained nodes whose confirmation has not passed yet."""
        return tuple(self._to_confirm)

    @property
    def cache(self) -> KitCache:
        """A cache over the pool routed by this kit (made on first use)."""
        if self._cache is None:
            from frontend_kit.cache import KitCache

            with self._routing_lock:
                if self._cache is None:
                    self._cache = KitCache(self)
        return self._cache

    # -- in the request ---------------------------------------------------------------------

    def will_write(self, keys: Iterable[Key]) -> Routing:
        """Call before writing or deleting ``keys``, and write by the routing returned (to every
        node of its ``nodes_for_write``). During a move this marks the keys, so the copier never
        copies them afterwards: the new owner keeps what the front-end writes."""
        with self._routing_lock:
            routing = self._routing
            if routing.moving is not None:
                routing.moving.written.update(key_bytes(key) for key in keys)
            return routing

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Check and queue one notice: (HTTP status, small JSON answer). Nothing is applied here."""
        if self._secret:
            given = _header(headers, SIGNATURE_HEADER).encode()
            # Bytes, not str: compare_digest refuses non-ASCII text, and a header may carry any.
            if not hmac.compare_digest(signature(self._secret, body).encode(), given):
                log.warning("notice with a missing or wrong %s refused", SIGNATURE_HEADER)
                return 401, {"error": f"missing or wrong {SIGNATURE_HEADER}"}
        try:
            notice = Notice.parse(body, self._port)
        except NotANoticeError as exc:
            return 400, {"error": f"not a notice: {exc}"}
        with self._lock:
            known = self._seen.get(notice.sequence)
            if known == notice.fingerprint:
                # The scaler resends after losing the record of a delivery: refusing would block it.
                return 200, {"sequence": notice.sequence, "status": "already received"}
            if known is not None or notice.sequence <= self._applied:
                # The same number with other content, or a lower one never seen: the scaler's
                # numbering restarted, and what this kit remembers no longer says what it has.
                log.warning("notice %d out of line: the pool will be reloaded", notice.sequence)
                self._seen.clear()
                self._needs_resync = True
            self._queued[notice.sequence] = notice
            self._remember(notice)
        return 202, {"sequence": notice.sequence, "status": "queued"}

    def _remember(self, notice: Notice) -> None:
        self._seen[notice.sequence] = notice.fingerprint
        self._seen.move_to_end(notice.sequence)
        while len(self._seen) > REMEMBERED_SEQUENCES:
            self._seen.popitem(last=False)

    # -- in the worker ----------------------------------------------------------------------

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """The worker: ``apply_pending`` every ``poll_seconds``, a reload from ``cache_list`` every
        ``resync_seconds``, until ``stop`` is set. An error is logged and the loop goes on (what
        failed is tried again next round): a worker that died would freeze the ring."""
        while not stop.is_set():
            if self._clock() - self._last_resync >= self._resync_seconds:
                with self._lock:
                    self._needs_resync = True
            try:
                self.apply_pending()
            except OSError as exc:
                log.warning("front-end kit: %s (tried again in %s s)", exc, poll_seconds)
            except Exception:
                log.exception("front-end kit: applying the pool's changes failed")
            stop.wait(poll_seconds)

    def apply_pending(self) -> int:
        """Apply what is queued, in ``sequence`` order, reloading the pool first when a notice is
        missing; then try the drain confirmations still owed. The number of notices applied.

        One reload per call: should the scaler's ``sequence`` still lag the queue after it, the
        queued notices are applied anyway (each carries the whole in-service list, newer than the
        reload), rather than asking again and again. A failing ``fetch_pool`` raises and leaves the
        queue and the resync for the next call."""
        applied, resynced = 0, False
        with self._worker:
            self._confirmed_this_call = set()
            routing = self._routing
            if routing.moving is None and routing.target is not None and self._clock() >= self._follow_until:
                self._publish(Routing(routing.ring))  # the follower's window is over
            try:
                while True:
                    with self._lock:
                        resync, self._needs_resync = self._needs_resync, False
                    if resync:
                        try:
                            self._resync()
                        except BaseException:
                            with self._lock:
                                self._needs_resync = True
                            raise
                        resynced = True
                    with self._lock:
                        ready = sorted(self._queued)
                        if not ready:
                            return applied
                        notice = self._queued.pop(ready[0])
                        if notice.sequence <= self._applied:
                            continue  # the reload already reflects it
                        if notice.sequence != self._applied + 1 and not resynced:
                            log.warning("notices %d..%d missing", self._applied + 1, notice.sequence - 1)
                            self._queued[notice.sequence] = notice
                            self._needs_resync = True
                            continue
                    ring = Ring(notice.nodes)
                    self._change(self.ring, ring, notice.change, notice.sequence, notice.removing)
                    with self._lock:
                        self._applied = notice.sequence
                    if self._on_applied is not None:
                        self._on_applied(notice, ring)
                    applied += 1
            finally:
                self._confirm_drains()

    def _resync(self) -> None:
        self._last_resync = self._clock()
        answer = self._fetch_pool()  # outside the lock: requests go on being queued meanwhile
        sequence = int(answer.get("sequence") or 0)
        listed = sorted(answer.get("nodes") or [], key=lambda node: node.get("index", 0))
        in_service = [self._node(node) for node in listed if node.get("state") == IN_SERVICE]
        draining = [self._node(node) for node in listed if node.get("state") == DRAINING]
        new, old = Ring(in_service), self.ring
        # Draining nodes this kit never moved off (a missed decrease) are part of the pool being
        # left; a kit with no pool yet (just started) takes the listed pool, draining nodes in it.
        unmoved = [node for node in draining if node not in self._left and node not in old.nodes]
        if not old.nodes:
            old = Ring(self._node(node) for node in listed if node.get("state") in (IN_SERVICE, DRAINING))
        elif unmoved:
            old = Ring([*old.nodes, *unmoved])
        # What cache_list no longer shows draining needs no confirmation, and is not left again.
        still = set(draining)
        self._to_confirm = {node: None for node in self._to_confirm if node in still}
        self._left &= still
        change = "decrease" if set(old.nodes) - set(new.nodes) else "increase"
        self._change(old, new, change, sequence, tuple(draining))
        with self._lock:
            self._applied = sequence
        log.info("pool reloaded at sequence %d: %d nodes in service", sequence, len(new))

    def _node(self, listed: Mapping[str, Any]) -> CacheNode:
        return CacheNode(str(listed["id"]), listed.get("ip") or None, self._port)

    def _change(
        self, old: Ring, new: Ring, change: str, sequence: int, removing: tuple[CacheNode, ...]
    ) -> None:
        """Go from ``old`` to ``new`` (warm with a mover), then confirm what was removed."""
        changed = bool(old.nodes) and bool(new.nodes) and set(old.nodes) != set(new.nodes)
        if self._mover is not None:
            if changed:
                moving = Moving(self._routing_lock)
                self._publish(Routing(old, target=new, moving=moving))
                try:
                    self._moves.append(self._mover.move(old, new, moving, change=change, sequence=sequence))
                except Exception:
                    log.exception("warm move for notice %d failed: switching without it", sequence)
            self._publish(Routing(new))
        elif set(new.nodes) == set(self.ring.nodes):
            pass  # nothing routes differently (and a follower's window runs on)
        elif changed and self._follow_seconds > 0:
            # A follower: read by the new ring, write to both owners while the mover may copy.
            self._publish(Routing(new, target=old))
            self._follow_until = self._clock() + self._follow_seconds
        else:
            self._publish(Routing(new))
        staying = set(new.nodes)
        removed = [node for node in (*old.nodes, *removing) if node not in staying]
        self._left = (self._left | set(removed)) - staying
        for node in self._to_confirm.keys() & staying:
            del self._to_confirm[node]  # back in service: nothing to confirm
        if self._confirm_drain is not None:
            for node in removing:
                if node in staying:
                    continue
                if node.ip:
                    self._to_confirm[node] = None
                else:
                    log.warning("draining node %s has no IP: it cannot be confirmed", node.id)
            self._confirm_drains()

    def _publish(self, routing: Routing) -> None:
        with self._routing_lock:
            self._routing = routing  # one reference replaced: readers need no lock
        if self._cache is not None:
            self._cache.prune(routing)

    def _confirm_drains(self) -> None:
        """Try each confirmation owed, once per ``apply_pending``."""
        if self._confirm_drain is None:
            return
        for node in list(self._to_confirm):
            if node in self._confirmed_this_call:
                continue
            self._confirmed_this_call.add(node)
            try:
                self._confirm_drain(node)
            except OSError as exc:
                log.warning(
                    "confirming the drain of %s (%s) failed, tried again later: %s", node.id, node.ip, exc
                )
                continue
            self._to_confirm.pop(node, None)
            log.info("drain of %s (%s) confirmed", node.id, node.ip)
