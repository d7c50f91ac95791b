"""What a warm move costs: ``python -m bench.kit_moves [--keys 20000] [--value-bytes 1000]``.

Starts two memcached processes on loopback (``/usr/bin/memcached``, or ``MEMCACHED``), fills the
first with the keys, then moves from a one-node ring to a two-node ring with the front-end kit's
``WarmMover``, twice on fresh processes: unthrottled, and at the mover's default rate limit
(20,000 keys/s). Prints the keys copied, the seconds, keys per second, the wall and CPU time per
key, and the change in ``cmd_get``/``get_hits`` on both nodes during the move (what the scaler's
miss rate is built from: the copy must leave them alone).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from frontend_kit import CacheNode, Moving, Ring, WarmMover
from frontend_kit.protocol import Connection

MEMCACHED = os.environ.get("MEMCACHED", "/usr/bin/memcached")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def memcached(memory_mb: int) -> Iterator[CacheNode]:
    """A memcached on a free loopback port, killed on exit."""
    port = _free_port()
    command = [MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-m", str(memory_mb), "-t", "2"]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{MEMCACHED} did not start") from None
                time.sleep(0.01)
        yield CacheNode(f"memcached-{port}", "127.0.0.1", port)
    finally:
        process.kill()
        process.wait(timeout=5)


def fill(node: CacheNode, keys: int, value_bytes: int) -> None:
    """``keys`` items of ``value_bytes`` each, pipelined 500 at a time."""
    with socket.create_connection((node.ip, node.port), timeout=10) as conn:
        for start in range(0, keys, 500):
            batch = range(start, min(start + 500, keys))
            values = {n: ((b"%010d" % n) * (value_bytes // 10 + 1))[:value_bytes] for n in batch}
            conn.sendall(
                b"".join(b"set bench:%d 0 3600 %d\r\n%s\r\n" % (n, value_bytes, values[n]) for n in batch)
            )
            answer = b""
            while answer.count(b"\r\n") < len(batch):
                answer += conn.recv(65536)


def counters(node: CacheNode) -> dict[str, int]:
    with Connection((node.ip, node.port), connect_timeout=2, io_timeout=5) as connection:
        stats = connection.stats()
    return {name: int(stats[name]) for name in ("cmd_get", "get_hits", "cmd_touch", "curr_items")}


def run(keys: int, value_bytes: int, keys_per_second: float, label: str) -> None:
    memory_mb = max(64, keys * (value_bytes + 200) // 1_000_000 * 2)
    with memcached(memory_mb) as first, memcached(memory_mb) as second:
        fill(first, keys, value_bytes)
        with Connection((first.ip, first.port), connect_timeout=2, io_timeout=10) as connection:
            listing_started = time.perf_counter()
            listed = len(connection.metadump())
            listing = time.perf_counter() - listing_started
        before = {node: counters(node) for node in (first, second)}
        mover = WarmMover(keys_per_second=keys_per_second, budget_seconds=600)
        cpu = time.process_time()
        report = mover.move(Ring([first]), Ring([first, second]), Moving(), change="increase", sequence=1)
        cpu = time.process_time() - cpu
        after = {node: counters(node) for node in (first, second)}
    copied = max(report.keys_copied, 1)
    print(f"{label}:")
    print(f"  one metadump of {listed:,} items: {listing:.3f} s")
    print(
        f"  {report.keys_copied:,} of {report.keys_listed:,} keys copied ({report.keys_skipped} skipped, "
        f"{report.keys_left} left) in {report.seconds:.2f} s: {report.keys_copied / report.seconds:,.0f}/s"
    )
    print(f"  per key copied: {report.seconds / copied * 1e6:.1f} µs, {cpu / copied * 1e6:.1f} µs of CPU")
    gets = hits = 0
    for name, node in (("source", first), ("target", second)):
        delta = {counter: after[node][counter] - before[node][counter] for counter in after[node]}
        gets, hits = gets + delta["cmd_get"], hits + delta["get_hits"]
        print(
            f"  {name}: cmd_get {delta['cmd_get']:+d}, get_hits {delta['get_hits']:+d}, "
            f"cmd_touch {delta['cmd_touch']:+d}, items {after[node]['curr_items']:,}"
        )
    # The scaler's miss rate is 1 - hits/GETs over the window: the copy shifts it only through these.
    print(f"  GETs and hits the copy added to what the scaler reads: {gets:+d}, {hits:+d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--value-bytes", type=int, default=1_000)
    arguments = parser.parse_args()
    print(f"{arguments.keys:,} keys of {arguments.value_bytes:,} bytes, one node to two, on loopback")
    run(arguments.keys, arguments.value_bytes, 1e12, "unthrottled")
    run(arguments.keys, arguments.value_bytes, 20_000, "at the default 20,000 keys/s")


if __name__ == "__main__":
    main()
