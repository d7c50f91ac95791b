"""The cache tier on real memcached: one process per running pool instance, and its node agent.

Same surface as ``CacheTier`` for the ``Simulation`` (``sync``, ``node_ids``, ``serving_ids``,
``serve``, ``serve_minute``), but each node is a ``memcached`` on a free loopback port, the keys
the front-end routes to it are GET over memcached's text protocol (cache-aside: a miss is SET),
and what a node publishes is measured by a real ``python -m node_agent`` following the stack's
clock file (``node_agent.clock_file``), not by the simulation. The per-minute figures this tier
answers come from memcached's own ``stats`` deltas, so they say what the agents saw.

Processes are stopped (terminate, then kill) when their instance stops running, on ``stop()``,
and at interpreter exit, so an interrupted stack leaves none behind.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from node_agent.clock_file import ack_path, write_atomically
from node_agent.memcached import Counters, read_stats
from sim.hashring import Router, make_router
from sim.tier import NodeMinute, TierMinute

LOG = logging.getLogger(__name__)

HOST = "127.0.0.1"
PROJECT_DIR = Path(__file__).resolve().parent.parent
# With ``-m 2`` memcached keeps about 290 items of this size: near the simulation's 250-item
# nodes, so the simulated day's key sets strain a node as they do there.
VALUE_BYTES = 6_000
MEMORY_MB = 2
# GETs per multi-key ``get``: a batch never repeats a key, so a key asked twice in a row still
# misses once and then hits, as one-by-one GETs would; only the order inside a batch is lost.
BATCH_KEYS = 100
START_TIMEOUT_SECONDS = 15.0
ACK_TIMEOUT_SECONDS = 5.0
STOP_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.01
SOCKET_TIMEOUT_SECONDS = 5.0


class TierError(Exception):
    """A node could not be started or did not answer."""


def memcached_binary() -> str | None:
    return shutil.which("memcached")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Connection:
    """memcached's text protocol on one socket: multi-key ``get``, ``set ... noreply``."""

    def __init__(self, port: int, value_bytes: int = VALUE_BYTES) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT_SECONDS)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.value = b"v" * value_bytes

    def close(self) -> None:
        self.sock.close()

    def serve(self, keys: Sequence[str]) -> int:
        """GET every key in order; each miss is SET before the next batch is asked. The hits, as
        the client saw them (what the application's miss rate is made of)."""
        pending_sets, hits = b"", 0
        for batch in _batches(keys):
            self.sock.sendall(pending_sets + b"get " + " ".join(batch).encode() + b"\r\n")
            found = self._found_keys()
            hits += len(found)
            pending_sets = b"".join(
                b"set %s 0 0 %d noreply\r\n%s\r\n" % (key.encode(), len(self.value), self.value)
                for key in batch
                if key not in found
            )
        if pending_sets:
            # noreply answers nothing; a ``version`` after the sets tells when they are done.
            self.sock.sendall(pending_sets + b"version\r\n")
            self._read_until(lambda buffer: buffer.endswith(b"\r\n"))
        return hits

    def _found_keys(self) -> set[str]:
        answer = self._read_until(lambda buffer: buffer.endswith(b"END\r\n"))
        found, position = set(), 0
        while True:
            line_end = answer.index(b"\r\n", position)
            header = answer[position:line_end].split()
            if header[0] != b"VALUE":
                return found
            found.add(header[1].decode())
            position = line_end + 2 + int(header[3]) + 2

    def _read_until(self, complete: Callable[[bytearray], bool]) -> bytes:
        buffer = bytearray()
        while not complete(buffer):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise TierError("memcached closed the connection")
            buffer += chunk
        return bytes(buffer)


def _batches(keys: Sequence[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    seen: set[str] = set()
    for key in keys:
        if key in seen or len(batch) == BATCH_KEYS:
            yield batch
            batch, seen = [], set()
        batch.append(key)
        seen.add(key)
    if batch:
        yield batch


class _Node:
    """One instance's memcached and its agent (which publishes as ``publish_as``, by default
    the node's own id)."""

    def __init__(
        self,
        node_id: str,
        binary: str,
        clock_file: Path,
        agent_env: Mapping[str, str],
        *,
        memory_mb: int = MEMORY_MB,
        value_bytes: int = VALUE_BYTES,
        memcached_args: Sequence[str] = (),
        publish_as: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.publish_as = publish_as or node_id
        self.value_bytes = value_bytes
        self.port = _free_port()
        command = [binary, "-l", HOST, "-p", str(self.port), "-m", str(memory_mb), "-U", "0", *memcached_args]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # memcached refuses to run as root without it
        self.memcached = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.agent: subprocess.Popen[bytes] | None = None
        self.connection: _Connection | None = None
        self.baseline: Counters | None = None
        self.clock_file = clock_file
        self.agent_env = agent_env

    def wait_for_memcached(self, deadline: float) -> None:
        while True:
            try:
                self.connection = _Connection(self.port, self.value_bytes)
                self.baseline = Counters.from_stats(read_stats((HOST, self.port)))
                return
            except OSError:
                if self.memcached.poll() is not None:
                    raise TierError(
                        f"memcached for {self.node_id} exited with {self.memcached.returncode}"
                    ) from None
                if time.monotonic() > deadline:
                    raise TierError(
                        f"memcached for {self.node_id} did not answer on port {self.port}"
                    ) from None
                time.sleep(POLL_SECONDS)

    def start_agent(self) -> None:
        ack_path(self.clock_file, self.publish_as).unlink(missing_ok=True)
        region = self.agent_env.get("AWS_DEFAULT_REGION") or self.agent_env.get("AWS_REGION") or "us-east-1"
        command = [
            sys.executable,
            "-m",
            "node_agent",
            "--memcached",
            f"{HOST}:{self.port}",
            "--node-id",
            self.publish_as,
            "--region",
            region,
            "--interval",
            "1",  # the retry budget of a publish, in real seconds
            "--clock-file",
            str(self.clock_file),
            "--log-level",
            "WARNING",
        ]
        self.agent = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=dict(self.agent_env), stdout=subprocess.DEVNULL
        )

    def acknowledged(self) -> str | None:
        """What the agent last acknowledged (its start, or a time); None before it has started."""
        try:
            return ack_path(self.clock_file, self.publish_as).read_text()
        except OSError:
            return None

    def sample(self) -> tuple[int, int]:
        """GETs and hits since the last sample, from memcached's own counters."""
        counters = Counters.from_stats(read_stats((HOST, self.port)))
        previous, self.baseline = self.baseline, counters
        if previous is None or counters.pid != previous.pid:
            return counters.cmd_get, counters.get_hits
        return counters.cmd_get - previous.cmd_get, counters.get_hits - previous.get_hits

    def agent_exited(self) -> bool:
        return self.agent is not None and self.agent.poll() is not None

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        for process in (self.agent, self.memcached):
            if process is not None:
                _stop_process(process)
        ack_path(self.clock_file, self.publish_as).unlink(missing_ok=True)


class MemcachedTier:
    """A node is a memcached and an agent from the minute its instance runs: it serves at once
    (its agent's baseline is taken before any GET) and publishes from the next clock time on.

    ``memory_mb``, ``value_bytes`` and ``memcached_args`` size the nodes (how many items one
    holds); ``boot_minutes`` delays a node's start after its instance first runs, as
    ``CacheTier``'s do (the GETs routed to it until then fail at the front-end).
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        workdir: Path | None = None,
        agent_env: Mapping[str, str] | None = None,
        ack_timeout: float = ACK_TIMEOUT_SECONDS,
        memory_mb: int = MEMORY_MB,
        value_bytes: int = VALUE_BYTES,
        memcached_args: Sequence[str] = (),
        boot_minutes: int = 0,
    ) -> None:
        found = binary or memcached_binary()
        if found is None:
            raise TierError("no memcached binary on PATH (apt-get install memcached)")
        self.binary = found
        self._tempdir = None if workdir is not None else tempfile.TemporaryDirectory(prefix="memcached-tier-")
        self.workdir = workdir if workdir is not None else Path(self._tempdir.name)  # type: ignore[union-attr]
        self.clock_file = self.workdir / "clock"
        self.agent_env = dict(os.environ if agent_env is None else agent_env)
        self.ack_timeout = ack_timeout
        self.memory_mb, self.value_bytes = memory_mb, value_bytes
        self.memcached_args = tuple(memcached_args)
        self.boot_minutes = boot_minutes
        self._nodes: dict[str, _Node] = {}
        self._booting: dict[str, int] = {}  # node → the minute its instance was first seen running
        self._router: Router = make_router(())
        atexit.register(self.stop)

    @property
    def node_ids(self) -> list[str]:
        return sorted({*self._nodes, *self._booting})

    @property
    def serving_ids(self) -> list[str]:
        return sorted(self._nodes)

    def port(self, node_id: str) -> int:
        return self._nodes[node_id].port

    def address(self, node_id: str) -> tuple[str, int] | None:
        """Where the node's memcached listens; None while its instance boots or once it is gone."""
        node = self._nodes.get(node_id)
        return None if node is None else (HOST, node.port)

    def sync(
        self, running_ids: Iterable[str], minute: int, publish_as: Mapping[str, str] | None = None
    ) -> None:
        """Start a node per instance running for ``boot_minutes`` (waiting until its agent has
        its baseline), stop those whose instance no longer runs. ``publish_as``: the NodeId a new
        node's agent publishes as, when not the node's own id."""
        running = set(running_ids)
        for node_id in [node_id for node_id in self._nodes if node_id not in running]:
            self._nodes.pop(node_id).stop()
        self._booting = {
            node_id: self._booting.get(node_id, minute) for node_id in running - self._nodes.keys()
        }
        booted = [node_id for node_id, since in self._booting.items() if minute - since >= self.boot_minutes]
        for node_id in booted:
            del self._booting[node_id]
        new = [
            _Node(
                node_id,
                self.binary,
                self.clock_file,
                self.agent_env,
                memory_mb=self.memory_mb,
                value_bytes=self.value_bytes,
                memcached_args=self.memcached_args,
                publish_as=(publish_as or {}).get(node_id),
            )
            for node_id in sorted(booted)
        ]
        self._nodes.update((node.node_id, node) for node in new)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for node in new:
            node.wait_for_memcached(deadline)
            node.start_agent()
        for node in new:
            while node.acknowledged() is None:
                if node.agent is not None and node.agent.poll() is not None:
                    raise TierError(f"the agent for {node.node_id} exited with {node.agent.returncode}")
                if time.monotonic() > deadline:
                    raise TierError(f"the agent for {node.node_id} did not start")
                time.sleep(POLL_SECONDS)

    def serve(self, keys: Iterable[str], routing_ids: Sequence[str] | Router) -> dict[str, tuple[int, int]]:
        served = self.serve_minute(keys, routing_ids)
        return {node_id: (node.gets, node.hits) for node_id, node in served.items()}

    def serve_minute(self, keys: Iterable[str], routing: Sequence[str] | Router) -> TierMinute:
        """GET each key on the node it routes to; per node what memcached counted, and the GETs
        routed to no running node (they fail at the front-end, and no node counts them).

        ``routing``: the node ids the simulation's own ring spreads keys over, or a ``Router``
        (the front-end kit's ring). The answer's ``client_hits`` say what the front-end itself saw
        hit, memcached's counters aside."""
        router = self._router_for(routing)
        buckets: dict[str | None, list[str]] = {}
        for key in keys:
            buckets.setdefault(router.node_for(key), []).append(key)
        failed = sum(len(bucket) for node_id, bucket in buckets.items() if node_id not in self._nodes)
        client_hits = {
            node_id: node.connection.serve([str(key) for key in buckets[node_id]])
            for node_id, node in self._nodes.items()
            if buckets.get(node_id) and node.connection is not None
        }
        counts = {node_id: node.sample() for node_id, node in sorted(self._nodes.items())}
        return TierMinute(
            {node_id: NodeMinute(gets, hits) for node_id, (gets, hits) in counts.items()},
            failed,
            client_hits=client_hits,
        )

    def _router_for(self, routing: Sequence[str] | Router) -> Router:
        if not isinstance(routing, Sequence):
            return routing
        if tuple(routing) != self._router.node_ids:
            self._router = make_router(routing)
        return self._router

    def publish(self, end: datetime) -> list[str]:
        """Move the agents' clock to ``end`` and wait (bounded) until each has published the
        minute before it; the nodes that did not acknowledge in time."""
        write_atomically(self.clock_file, end.isoformat())
        expected = end.isoformat()
        deadline = time.monotonic() + self.ack_timeout
        waiting, exited = set(self._nodes), set()
        while waiting and time.monotonic() < deadline:
            waiting = {node_id for node_id in waiting if self._nodes[node_id].acknowledged() != expected}
            # An agent that has exited (the stack's Ctrl-C reaches its whole process group) will
            # never acknowledge: waiting out the timeout for it only delays the stack's stop.
            gone = {node_id for node_id in waiting if self._nodes[node_id].agent_exited()}
            if gone:
                LOG.warning("no acknowledgement of %s: the agents of %s have exited", expected, sorted(gone))
                waiting -= gone
                exited |= gone
            if waiting:
                time.sleep(POLL_SECONDS)
        if waiting:
            LOG.warning(
                "no acknowledgement of %s within %.0f s from %s", expected, self.ack_timeout, sorted(waiting)
            )
        return sorted(waiting | exited)

    def items(self) -> dict[str, tuple[int, int]]:
        """Per node, memcached's ``curr_items`` and ``limit_maxbytes`` now."""
        return {
            node_id: (counters.curr_items, counters.limit_maxbytes)
            for node_id, node in sorted(self._nodes.items())
            for counters in [Counters.from_stats(read_stats((HOST, node.port)))]
        }

    def stop(self) -> None:
        """Stop every node (safe to call twice; also runs at exit)."""
        nodes, self._nodes, self._booting = list(self._nodes.values()), {}, {}
        for node in nodes:
            node.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
