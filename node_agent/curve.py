"""The miss-ratio curve from memcached's own log stream (``watch fetchers mutations``).

What memcached 1.6.18 streams (one line each, on the watching connection):

* a ``get``/``gets``/``gat``/``mg`` key: ``ts=<s>.<us> gid=<n> type=item_get key=<k>
  status=found|not_found clsid=<c> cfd=<fd> size=<n>`` (``<us>`` is not zero-padded);
* a ``set``/``add``/``replace``/``append``/``cas``/``ms``: the same ``item_get`` line for its
  lookup, then at once, same key and ``cfd``, ``type=item_store key=<k> status=stored|
  not_stored|exists cmd=<cmd> ttl=<n> clsid=<c> cfd=<fd> size=<n>``;
* a ``delete``, ``touch`` or ``incr``: an ``item_get`` line and nothing else, so it cannot be
  told from a GET (``watch deletions`` does not exist in 1.6.18);
* lines the watcher's buffer could not hold: ``skipped=<n>`` (and ``log_watcher_skipped``
  grows in ``stats``).

So a GET is an ``item_get`` not followed, on its connection, by an ``item_store`` of the same key.
Each sample ends with a marker on the stats connection (``touch node-agent-mark-<n> 0``: a miss
that counts as a touch, not a GET), and the curve of an interval is cut when the marker comes
through. The share of the interval's ``cmd_get`` seen as GETs in the stream must be within
``[MIN_SHARE, MAX_SHARE]``, with no ``skipped`` line, or no curve is published for it.

The front-end kit's warm moves read with ``gats`` (a touch to memcached, not a GET: ``cmd_get`` is
unmoved) and delete and add, all of which stream ``item_get`` lines like a GET. Its copier opens
each connection with ``touch frontend-kit-copier 0`` and ends it with ``touch
frontend-kit-copier-done 0``: the lines of that connection (``cfd``) in between are left out.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence

from node_agent.counters import IntervalCounts
from node_agent.memcached import Counters, read_stats
from node_agent.stack import FACTORS, NEW_INDEX, StackCurve

LOG = logging.getLogger(__name__)

MARKER_PREFIX = "node-agent-mark-"
# The same keys as frontend_kit/protocol.py's COPIER_HELLO and COPIER_DONE (the agent ships
# without the kit, so it cannot import them; tests/test_node_agent.py checks they agree).
COPIER_KEY = "frontend-kit-copier"
COPIER_DONE_KEY = "frontend-kit-copier-done"
MIN_SHARE = 0.9
MAX_SHARE = 1.1
HIT_INDEX = FACTORS.index("1")


class CurveTally:
    """GETs seen in the stream since the last cut, tallied by the smallest factor that would hit."""

    def __init__(self, capacity: int) -> None:
        self.stack = StackCurve(capacity)
        self.lock = threading.Condition()
        self._pending: dict[str, str] = {}  # cfd → key of an item_get that may be a write's lookup
        self._copiers: set[str] = set()  # cfds of the front-end kit's copier connections
        self.counts = [0] * (NEW_INDEX + 1)
        self.skipped = 0
        self.marker = -1

    def reset(self) -> None:
        """A new stream (memcached restarted, or the watch reconnected): the old stack is not its cache."""
        with self.lock:
            self.stack = StackCurve(self.stack.capacity)
            self._pending.clear()
            self._copiers.clear()

    def feed(self, line: str) -> None:
        """One line of the stream."""
        if line.startswith("skipped="):
            with self.lock:
                self.skipped += int(line.partition("=")[2] or 0)
            return
        fields = dict(part.partition("=")[::2] for part in line.split(" "))
        kind, key, cfd = fields.get("type"), fields.get("key", ""), fields.get("cfd", "")
        with self.lock:
            if cfd in self._copiers:
                if kind == "item_get" and key == COPIER_DONE_KEY:
                    self._copiers.discard(cfd)
                return  # the kit's copier: its reads and writes are not the front-end's GETs
            if kind == "item_store":
                if self._pending.get(cfd) == key:
                    del self._pending[cfd]  # that lookup was the write's, not a GET
            elif kind == "item_get":
                if key == COPIER_KEY:
                    earlier = self._pending.pop(cfd, None)  # the connection that had this cfd before
                    if earlier is not None:
                        self._count(earlier)
                    self._copiers.add(cfd)
                    return
                if key.startswith(MARKER_PREFIX):
                    self._settle_all()
                    self.marker = int(key[len(MARKER_PREFIX) :])
                    self.lock.notify_all()
                    return
                earlier = self._pending.get(cfd)
                if earlier is not None:
                    self._count(earlier)
                self._pending[cfd] = key

    def _settle_all(self) -> None:
        for key in self._pending.values():
            self._count(key)
        self._pending.clear()

    def _count(self, key: str) -> None:
        self.counts[self.stack.access(key)] += 1

    def cut(self) -> tuple[list[int], int]:
        """The tally and skipped lines since the last cut; both start again from zero."""
        with self.lock:
            counts, skipped = self.counts, self.skipped
            self.counts, self.skipped = [0] * (NEW_INDEX + 1), 0
            return counts, skipped


def hits_within(counts: Sequence[int], gets: int, hits: int) -> list[int]:
    """``HitsWithin`` per factor: the stream's hit ratio at each factor applied to ``gets``.

    Factor 1 is memcached's own ``Hits`` (SPEC: ``1`` equals ``Hits``); the others are kept on
    their side of it, so the curve never decreases with the capacity.
    """
    seen = sum(counts)
    cumulative, total = [], 0
    for index in range(len(FACTORS)):
        total += counts[index]
        cumulative.append(round(gets * total / seen) if seen else 0)
    values = [min(value, hits) for value in cumulative[:HIT_INDEX]] + [hits]
    values += [min(gets, max(value, hits)) for value in cumulative[HIT_INDEX + 1 :]]
    return values


class StreamCurve:
    """Follows the watch stream in a thread; the agent's ``read_counters`` and ``curve`` for one node."""

    def __init__(self, address: tuple[str, int], capacity: int, *, marker_wait: float = 1.0) -> None:
        self.address = address
        self.tally = CurveTally(capacity)
        self.marker_wait = marker_wait
        self._sequence = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="memcached-watch", daemon=True)
        self._connected = threading.Event()

    def start(self, timeout: float = 2.0) -> None:
        self._thread.start()
        self._connected.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(self.address, timeout=1) as conn:
                    conn.sendall(b"watch fetchers mutations\r\n")
                    self.tally.reset()
                    buffer = b""
                    while not self._stop.is_set():
                        try:
                            chunk = conn.recv(65536)
                        except TimeoutError:
                            continue
                        if not chunk:
                            break
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        for raw in lines:
                            line = raw.rstrip(b"\r").decode("utf-8", "replace")
                            if line == "OK":
                                self._connected.set()
                            elif line:
                                self.tally.feed(line)
            except OSError as exc:
                LOG.debug("watch stream: %s", exc)
            self._stop.wait(1.0)

    def read_counters(self) -> Counters:
        """``stats``, then the marker that closes the interval in the stream, on one connection."""
        self._sequence += 1
        marker = f"touch {MARKER_PREFIX}{self._sequence} 0\r\n".encode()
        return Counters.from_stats(read_stats(self.address, extra=marker))

    def __call__(self, counts: IntervalCounts | None) -> list[int] | None:
        """The interval's ``HitsWithin``, or None: a baseline, a restart, too few GETs seen."""
        with self.tally.lock:
            self.tally.lock.wait_for(lambda: self.tally.marker >= self._sequence, timeout=self.marker_wait)
            marked = self.tally.marker >= self._sequence
        tallied, skipped = self.tally.cut()
        if counts is None or counts.restarted or not marked:
            return None
        seen = sum(tallied)
        if counts.gets == 0:
            return [0] * len(FACTORS) if seen == 0 else None
        share = seen / counts.gets
        if skipped or not MIN_SHARE <= share <= MAX_SHARE:
            LOG.info("no curve: %d of %d GETs seen, %d lines skipped", seen, counts.gets, skipped)
            return None
        return hits_within(tallied, counts.gets, counts.hits)
