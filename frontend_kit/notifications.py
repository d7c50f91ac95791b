"""The scaler's notices in (SPEC, "Telling the front-end"), a new ring out, never inside the request.

``handle`` checks and queues a notice and answers at once; ``apply_pending`` (a worker's job)
applies what is queued in ``sequence`` order. Whenever the kit cannot be sure it has every notice
(a gap in ``sequence``, a number it saw with another content, a lower one it never saw, or no pool
yet) it reloads the pool from ``GET /api/scaler/cache_list`` through the injected ``fetch_pool``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from frontend_kit.ring import DEFAULT_PORT, CacheNode, Ring

SIGNATURE_HEADER = "X-Scaler-Signature"
CHANGES = ("increase", "decrease")
IN_SERVICE = "in_service"
# How many applied sequences are remembered to tell a resend (same content) from a reset.
REMEMBERED_SEQUENCES = 1024

log = logging.getLogger(__name__)

FetchPool = Callable[[], Mapping[str, Any]]
OnApplied = Callable[["Notice", Ring], None]


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
    """The front-end's view of the pool: ``ring`` to route by, kept current by notices.

    ``fetch_pool`` returns the body of ``GET /api/scaler/cache_list``; ``port`` is the memcached
    port of every node (SPEC's notices carry IPs only). The kit starts out needing a resync: until
    ``apply_pending`` has loaded the pool, ``ring`` routes nowhere rather than to a guess.
    """

    def __init__(
        self,
        fetch_pool: FetchPool,
        *,
        secret: str | None = None,
        port: int = DEFAULT_PORT,
        on_applied: OnApplied | None = None,
    ) -> None:
        self._fetch_pool, self._secret, self._port = fetch_pool, secret, port
        self._on_applied = on_applied  # told each notice and the ring it made, in the worker
        self._lock = threading.Lock()  # guards the queue and the numbers below
        self._worker = threading.Lock()  # one apply_pending at a time
        self._queued: dict[int, Notice] = {}
        self._seen: OrderedDict[int, str] = OrderedDict()  # sequence → fingerprint
        self._applied = 0
        self._needs_resync = True
        self.ring = Ring()

    @property
    def applied_sequence(self) -> int:
        """The last notice reflected in ``ring`` (or the ``sequence`` of the last resync)."""
        return self._applied

    @property
    def needs_resync(self) -> bool:
        return self._needs_resync

    # -- in the request ---------------------------------------------------------------------

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

    def apply_pending(self) -> int:
        """Apply what is queued, in ``sequence`` order, reloading the pool first when a notice is
        missing; the number of notices applied.

        One reload per call: should the scaler's ``sequence`` still lag the queue after it, the
        queued notices are applied anyway (each carries the whole in-service list, newer than the
        reload), rather than asking again and again. A failing ``fetch_pool`` raises and leaves the
        queue and the resync for the next call."""
        applied, resynced = 0, False
        with self._worker:
            while True:
                if self._needs_resync:
                    self._resync()
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
                    self.ring = Ring(notice.nodes)  # one reference replaced: readers need no lock
                    self._applied = notice.sequence
                    ring = self.ring
                if self._on_applied is not None:
                    self._on_applied(notice, ring)
                applied += 1

    def _resync(self) -> None:
        answer = self._fetch_pool()  # outside the lock: requests go on being queued meanwhile
        sequence = int(answer.get("sequence") or 0)
        listed = sorted(
            (node for node in answer.get("nodes") or [] if node.get("state") == IN_SERVICE),
            key=lambda node: node.get("index", 0),
        )
        ring = Ring(CacheNode(str(node["id"]), node.get("ip") or None, self._port) for node in listed)
        with self._lock:
            self.ring, self._applied, self._needs_resync = ring, sequence, False
        log.info("pool reloaded at sequence %d: %d nodes in service", sequence, len(ring))
