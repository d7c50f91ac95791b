"""End to end: ``python -m local_stack`` over real HTTP on loopback, started and stopped as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.stack

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TOKEN = "test-token-for-the-local-stack"
# The stack's last start-up line: printed only once the API has answered.
READY_LINE = "Ctrl-C stops the stack."
START_TIMEOUT_SECONDS = 60.0
DAY_TIMEOUT_SECONDS = 150.0
STOP_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.2
HTTP_TIMEOUT_SECONDS = 5.0
MEMCACHED = "/usr/bin/memcached"


class Output:
    """The stack's output, read by a thread: a waiting test never blocks on the pipe, nor the
    stack on a full pipe."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)
            if line.strip() == READY_LINE:
                self.ready.set()

    def text(self, timeout: float = STOP_TIMEOUT_SECONDS) -> str:
        self._thread.join(timeout)
        return "".join(self.lines)


@dataclass
class Stack:
    process: subprocess.Popen[str]
    output: Output
    port: int
    moto_port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for port 0, all held at once so that they differ."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc (children of children too)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name may hold spaces; the fields after its closing parenthesis do not.
            fields = stat.read_text().rpartition(")")[2].split()
            if fields[0] != "Z":
                parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_stack(port: int, moto_port: int, **settings: str) -> subprocess.Popen[str]:
    """The stack; by default without its scheduler and simulation, so that nothing moves."""
    env = {
        **os.environ,
        "PORT": str(port),
        "MOTO_PORT": str(moto_port),
        "SCALER_API_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
        "SIMULATE": "0",
        "TICK_SECONDS": "0",
        **settings,
    }
    # The test's own AWS settings must not leak in: the stack sets what it needs.
    for name in ("AWS_ENDPOINT_URL", "NODE_AMI_ID", "TABLE_NAME", "MOTO_EC2_LOAD_DEFAULT_AMIS"):
        env.pop(name, None)
    # Its own process group, as a shell gives a foreground job: SIGINT to the group is Ctrl-C.
    return subprocess.Popen(
        [sys.executable, "-m", "local_stack"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )


def wait_until_up(stack: Stack) -> None:
    """Until the stack says it is ready: the API answering alone could come before that."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not stack.output.ready.wait(POLL_SECONDS):
        if stack.process.poll() is not None:
            pytest.fail(f"the stack exited with {stack.process.returncode}:\n{stack.output.text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not ready within {START_TIMEOUT_SECONDS:.0f} s:\n{stack.output.text(0)}")
    health = requests.get(f"{stack.url}/api/scaler", timeout=HTTP_TIMEOUT_SECONDS)
    assert health.status_code == 200, health.text


def interrupt_and_check(stack: Stack) -> str:
    """Ctrl-C the stack; assert it exits 0, frees both ports and leaves no child behind."""
    children = descendants(stack.process.pid)
    assert children, "the stack should run the API as a child process"
    os.killpg(stack.process.pid, signal.SIGINT)
    stack.process.wait(STOP_TIMEOUT_SECONDS)
    output = stack.output.text()
    assert stack.process.returncode == 0, output
    assert not [pid for pid in children if is_alive(pid)], output
    assert port_is_free(stack.port), output
    assert port_is_free(stack.moto_port), output
    return output


@contextlib.contextmanager
def running_stack(port: int, moto_port: int, **settings: str) -> Iterator[Stack]:
    process = start_stack(port, moto_port, **settings)
    stack = Stack(process, Output(process), port, moto_port)
    try:
        wait_until_up(stack)
        yield stack
    finally:
        # Whatever happened, leave nothing running, even a child the stack failed to stop:
        # the API child shares the stack's process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stack.process.pid, signal.SIGKILL)
        stack.process.wait(STOP_TIMEOUT_SECONDS)
        stack.output.text()  # the reader reaches the end of the pipe before it is closed
        if stack.process.stdout is not None:
            stack.process.stdout.close()


def test_stack_serves_the_api_and_stops_on_ctrl_c() -> None:
    port, moto_port = free_ports(2)
    with running_stack(port, moto_port) as stack:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        health = requests.get(f"{stack.url}/api/scaler", timeout=HTTP_TIMEOUT_SECONDS)
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "pool_size": 0, "auto_mode": True}

        anonymous = requests.get(f"{stack.url}/api/scaler/config", timeout=HTTP_TIMEOUT_SECONDS)
        assert anonymous.status_code == 401

        config = requests.get(f"{stack.url}/api/scaler/config", headers=auth, timeout=HTTP_TIMEOUT_SECONDS)
        assert config.status_code == 200
        assert config.json()["max_miss_rate_threshold"] == 0.8

        changed = requests.post(
            f"{stack.url}/api/scaler/config",
            json={"max_miss_rate_threshold": 0.9},
            headers=auth,
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        assert changed.status_code == 200, changed.text
        again = requests.get(f"{stack.url}/api/scaler/config", headers=auth, timeout=HTTP_TIMEOUT_SECONDS)
        assert again.json()["max_miss_rate_threshold"] == 0.9

        history = requests.get(f"{stack.url}/api/scaler/history", headers=auth, timeout=HTTP_TIMEOUT_SECONDS)
        assert history.status_code == 200
        assert "config" in [record.get("kind") for record in history.json()["records"]]

        output = interrupt_and_check(stack)
        assert f"http://{HOST}:{port}/" in output
        assert TOKEN in output


def test_a_second_start_on_the_same_ports_works() -> None:
    port, moto_port = free_ports(2)
    for _ in range(2):
        with running_stack(port, moto_port) as stack:
            health = requests.get(f"{stack.url}/api/scaler", timeout=HTTP_TIMEOUT_SECONDS)
            assert health.json()["status"] == "ok"
            interrupt_and_check(stack)


def test_a_taken_port_is_named_and_exits_1() -> None:
    port, moto_port = free_ports(2)
    with socket.socket() as squatter:
        squatter.bind((HOST, port))
        squatter.listen()
        process = start_stack(port, moto_port)
        output, _ = process.communicate(timeout=START_TIMEOUT_SECONDS)
    assert process.returncode == 1, output
    assert str(port) in output
    assert "set PORT to" in output
    assert port_is_free(moto_port), "nothing should have started on the emulator's port"


def day_history(stack: Stack) -> list[dict[str, Any]]:
    """Wait until the stack's log shows the pool grown and back at 1; the API's history then."""
    deadline = time.monotonic() + DAY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        lines = stack.output.text(0).splitlines()
        grew = [i for i, line in enumerate(lines) if " scale_out " in line]
        shrank = [i for i, line in enumerate(lines) if " scale_in " in line and grew and i > grew[0]]
        if shrank and any(" pool 1 " in line for line in lines[shrank[-1] :]):
            break
        time.sleep(POLL_SECONDS)
    else:
        pytest.fail(f"no growth and shrink within {DAY_TIMEOUT_SECONDS:.0f} s:\n{stack.output.text(0)}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return requests.get(
        f"{stack.url}/api/scaler/history?minutes=1440", headers=auth, timeout=HTTP_TIMEOUT_SECONDS
    ).json()["records"]


def test_the_simulated_day_grows_the_pool_under_the_crowd_and_shrinks_it_at_night() -> None:
    """README's first command as a newcomer runs it, with quicker ticks: the whole stack, the
    scheduler invoking the real scheduled function, the simulated tier playing the front-end."""
    port, moto_port = free_ports(2)
    with running_stack(port, moto_port, SIMULATE="1", TICK_SECONDS="0.2", TIER="sim") as stack:
        history = day_history(stack)
        sizes = [r["target_size"] for r in history if r["kind"] == "tick"]
        assert max(sizes) >= 4 and sizes[-1] == 1
        notices = [r for r in history if r["kind"] == "membership" and r.get("change") == "drain_confirmed"]
        assert notices, "the simulated front-end confirmed the drains"
        interrupt_and_check(stack)


@pytest.mark.skipif(
    not os.access(MEMCACHED, os.X_OK), reason=f"{MEMCACHED} is not installed (apt-get install memcached)"
)
def test_the_day_on_real_memcached_scales_out_and_back_and_each_tick_reads_what_memcached_counted(
    tmp_path: Path,
) -> None:
    """``TIER=memcached``: a memcached and a node agent per instance, the agents on the stack's
    clock; each tick's miss rate is the one memcached's own counters give for its minute."""
    port, moto_port = free_ports(2)
    minutes_file = tmp_path / "minutes.jsonl"
    settings = {
        "SIMULATE": "1",
        "TICK_SECONDS": "0.1",
        "TIER": "memcached",
        "SIM_MINUTES_FILE": str(minutes_file),
    }
    with running_stack(port, moto_port, **settings) as stack:
        history = day_history(stack)
        output = interrupt_and_check(stack)
    assert "tier: memcached" in output
    ticks = {r["time"]: r for r in history if r["kind"] == "tick"}
    sizes = [r["target_size"] for r in ticks.values()]
    assert max(sizes) >= 4 and sizes[-1] == 1, output
    notices = [r for r in history if r["kind"] == "membership" and r.get("change") == "drain_confirmed"]
    assert notices, "the front-end confirmed the drains"
    # Each tick read the minute the agents had just published: memcached's counts for it
    minutes = [json.loads(line) for line in minutes_file.read_text().splitlines()]
    # The front-end saw no error once the first node was in service (before it, there is no
    # pool): every GET reached a running memcached, none went to a node not yet or no longer there.
    served = [i for i, m in enumerate(minutes) if m["gets"]]
    failing = [m for m in minutes[served[0] :] if m["requests"] != m["gets"]]
    assert failing == [], (
        json.dumps(failing),
        [line for line in output.splitlines() if "fail" in line or "Error" in line],
    )
    compared = [(m, ticks[m["time"]]) for m in minutes if m["gets"] and m["time"] in ticks]
    assert len(compared) > 60, output
    for minute, tick in compared:
        assert tick["requests"] == minute["gets"], (minute, tick)
        assert tick["miss_rate"] == pytest.approx(1 - minute["hits"] / minute["gets"], abs=0.01), (
            minute,
            tick,
        )
        # The kit's copies read with gat (a touch to memcached): what the scaler read is what the
        # front-end's own GETs saw, copies or not.
        assert tick["miss_rate"] == pytest.approx(minute["client_miss_rate"], abs=0.01), (minute, tick)
    _assert_scale_outs_were_warm(minutes)


def _assert_scale_outs_were_warm(minutes: list[dict[str, Any]]) -> None:
    """The front-end kit copied keys to every new node before routing to it, and off every
    draining one before confirming it: the new nodes' first minutes hit as often as the pool."""
    moves = [move for m in minutes for move in m["moves"]]
    assert any(move["change"] == "increase" and move["copied"] > 0 for move in moves), moves
    assert any(move["change"] == "decrease" and move["copied"] > 0 for move in moves), moves
    seen: set[str] = set()
    firsts = []
    for minute in minutes:
        serving = {node for node, (gets, _, _) in minute["per_node"].items() if gets}
        if seen:  # the first node of the day has nothing to be warmed from
            firsts += [(node, minute) for node in serving - seen]
        seen |= serving
    assert len(firsts) >= 3, minutes
    rates = [(minute["per_node"][node], minute["hits"] / minute["gets"]) for node, minute in firsts]
    shown = [(round(hits / gets, 3), round(pool, 3)) for (gets, hits, _), pool in rates]
    print("new nodes' first-minute hit rates vs the pool's:", shown)
    # Over every new node's first minute together, the hit rate is the pool's to within 0.05
    # (measured warm: -0.03 to +0.02; with the kit's mover off, cold: 0.618 against 0.723). One
    # node's minute alone differs from the others' by which keys it owns (a Zipf day's hottest keys
    # are on one node or another) and by a few hundred GETs' noise, so each node is only held to
    # more than half of where it settles in its next three minutes, a bound against a broken copy.
    new_hits = sum(hits for (_, hits, _), _ in rates)
    new_gets = sum(gets for (gets, _, _), _ in rates)
    pool_hits = sum(pool * gets for (gets, _, _), pool in rates)
    assert new_hits / new_gets == pytest.approx(pool_hits / new_gets, abs=0.05), shown
    for node, minute in firsts:
        gets, hits, _ = minute["per_node"][node]
        later = [
            m["per_node"][node] for m in minutes if m["minute"] > minute["minute"] and node in m["per_node"]
        ]
        later = [(g, h) for g, h, _ in later if g][:3]
        if later:
            settled = sum(h for _, h in later) / sum(g for g, _ in later)
            assert hits / gets >= settled / 2, (node, round(hits / gets, 3), round(settled, 3), shown)


def test_the_tier_defaults_to_memcached_on_path_else_sim_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from local_stack.__main__ import StartError, _tier_choice

    monkeypatch.delenv("TIER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no memcached here
    assert _tier_choice() == "sim"
    assert "no memcached on PATH" in capsys.readouterr().out
    monkeypatch.setenv("TIER", "memcached")
    with pytest.raises(StartError, match="TIER=sim"):
        _tier_choice()
    monkeypatch.setenv("TIER", "redis")
    with pytest.raises(StartError, match="memcached or sim"):
        _tier_choice()
    (tmp_path / "memcached").write_text("#!/bin/sh\n")
    (tmp_path / "memcached").chmod(0o755)
    monkeypatch.delenv("TIER")
    assert _tier_choice() == "memcached"
