"""Just the part of memcached's text protocol a warm move needs, spoken over a plain socket.

pymemcache 4.0.0 has no ``gat``, and a move must read values without a GET: memcached counts a
``get`` (and a meta ``mg``) in ``cmd_get``/``get_hits``, which the node agent publishes and the
scaler turns into the pool's miss rate. So the copier lists keys with ``lru_crawler metadump all``
(key, absolute expiry, last access, cas), reads them with ``gats <exptime> <key>`` (counted as
``cmd_touch``/``touch_hits``; with the item's own expiry it changes nothing), checks a key's cas
with ``me <key>`` (meta debug: counted nowhere), and writes them with ``add`` and ``delete``
(neither counts as a get). Each command is pipelined: a batch goes out in
one write and its answers are read back in order.

The node agent's miss-ratio curve reads memcached's ``watch fetchers`` stream, where a ``gats``
or a ``delete`` looks like a GET. So every connection opened here first announces itself with
``touch frontend-kit-copier 0`` and, before closing, ``touch frontend-kit-copier-done 0`` (both
misses, counted as touches); the agent ignores the lookups made on that connection in between
(``node_agent/curve.py`` holds the same two keys: change them together).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

# Mirrored in node_agent/curve.py (COPIER_KEY, COPIER_DONE_KEY): the agent must not import the kit.
COPIER_HELLO = "frontend-kit-copier"
COPIER_DONE = "frontend-kit-copier-done"
MAX_KEY_BYTES = 250
# memcached answers ``BUSY`` while another connection's crawl runs; how long to keep asking.
CRAWLER_BUSY_SECONDS = 5.0
_RECV_BYTES = 1 << 18


class ProtocolError(OSError):
    """memcached answered what this module does not expect, or closed the connection.

    An ``OSError``, so that whoever handles a node that cannot be reached handles this alike.
    """


@dataclass(frozen=True, slots=True)
class Listed:
    """One line of ``lru_crawler metadump``: the key (decoded), its expiry and last access (unix
    seconds on the node's clock, ``exp`` -1 for none), its cas and its size in memory."""

    key: bytes
    exp: int
    la: int
    cas: int
    size: int

    @property
    def exptime(self) -> int:
        """The exptime that keeps the item's expiry: memcached takes a value over 30 days as an
        absolute unix time, and 0 as never."""
        return 0 if self.exp < 0 else self.exp


@dataclass(frozen=True, slots=True)
class Value:
    """An item as ``gats`` returns it."""

    flags: int
    data: bytes
    cas: int


def valid_key(key: bytes) -> bool:
    """Whether the text protocol can carry ``key`` (a binary-protocol client may store others)."""
    return 0 < len(key) <= MAX_KEY_BYTES and not any(byte <= 32 or byte == 127 for byte in key)


# What memcached 1.6.18 prints per item (``crawler_metadump`` in its crawler.c).
_METADUMP_ITEM = re.compile(rb"key=(\S+) exp=(-?\d+) la=(\d+) cas=(\d+) fetch=\S+ cls=\d+ size=(\d+)\n")


_ME_CAS = re.compile(rb" cas=(\d+)")


def parse_metadump(text: bytes, keys: dict[bytes, bytes] | None = None) -> list[Listed]:
    """The item lines of a metadump (``END`` excluded); ``ProtocolError`` on a line of another shape.

    ``keys`` remembers each key as listed and decoded: a move lists its nodes more than once.
    """
    keys = {} if keys is None else keys
    listed = []
    for key, exp, la, cas, size in _METADUMP_ITEM.findall(text):
        decoded = keys.get(key)
        if decoded is None:
            decoded = keys[key] = unquote_to_bytes(key) if b"%" in key else key
        listed.append(Listed(decoded, int(exp), int(la), int(cas), int(size)))
    if len(listed) != text.count(b"\n"):
        line = next(line for line in text.split(b"\n") if line and not _METADUMP_ITEM.match(line + b"\n"))
        raise ProtocolError(f"lru_crawler metadump answered {line[:120]!r}")
    return listed


class Connection:
    """One connection to one memcached, announced to its node agent as the copier's.

    Every method raises ``OSError`` (``ProtocolError`` among them) when the node cannot be
    reached or answers out of line; the connection is then of no further use.
    """

    def __init__(self, address: tuple[str, int], *, connect_timeout: float, io_timeout: float) -> None:
        self.address = address
        self._sock = socket.create_connection(address, timeout=connect_timeout)
        self._sock.settimeout(io_timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._at = 0
        try:
            self._touch(COPIER_HELLO)
        except OSError:
            self._sock.close()
            raise

    # -- reading --------------------------------------------------------------------------

    def _fill(self) -> None:
        if self._at > _RECV_BYTES:
            del self._buffer[: self._at]
            self._at = 0
        chunk = self._sock.recv(_RECV_BYTES)
        if not chunk:
            raise ProtocolError(f"{self._name}: memcached closed the connection")
        self._buffer += chunk

    def _line(self) -> bytes:
        """The next line without its ``\\n`` (and ``\\r``: metadump's lines end with a bare ``\\n``)."""
        while (end := self._buffer.find(b"\n", self._at)) < 0:
            self._fill()
        line = bytes(self._buffer[self._at : end])
        self._at = end + 1
        return line[:-1] if line.endswith(b"\r") else line

    def _exactly(self, count: int) -> bytes:
        while len(self._buffer) - self._at < count:
            self._fill()
        data = bytes(self._buffer[self._at : self._at + count])
        self._at += count
        return data

    @property
    def _name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _unexpected(self, line: bytes, command: str) -> ProtocolError:
        return ProtocolError(f"{self._name}: {command} answered {line[:120]!r}")

    # -- commands -------------------------------------------------------------------------

    def _touch(self, key: str) -> None:
        self._sock.sendall(f"touch {key} 0\r\n".encode())
        line = self._line()
        if line not in (b"NOT_FOUND", b"TOUCHED"):
            raise self._unexpected(line, "touch")

    def metadump(
        self, sleep: Callable[[float], None] = time.sleep, keys: dict[bytes, bytes] | None = None
    ) -> list[Listed]:
        """Every item the node holds (``lru_crawler metadump all``), in the crawler's order
        (``keys``: see ``parse_metadump``)."""
        waited = 0.0
        while True:
            self._sock.sendall(b"lru_crawler metadump all\r\n")
            while (end := self._buffer.find(b"\n", self._at)) < 0:
                self._fill()
            first = bytes(self._buffer[self._at : end])
            if first.startswith(b"BUSY") and waited < CRAWLER_BUSY_SECONDS:
                self._at = end + 1
                sleep(0.05)  # another connection's crawl: memcached runs one at a time
                waited += 0.05
                continue
            if not first.startswith(b"key=") and first != b"END\r":
                self._at = end + 1
                raise self._unexpected(first.rstrip(b"\r"), "lru_crawler metadump")
            break
        # The item lines end with a bare \n, the dump with END\r\n on a line of its own.
        if first == b"END\r":
            self._at = end + 1
            return []
        del self._buffer[: self._at]  # from here to END, nothing is consumed: indexes stay put
        self._at = scanned = 0
        while (end := self._buffer.find(b"\nEND\r\n", scanned)) < 0:
            scanned = max(len(self._buffer) - 6, 0)
            self._fill()
        text = bytes(self._buffer[self._at : end + 1])
        self._at = end + len(b"\nEND\r\n")
        return parse_metadump(text, keys)

    def gats(self, items: Sequence[Listed]) -> dict[bytes, Value]:
        """The values of ``items`` that are still there, read with ``gats`` and their own expiry."""
        if not items:
            return {}
        self._sock.sendall(b"".join(b"gats %d %s\r\n" % (item.exptime, item.key) for item in items))
        found: dict[bytes, Value] = {}
        for item in items:
            line = self._line()
            if line.startswith(b"VALUE "):
                _, key, flags, size, cas = line.split(b" ")
                data = self._exactly(int(size) + 2)[:-2]
                found[key] = Value(int(flags), data, int(cas))
                line = self._line()
            if line == b"END":
                continue
            if line.startswith(b"SERVER_ERROR"):
                continue  # this item only (e.g. memory): as if it were gone
            raise self._unexpected(line, f"gats {item.key[:60]!r}")
        return found

    def cas(self, keys: Sequence[bytes]) -> dict[bytes, int]:
        """The cas of each key still there, from ``me`` (meta debug): counted neither as a GET nor
        as a touch, and no LRU bump, unlike any read of the value."""
        if not keys:
            return {}
        self._sock.sendall(b"".join(b"me %s\r\n" % key for key in keys))
        found = {}
        for key in keys:
            line = self._line()
            if line.startswith(b"ME ") and (match := _ME_CAS.search(line)):
                found[key] = int(match[1])
            elif line != b"EN":
                raise self._unexpected(line, f"me {key[:60]!r}")
        return found

    def add(self, items: Sequence[tuple[bytes, Value, int]]) -> list[bytes]:
        """``add`` each (key, value, exptime); memcached's answer to each (``STORED``, ``NOT_STORED``,
        or a ``SERVER_ERROR`` line for an item it could not take)."""
        if not items:
            return []
        parts = []
        for key, value, exptime in items:
            header = b"add %s %d %d %d\r\n" % (key, value.flags, exptime, len(value.data))
            parts += (header, value.data, b"\r\n")
        self._sock.sendall(b"".join(parts))
        answers = [self._line() for _ in items]
        for line in answers:
            if line not in (b"STORED", b"NOT_STORED") and not line.startswith(b"SERVER_ERROR"):
                raise self._unexpected(line, "add")
        return answers

    def delete(self, keys: Iterable[bytes]) -> int:
        """``delete`` each key; how many were there."""
        keys = list(keys)
        if not keys:
            return 0
        self._sock.sendall(b"".join(b"delete %s\r\n" % key for key in keys))
        deleted = 0
        for _ in keys:
            line = self._line()
            if line == b"DELETED":
                deleted += 1
            elif line != b"NOT_FOUND":
                raise self._unexpected(line, "delete")
        return deleted

    def stats(self) -> dict[str, str]:
        """``stats``, as strings."""
        self._sock.sendall(b"stats\r\n")
        stats = {}
        while (line := self._line()) != b"END":
            parts = line.decode("ascii", "replace").split(" ", 2)
            if len(parts) != 3 or parts[0] != "STAT":
                raise self._unexpected(line, "stats")
            stats[parts[1]] = parts[2]
        return stats

    def close(self) -> None:
        """Tell the node agent the copier is done on this connection, then close it."""
        try:
            self._touch(COPIER_DONE)
        except OSError:
            pass  # the agent forgets the connection when its stream restarts
        finally:
            self._sock.close()

    def abort(self) -> None:
        """Close at once, after an error: the connection may be out of step with its answers."""
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
