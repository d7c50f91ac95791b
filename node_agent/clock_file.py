"""An external clock for the agent: sample when a file's time changes, not every interval.

A simulation that runs one minute per second or two (the local stack) cannot use the wall
clock. It writes its time T (ISO 8601) to the clock file before the scaler's tick at T; the
agent polls the file, and each time T changes it samples memcached, publishes the delta stamped
``T − STAMP_BEFORE_END`` (inside the window [T − 60 s, T) that tick reads) and writes T to its
acknowledgement file, so the stack can wait until every node has published before it ticks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from node_agent.agent import Agent

LOG = logging.getLogger(__name__)

# The middle of the minute before T: inside the window however a reader buckets it.
STAMP_BEFORE_END = timedelta(seconds=30)
POLL_SECONDS = 0.05
# What the acknowledgement holds before the first T: the agent has its baseline.
STARTED = "started"


def ack_path(clock_file: Path, node_id: str) -> Path:
    """Where the agent for ``node_id`` acknowledges the times it has published."""
    return clock_file.with_name(f"{clock_file.name}.{node_id}.ack")


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old text or the new, never half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(path)


def read_clock(path: Path) -> datetime | None:
    """The time in the clock file; None while it is missing, empty or not a time."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def follow(
    agent: Agent,
    clock_file: Path,
    *,
    sleep: Callable[[float], None],
    poll_seconds: float = POLL_SECONDS,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Take a baseline, acknowledge it, then publish once per new time in ``clock_file``.

    The time found at start is the baseline's: what memcached served before it is not this
    node's to publish, so only a later time publishes.
    """
    ack = ack_path(clock_file, agent.node_id)
    seen = read_clock(clock_file)
    agent.step()  # the baseline: publishes nothing
    write_atomically(ack, seen.isoformat() if seen else STARTED)
    while not stopped():
        moment = read_clock(clock_file)
        if moment is not None and moment != seen:
            agent.step(stamp=moment - STAMP_BEFORE_END)
            write_atomically(ack, moment.isoformat())
            seen = moment
        else:
            sleep(poll_seconds)
