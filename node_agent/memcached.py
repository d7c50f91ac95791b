"""memcached's ``stats`` over the text protocol, one short connection per sample."""

from __future__ import annotations

import socket
from dataclasses import dataclass

# A ``stats`` answer is a few KiB; anything far bigger is not memcached talking.
MAX_STATS_BYTES = 1 << 20


class MemcachedDownError(Exception):
    """memcached could not be reached or did not answer ``stats`` (refused, timed out, cut off)."""


@dataclass(frozen=True)
class Counters:
    """The stats the agent uses: the two counters it publishes, and what tells a restart."""

    pid: int
    uptime: int
    cmd_get: int
    get_hits: int
    curr_items: int = 0
    limit_maxbytes: int = 0
    evictions: int = 0

    @classmethod
    def from_stats(cls, stats: dict[str, str]) -> Counters:
        try:
            return cls(
                pid=int(stats["pid"]),
                uptime=int(stats["uptime"]),
                cmd_get=int(stats["cmd_get"]),
                get_hits=int(stats["get_hits"]),
                curr_items=int(stats.get("curr_items", 0)),
                limit_maxbytes=int(stats.get("limit_maxbytes", 0)),
                evictions=int(stats.get("evictions", 0)),
            )
        except (KeyError, ValueError) as exc:
            raise MemcachedDownError(f"stats answer lacks a counter: {exc}") from exc


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (port 11211 when left out)."""
    host, _, port = text.rpartition(":")
    if not host:
        return text, 11211
    return host, int(port)


def read_stats(address: tuple[str, int], timeout: float = 2.0, extra: bytes = b"") -> dict[str, str]:
    """``stats`` as a dict of strings; ``extra`` is sent after it on the same connection (unread).

    A new connection each time: a restarted memcached is simply the next connection's peer.
    """
    try:
        with socket.create_connection(address, timeout=timeout) as conn:
            conn.sendall(b"stats\r\n" + extra)
            answer = b""
            # The stats end with END; the extra command's one-line reply, if any, follows it, and
            # waiting for it means memcached has executed it before the connection closes.
            while not _complete(answer, bool(extra)):
                chunk = conn.recv(65536)
                if not chunk or len(answer) > MAX_STATS_BYTES:
                    raise MemcachedDownError("stats answer cut off")
                answer += chunk
    except OSError as exc:
        raise MemcachedDownError(f"{address[0]}:{address[1]}: {exc}") from exc
    stats = {}
    for line in answer.partition(b"END\r\n")[0].decode("ascii", "replace").split("\r\n"):
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            stats[parts[1]] = parts[2]
    return stats


def _complete(answer: bytes, extra: bool) -> bool:
    stats, end, after = answer.partition(b"END\r\n")
    return bool(end) and (not extra or after.endswith(b"\r\n"))
