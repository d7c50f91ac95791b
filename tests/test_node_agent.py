"""The node agent against a real memcached on loopback, a fake clock, and CloudWatch fakes or moto."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from node_agent import clock_file
from node_agent.__main__ import parse_args
from node_agent.agent import Agent, MetricNames
from node_agent.imds import InstanceMetadata, MetadataError
from node_agent.memcached import Counters, MemcachedDownError, read_stats
from node_agent.publisher import Publisher

MEMCACHED = "/usr/bin/memcached"
NODE = "i-0123456789abcdef0"
START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

needs_memcached = pytest.mark.skipif(
    not os.access(MEMCACHED, os.X_OK), reason=f"{MEMCACHED} is not installed (apt-get install memcached)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Memcached:
    """A real memcached process on a loopback port; ``restart`` keeps the port, changes the pid."""

    def __init__(self, memory_mb: int = 2, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host, self.port = host, port or free_port()
        self.memory_mb = memory_mb
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> None:
        # One worker thread: the watch stream then keeps the order the commands were made in.
        command = [MEMCACHED, "-u", "nobody", "-l", self.host, "-p", str(self.port), "-t", "1"]
        command += ["-m", str(self.memory_mb)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(self.address, timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("memcached did not start") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def command(self, payload: bytes, replies: int = 1) -> bytes:
        """Send ``payload`` on a new connection; read until ``replies`` answers have ended."""
        ends = (b"END\r\n", b"STORED\r\n", b"DELETED\r\n", b"NOT_FOUND\r\n", b"TOUCHED\r\n")
        with socket.create_connection(self.address, timeout=2) as conn:
            conn.sendall(payload)
            answer = b""
            while sum(answer.count(end) for end in ends) < replies:
                chunk = conn.recv(65536)
                assert chunk, "memcached closed the connection"
                answer += chunk
        return answer

    def set(self, *keys: str) -> None:
        self.command(b"".join(b"set %s 0 0 1\r\nx\r\n" % key.encode() for key in keys), len(keys))

    def get(self, *keys: str) -> None:
        """One ``get`` per key (memcached counts each key of a ``get`` as one GET request)."""
        self.command(b"".join(b"get %s\r\n" % key.encode() for key in keys), len(keys))


@pytest.fixture
def memcached() -> Iterator[Memcached]:
    if not os.access(MEMCACHED, os.X_OK):
        pytest.skip(f"{MEMCACHED} is not installed (apt-get install memcached)")
    server = Memcached()
    server.start()
    yield server
    server.stop()


class Clock:
    """The agent's ``now`` and ``sleep``: sleeping moves time on, instantly."""

    def __init__(self, start: datetime = START) -> None:
        self.time = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += timedelta(seconds=seconds)


class FakeCloudWatch:
    """Records every PutMetricData; the next ``failures`` calls raise ``error`` instead."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.failures = 0
        self.error: Exception = ClientError(
            {"Error": {"Code": "ServiceUnavailable"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
            "PutMetricData",
        )
        self.attempts = 0

    def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        assert Namespace == "Memcache"
        self.calls.append(list(MetricData))

    def values(self, metric: str) -> list[tuple[datetime, float]]:
        """Every (timestamp, value) of ``metric`` that arrived, in order."""
        return [
            (d["Timestamp"], d["Value"]) for call in self.calls for d in call if d["MetricName"] == metric
        ]


def make_agent(
    server: Memcached, clock: Clock, client: Any, interval: float = 10, backlog: int = 30
) -> Agent:
    publisher = Publisher(lambda: client, "Memcache", now=clock.now, sleep=clock.sleep, max_intervals=backlog)
    return Agent(
        read_counters=lambda: Counters.from_stats(read_stats(server.address, timeout=1)),
        publisher=publisher,
        node_id=NODE,
        names=MetricNames(),
        interval_seconds=interval,
        now=clock.now,
        sleep=clock.sleep,
    )


def step(agent: Agent, clock: Clock, seconds: float = 10) -> list[dict[str, Any]]:
    clock.time += timedelta(seconds=seconds)
    return agent.step()


def figures(datums: list[dict[str, Any]]) -> dict[str, float]:
    return {d["MetricName"]: d["Value"] for d in datums}


# --- deltas of real traffic -------------------------------------------------------------------


def test_publishes_the_interval_deltas_of_real_gets_then_zeros_when_idle(memcached: Memcached) -> None:
    # Given an agent whose first sample is only a baseline
    clock, cloudwatch = Clock(), FakeCloudWatch()
    agent = make_agent(memcached, clock, cloudwatch)
    memcached.set("a", "b")
    assert agent.step() == []
    # When one interval sees 3 hits and 2 misses, and the next nothing
    memcached.get("a", "b", "a", "nope", "nada")
    busy = step(agent, clock)
    idle = step(agent, clock)
    # Then each interval publishes its own figures, zeros included, stamped with its end
    assert figures(busy) == {"GetRequests": 5.0, "Hits": 3.0}
    assert figures(idle) == {"GetRequests": 0.0, "Hits": 0.0}
    assert cloudwatch.values("GetRequests") == [
        (START + timedelta(seconds=10), 5.0),
        (START + timedelta(seconds=20), 0.0),
    ]
    assert all(d["Dimensions"] == [{"Name": "NodeId", "Value": NODE}] and d["Unit"] == "Count" for d in busy)


def test_a_restart_mid_run_publishes_the_new_process_life_never_a_negative_or_a_double(
    memcached: Memcached,
) -> None:
    clock, cloudwatch = Clock(), FakeCloudWatch()
    agent = make_agent(memcached, clock, cloudwatch)
    memcached.set("k")
    agent.step()
    memcached.get("k", "k", "k", "k", "miss")
    assert figures(step(agent, clock)) == {"GetRequests": 5.0, "Hits": 4.0}
    old_pid = agent.baseline.pid if agent.baseline else None
    # When memcached restarts in the middle of an interval (3 GETs before, 2 misses after)
    memcached.get("k", "k", "k")
    memcached.restart()
    memcached.get("k", "other")
    straddling = step(agent, clock)
    # Then that interval publishes what the new process counted since it started
    assert agent.baseline is not None and agent.baseline.pid != old_pid
    assert figures(straddling) == {"GetRequests": 2.0, "Hits": 0.0}
    memcached.set("k")
    memcached.get("k")
    assert figures(step(agent, clock)) == {"GetRequests": 1.0, "Hits": 1.0}
    values = [value for _, value in cloudwatch.values("GetRequests") + cloudwatch.values("Hits")]
    assert min(values) >= 0


def test_stats_reset_is_a_new_baseline_not_a_negative(memcached: Memcached) -> None:
    clock, cloudwatch = Clock(), FakeCloudWatch()
    agent = make_agent(memcached, clock, cloudwatch)
    memcached.get("x", "y", "z")
    agent.step()
    memcached.command(b"stats reset\r\nget q\r\n")
    assert figures(step(agent, clock)) == {"GetRequests": 1.0, "Hits": 0.0}


def test_memcached_down_publishes_nothing_and_is_tried_again_each_interval(memcached: Memcached) -> None:
    clock, cloudwatch = Clock(), FakeCloudWatch()
    agent = make_agent(memcached, clock, cloudwatch)
    agent.step()
    memcached.stop()
    assert step(agent, clock) == [] and step(agent, clock) == []
    assert cloudwatch.calls == []
    with pytest.raises(MemcachedDownError):
        read_stats(memcached.address, timeout=1)
    # When it comes back (a new process), publishing resumes with what it counted
    memcached.start()
    memcached.get("back")
    assert figures(step(agent, clock)) == {"GetRequests": 1.0, "Hits": 0.0}
    assert len(cloudwatch.calls) == 1


# --- PutMetricData failing --------------------------------------------------------------------


def test_a_failing_put_is_retried_within_the_interval_then_kept_and_sent_with_the_next(
    memcached: Memcached,
) -> None:
    clock, cloudwatch = Clock(), FakeCloudWatch()
    agent = make_agent(memcached, clock, cloudwatch)
    agent.step()
    # Given CloudWatch failing for longer than one interval's budget
    cloudwatch.failures = 100
    memcached.get("a", "b")
    at_first = clock.time + timedelta(seconds=10)
    step(agent, clock)
    # Then the agent retried with backoff, stopped within the budget, and kept the interval
    assert cloudwatch.attempts > 1 and cloudwatch.calls == []
    assert clock.time < at_first + timedelta(seconds=8)
    assert clock.slept == sorted(clock.slept)
    assert len(agent.publisher.backlog) == 1
    # When CloudWatch recovers
    cloudwatch.failures = 0
    memcached.get("c", "d", "e")
    clock.time = at_first + timedelta(seconds=10)
    agent.step()
    # Then one call carries both intervals, each once, with its own timestamp
    (call,) = cloudwatch.calls
    assert cloudwatch.values("GetRequests") == [(at_first, 2.0), (at_first + timedelta(seconds=10), 3.0)]
    assert len(call) == 4 and not agent.publisher.backlog
    assert figures(step(agent, clock)) == {"GetRequests": 0.0, "Hits": 0.0}
    assert sum(value for _, value in cloudwatch.values("GetRequests")) == 5.0


def test_the_backlog_keeps_the_last_intervals_only(memcached: Memcached) -> None:
    # Given a backlog of 3 intervals and CloudWatch timing out for 5 intervals
    clock, cloudwatch = Clock(), FakeCloudWatch()
    agent = make_agent(memcached, clock, cloudwatch, backlog=3)
    agent.step()
    cloudwatch.failures = 10_000
    cloudwatch.error = ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
    stamps = []
    for gets in range(1, 6):
        memcached.get(*["k"] * gets)
        clock.time = START + timedelta(seconds=10 * gets)
        stamps.append(clock.time)
        agent.step()
    assert agent.publisher.dropped_intervals == 2
    # When it recovers, the sixth interval joins the backlog, which pushes out one more
    cloudwatch.failures = 0
    clock.time = START + timedelta(seconds=60)
    agent.step()
    # Then the last three intervals arrive, once each
    assert agent.publisher.dropped_intervals == 3
    assert cloudwatch.values("GetRequests") == [(stamps[3], 4.0), (stamps[4], 5.0), (clock.time, 0.0)]


def test_an_error_that_cannot_pass_is_dropped_not_retried_for_ever(memcached: Memcached) -> None:
    clock, cloudwatch = Clock(), FakeCloudWatch()
    agent = make_agent(memcached, clock, cloudwatch)
    agent.step()
    cloudwatch.failures = 1
    cloudwatch.error = ClientError(
        {"Error": {"Code": "InvalidParameterValue"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "PutMetricData",
    )
    step(agent, clock)
    assert cloudwatch.attempts == 1 and not agent.publisher.backlog
    step(agent, clock)
    assert len(cloudwatch.calls) == 1


def test_run_samples_on_a_fixed_grid(memcached: Memcached) -> None:
    clock, cloudwatch = Clock(), FakeCloudWatch()
    make_agent(memcached, clock, cloudwatch, interval=5).run(intervals=4)
    assert [stamp for stamp, _ in cloudwatch.values("GetRequests")] == [
        START + timedelta(seconds=5 * n) for n in (1, 2, 3)
    ]
    assert clock.slept == [5.0, 5.0, 5.0]


# --- IMDSv2 -----------------------------------------------------------------------------------


# --- an external clock (the local stack's simulated minutes) ----------------------------------


def wait_for_ack(path: Path, expected: str, timeout: float = 5.0) -> None:
    """Poll the acknowledgement file (the agent runs in a thread) until it holds ``expected``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text() == expected:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never held {expected!r}")


def test_the_clock_file_publishes_each_new_time_inside_the_minute_before_it_and_acknowledges(
    memcached: Memcached, tmp_path: Path
) -> None:
    # Given an agent following a clock file that already holds T0 (its baseline's time)
    clock, cloudwatch = Clock(), FakeCloudWatch()
    agent = make_agent(memcached, clock, cloudwatch)
    clock_path, stop = tmp_path / "clock", threading.Event()
    t0 = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    clock_path.write_text(t0.isoformat())
    memcached.get("served-before-the-baseline")
    follower = threading.Thread(
        target=clock_file.follow,
        args=(agent, clock_path),
        kwargs={"sleep": time.sleep, "poll_seconds": 0.01, "stopped": stop.is_set},
    )
    follower.start()
    try:
        ack = clock_file.ack_path(clock_path, NODE)
        wait_for_ack(ack, t0.isoformat())
        assert cloudwatch.calls == [], "the time found at start is the baseline's: nothing to publish"
        # When a minute of GETs is served and the clock moves to T1, then to T2 with nothing served
        memcached.set("a")
        memcached.get("a", "a", "b")
        t1 = t0 + timedelta(minutes=1)
        clock_file.write_atomically(clock_path, t1.isoformat())
        wait_for_ack(ack, t1.isoformat())
        t2 = t1 + timedelta(minutes=1)
        clock_file.write_atomically(clock_path, t2.isoformat())
        wait_for_ack(ack, t2.isoformat())
    finally:
        stop.set()
        follower.join(5)
    # Then each time published its minute's delta, stamped inside [T - 60 s, T), zeros included
    assert cloudwatch.values("GetRequests") == [
        (t1 - timedelta(seconds=30), 3.0),
        (t2 - timedelta(seconds=30), 0.0),
    ]
    assert cloudwatch.values("Hits") == [(t1 - timedelta(seconds=30), 2.0), (t2 - timedelta(seconds=30), 0.0)]


def test_a_missing_or_garbled_clock_file_is_no_time_yet(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    assert clock_file.read_clock(path) is None
    path.write_text("not a time")
    assert clock_file.read_clock(path) is None
    path.write_text("2026-01-01T00:01:00")
    assert clock_file.read_clock(path) == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


def test_the_command_line_takes_a_clock_file_and_keeps_the_wall_clock_without_it() -> None:
    assert parse_args(["--node-id", NODE], {}).clock_file is None
    args = parse_args(["--node-id", NODE], {"NODE_AGENT_CLOCK_FILE": "/tmp/clock"})
    assert args.clock_file == Path("/tmp/clock")


class MetadataHandler(BaseHTTPRequestHandler):
    """IMDSv2 as EC2 serves it with HttpTokens=required: no token, no metadata."""

    TOKEN = "token-abc"
    seen: list[str] = []

    def do_PUT(self) -> None:
        self.seen.append(f"PUT {self.path}")
        if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._answer(400, "")
            return
        self._answer(200, self.TOKEN)

    def do_GET(self) -> None:
        self.seen.append(f"GET {self.path}")
        if self.headers.get("X-aws-ec2-metadata-token") != self.TOKEN:
            self._answer(401, "")
            return
        answers = {"/latest/meta-data/instance-id": NODE, "/latest/meta-data/placement/region": "eu-west-3"}
        self._answer(200, answers[self.path]) if self.path in answers else self._answer(404, "")

    def _answer(self, status: int, body: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[str]:
    MetadataHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetadataHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_imdsv2_asks_for_a_token_before_reading_the_instance_id_and_region(imds: str) -> None:
    metadata = InstanceMetadata(imds, timeout=2)
    assert metadata.instance_id() == NODE
    assert metadata.region() == "eu-west-3"
    assert MetadataHandler.seen == [
        "PUT /latest/api/token",
        "GET /latest/meta-data/instance-id",
        "PUT /latest/api/token",
        "GET /latest/meta-data/placement/region",
    ]


def test_imds_refuses_a_get_without_the_token_and_the_agent_says_so(imds: str) -> None:
    with pytest.raises(MetadataError, match="401"):
        InstanceMetadata(imds, timeout=2).get("instance-id", token="wrong")
    with pytest.raises(MetadataError):
        InstanceMetadata(f"http://127.0.0.1:{free_port()}", timeout=1).instance_id()


def test_the_command_line_falls_back_on_the_environment() -> None:
    args = parse_args(
        [], {"NODE_AGENT_MEMCACHED": "10.0.0.5:11311", "NODE_ID": "i-1", "AWS_REGION": "eu-west-1"}
    )
    assert (args.memcached, args.node_id, args.region, args.interval) == (
        "10.0.0.5:11311",
        "i-1",
        "eu-west-1",
        10,
    )
    assert parse_args(["--node-id", "i-2", "--interval", "5"], {}).node_id == "i-2"
    with pytest.raises(SystemExit):
        parse_args(["--interval", "0"], {})


# --- read back by the scaler ------------------------------------------------------------------


def test_the_scaler_reads_the_agent_datapoints_as_the_window_sums(memcached: Memcached) -> None:
    from chalicelib.adapters.cloudwatch import PoolMetrics
    from chalicelib.domain.settings import MetricNames as ScalerNames

    tick = datetime(2025, 3, 1, 12, 1, 0, tzinfo=UTC)
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        clock = Clock(tick - timedelta(seconds=65))
        agent = make_agent(memcached, clock, client)
        agent.step()
        memcached.set("hot")
        in_window = 0
        # Seven intervals: six end inside [tick − 60 s, tick), the seventh after the tick
        for n in range(1, 8):
            memcached.get(*["hot"] * n, "cold")
            step(agent, clock)
            if clock.time < tick:
                in_window += n + 1
        traffic = PoolMetrics(ScalerNames(), client=client).read([NODE, "i-silent"], tick, 60, 300)
    node = traffic.of(NODE)
    assert (node.gets, node.hits) == (in_window, in_window - 6)
    assert in_window == sum(n + 1 for n in range(1, 7))


# --- the miss-ratio curve from the watch stream ---------------------------------------------


def exact_lru_hits(keys: list[str], capacity: int) -> int:
    """An exact cache-aside LRU of ``capacity`` items replayed over ``keys``: its hits."""
    from sim.lru import LruNode

    return LruNode(capacity).hits_of(keys) if capacity else 0


def test_the_curve_from_the_stream_matches_an_exact_lru_replay_of_the_same_gets(memcached: Memcached) -> None:
    import random

    from node_agent.curve import StreamCurve

    # Given a curve for 40 items following the stream, and a skewed cache-aside workload
    capacity = 40
    curve = StreamCurve(memcached.address, capacity, marker_wait=2)
    curve.start()
    try:
        clock, cloudwatch = Clock(), FakeCloudWatch()
        agent = make_agent(memcached, clock, cloudwatch)
        agent._read_counters, agent._curve = curve.read_counters, curve
        agent.step()
        chooser = random.Random(7)
        keys = [f"k{min(int(chooser.paretovariate(0.6)), 400)}" for _ in range(600)]
        with socket.create_connection(memcached.address, timeout=2) as conn:
            for key in keys:
                conn.sendall(b"get %s\r\n" % key.encode())
                answer = conn.recv(4096)
                while not answer.endswith(b"END\r\n"):
                    answer += conn.recv(4096)
                if answer == b"END\r\n":  # a miss: the client stores the value (a write, not a GET)
                    conn.sendall(b"set %s 0 0 1\r\nx\r\n" % key.encode())
                    assert conn.recv(4096) == b"STORED\r\n"
        published = figures_within(step(agent, clock))
    finally:
        curve.stop()
    # Then each factor's hits equal the exact LRU's at that capacity (tolerance: none, the
    # stream saw every GET), factor 1 being memcached's own hits
    gets, hits = published.pop("GetRequests"), published.pop("Hits")
    assert gets == len(keys) and hits == published["1"]
    for factor, value in published.items():
        if factor != "1":
            assert value == exact_lru_hits(keys, round(capacity * float(factor))), factor
    assert list(published.values()) == sorted(published.values())


def figures_within(datums: list[dict[str, Any]]) -> dict[str, float]:
    result = {}
    for datum in datums:
        factors = [d["Value"] for d in datum["Dimensions"] if d["Name"] == "CapacityFactor"]
        result[factors[0] if factors else datum["MetricName"]] = datum["Value"]
    return result


def stream_line(kind: str, key: str, cfd: int = 9, status: str = "found") -> str:
    return f"ts=1.5 gid=1 type={kind} key={key} status={status} clsid=1 cfd={cfd} size=1"


def test_a_write_lookup_is_not_a_get_and_dropped_lines_publish_no_curve() -> None:
    from node_agent.counters import IntervalCounts
    from node_agent.curve import MARKER_PREFIX, CurveTally, StreamCurve

    curve = StreamCurve(("127.0.0.1", 1), 8, marker_wait=0)
    tally: CurveTally = curve.tally
    # A set's lookup (item_get then item_store of its key) is not a GET; two gets are
    for line in (
        stream_line("item_get", "a", status="not_found"),
        stream_line("item_store", "a"),
        stream_line("item_get", "a"),
        stream_line("item_get", "a"),
        stream_line("item_get", f"{MARKER_PREFIX}1", status="not_found"),
    ):
        tally.feed(line)
    curve._sequence = 1
    assert curve(IntervalCounts(2, 1)) == [1] * 7  # the first "a" misses at every size
    # When the stream skipped lines, or saw too few of the interval's GETs: no curve
    for line in (stream_line("item_get", "a"), "skipped=3", stream_line("item_get", f"{MARKER_PREFIX}2")):
        tally.feed(line)
    curve._sequence = 2
    assert curve(IntervalCounts(4, 4)) is None
    tally.feed(stream_line("item_get", "a"))
    tally.feed(stream_line("item_get", f"{MARKER_PREFIX}3"))
    curve._sequence = 3
    assert curve(IntervalCounts(10, 10)) is None
    tally.feed(stream_line("item_get", f"{MARKER_PREFIX}4"))
    curve._sequence = 4
    assert curve(IntervalCounts(0, 0)) == [0] * 7


def test_the_front_end_kits_copier_is_left_out_of_the_curve_until_it_says_it_is_done() -> None:
    from frontend_kit import protocol
    from node_agent.counters import IntervalCounts
    from node_agent.curve import COPIER_DONE_KEY, COPIER_KEY, MARKER_PREFIX, StreamCurve

    # The agent ships without the kit: the two sides hold the same keys
    assert (COPIER_KEY, COPIER_DONE_KEY) == (protocol.COPIER_HELLO, protocol.COPIER_DONE)
    curve = StreamCurve(("127.0.0.1", 1), 8, marker_wait=0)
    for line in (
        stream_line("item_get", "a", cfd=9),  # a front-end's GET, pending on its cfd
        stream_line("item_get", COPIER_KEY, cfd=9, status="not_found"),  # the fd now is a copier's
        stream_line("item_get", "b", cfd=9),  # the copier's gats, delete, add: none is a GET
        stream_line("item_get", "c", cfd=9, status="not_found"),
        stream_line("item_store", "c", cfd=9),
        stream_line("item_get", "a", cfd=12),  # another connection's GET counts
        stream_line("item_get", COPIER_DONE_KEY, cfd=9, status="not_found"),
        stream_line("item_get", "d", cfd=9),  # the fd's next connection is a front-end again
        stream_line("item_get", f"{MARKER_PREFIX}1", status="not_found"),
    ):
        curve.tally.feed(line)
    curve._sequence = 1
    # "a" twice (a miss, then a hit at any size) and "d" (a miss): three GETs, one hit
    assert curve(IntervalCounts(3, 1)) == [1] * 7
    # A new stream forgets the copiers: the fd is somebody else's on a restarted memcached
    curve.tally.feed(stream_line("item_get", COPIER_KEY, cfd=30, status="not_found"))
    curve.tally.reset()
    curve.tally.feed(stream_line("item_get", "e", cfd=30))
    curve.tally.feed(stream_line("item_get", f"{MARKER_PREFIX}2", status="not_found"))
    curve._sequence = 2
    assert curve(IntervalCounts(1, 0)) == [0] * 7


def test_a_warm_move_through_a_node_leaves_its_gets_and_its_curve_alone(memcached: Memcached) -> None:
    from frontend_kit.protocol import Connection
    from node_agent.curve import StreamCurve

    # Given a node followed by its agent's curve, holding 300 items
    curve = StreamCurve(memcached.address, 40, marker_wait=2)
    curve.start()
    try:
        clock, cloudwatch = Clock(), FakeCloudWatch()
        agent = make_agent(memcached, clock, cloudwatch)
        agent._read_counters, agent._curve = curve.read_counters, curve
        keys = [f"k{n}" for n in range(300)]
        memcached.set(*keys)
        agent.step()
        # When a front-end GETs 50 keys while the kit's copier reads, deletes and adds 300
        memcached.get(*keys[:50])
        with Connection(memcached.address, connect_timeout=2, io_timeout=2) as copier:
            listed = copier.metadump()
            values = copier.gats(listed)
            assert len(values) == 300
            assert copier.delete(item.key for item in listed[:100]) == 100
            added = copier.add([(item.key, values[item.key], item.exptime) for item in listed[:100]])
            assert added == [b"STORED"] * 100
        memcached.get(*keys[:50])
        published = figures_within(step(agent, clock))
    finally:
        curve.stop()
    # Then the node published the 100 GETs alone, and its curve (withheld when the stream's GETs
    # stray from cmd_get by more than 10 %) is there
    assert published["GetRequests"] == 100
    assert set(published) == {"GetRequests", "Hits", "0.125", "0.25", "0.5", "1", "2", "4", "8"}
