"""Decide, then apply: turn a decision into a plan, carry it out on EC2, record the outcome.

Shared by the tick and by the routes that resize by hand. A plan is written to the pool
(``pending_plan``) before EC2 is touched, so a run that dies midway is finished by whoever
loads the pool next, with the same launch tokens: a launch is never made twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from chalicelib.config import MAX_NODES
from chalicelib.ec2 import Ec2Nodes, Instance
from chalicelib.errors import BusyError, RecordExistsError, ScalerError, VersionConflictError
from chalicelib.policy import REPAIR, SCALE_IN, SCALE_OUT, Decision
from chalicelib.pool import DRAINING, LAUNCHING, Node, Pool
from chalicelib.records import Record, membership_record, tick_record
from chalicelib.settings import Settings
from chalicelib.store import StateStore

RESIZING_ACTIONS = (SCALE_OUT, SCALE_IN, REPAIR)
RECENT_LIMIT = 60  # scale_in_window_minutes is at most 60
_ATTEMPTS = 8


def launch_token(pool_name: str, label: str, slot: int) -> str:
    """RunInstances' ClientToken for one node of one decision (≤ 64 ASCII characters)."""
    digest = hashlib.sha256(pool_name.encode()).hexdigest()[:10]
    return f"msc-{digest}-{label}-{slot}"


def make_plan(
    pool: Pool,
    decision: Decision,
    *,
    pool_name: str,
    label: str,
    source: str,
    time: str | None,
    summary: dict[str, Any],
    expired: list[str] | None = None,
    recent_miss_rates: tuple[float, ...] = (),
    events: list[str] | None = None,
) -> dict[str, Any]:
    """The EC2 work a decision means: launches at the end of the list, or the list's tail to go."""
    members = [node for node in pool.nodes if node.state != DRAINING]
    size = len(members)
    # Live instances (draining ones too) never exceed the hard maximum.
    room = MAX_NODES - len(pool.nodes)
    launch = [
        {"token": launch_token(pool_name, label, slot), "slot": slot}
        for slot in range(size, min(decision.target_size, size + room))
    ]
    doomed = [node.id for node in members[decision.target_size :]] if decision.target_size < size else []
    return {
        "source": source,
        "time": time,
        "label": label,
        "summary": summary,
        "launch": launch,
        "terminate": [*(expired or []), *doomed],
        "recent_miss_rates": list(recent_miss_rates),
        "events": list(events or []),
    }


def plan_acts(plan: dict[str, Any]) -> bool:
    return bool(plan["launch"] or plan["terminate"])


@dataclass
class Outcome:
    added: list[Node] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def carry_out(
    plan: dict[str, Any], ec2: Ec2Nodes, settings: Settings, by_token: dict[str, Instance]
) -> Outcome:
    """Launch and terminate as planned. A launch whose token already tagged an instance adopts it.

    Failures are reported, not raised: what did happen must still be recorded.
    """
    outcome = Outcome()
    for launch in plan["launch"]:
        try:
            instance = by_token.get(launch["token"]) or ec2.launch(
                launch["token"], settings.launch, launch["slot"]
            )
        except ScalerError as exc:
            outcome.failures.append(f"launch failed: {exc}")
            break
        outcome.added.append(
            Node(
                id=instance.id,
                state=LAUNCHING,
                ip=instance.ip,
                instance_type=instance.instance_type,
                launched_at=instance.launched_at,
                since=plan["time"],
                token=launch["token"],
            )
        )
    if plan["terminate"]:
        try:
            ec2.terminate(plan["terminate"])
            outcome.terminated = list(plan["terminate"])
        except ScalerError as exc:
            outcome.failures.append(f"terminate failed: {exc}")
    return outcome


def apply_outcome(pool: Pool, plan: dict[str, Any], outcome: Outcome) -> Pool:
    """The pool after the plan: whatever else changed it meanwhile is kept."""
    nodes = [node for node in pool.nodes if node.id not in outcome.terminated]
    known = {node.id for node in nodes}
    new = [node for node in outcome.added if node.id not in known]
    split = len([node for node in nodes if node.state != DRAINING])
    nodes = [*nodes[:split], *new, *nodes[split:]]
    decision = plan["summary"]
    resized = decision["action"] in RESIZING_ACTIONS and bool(outcome.added or outcome.terminated)
    changes: dict[str, Any] = {
        "pending_plan": None,
        "recent_miss_rates": () if resized else tuple(plan["recent_miss_rates"][-RECENT_LIMIT:]),
    }
    if plan["source"] == "tick":
        changes.update(last_tick=plan["time"], last_decision=result_of(plan, outcome))
    return replace(pool.with_nodes(nodes), **changes)


def result_of(plan: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    result = dict(plan["summary"])
    if outcome.added:
        result["launched"] = [node.id for node in outcome.added]
    if outcome.terminated:
        result["terminated"] = list(outcome.terminated)
    if outcome.failures:
        result["errors"] = list(outcome.failures)
    return result


def records_of(plan: dict[str, Any], outcome: Outcome, at: datetime, source_ip: str | None) -> list[Record]:
    """A tick's record (one per tick time), and a membership record when members changed."""
    result = result_of(plan, outcome)
    records: list[Record] = []
    if plan["source"] == "tick":
        records.append(tick_record(at, {**result, "events": plan["events"]}))
    added = [node.id for node in outcome.added]
    if added or outcome.terminated or plan["events"] or plan["source"] != "tick":
        reasons = [*plan["events"], result["reason"], *outcome.failures]
        records.append(
            membership_record(
                at,
                change=plan["source"],
                added=added,
                removed=list(outcome.terminated),
                reason="; ".join(reasons),
                source_ip=source_ip,
            )
        )
    return records


def finish(
    store: StateStore,
    ec2: Ec2Nodes,
    settings: Settings,
    pool: Pool,
    by_token: dict[str, Instance],
    *,
    at: datetime,
    source_ip: str | None = None,
) -> tuple[Pool, dict[str, Any]]:
    """Carry out ``pool.pending_plan`` and write the outcome with its records; answer both."""
    plan = pool.pending_plan
    assert plan is not None
    outcome = carry_out(plan, ec2, settings, by_token)
    # A tick's plan is recorded at its own T, even when a later tick finishes it.
    when = datetime.fromisoformat(plan["time"].replace("Z", "+00:00")) if plan["time"] else at
    records = records_of(plan, outcome, when, source_ip)
    current = pool
    for _ in range(_ATTEMPTS):
        if current.pending_plan != plan:
            return current, result_of(plan, outcome)  # someone finished it meanwhile
        try:
            return store.save_pool(apply_outcome(current, plan, outcome), *records), result_of(plan, outcome)
        except RecordExistsError:
            return store.load_pool(), result_of(plan, outcome)
        except VersionConflictError:
            current = store.load_pool()
    raise BusyError("the pool kept changing while a resize was being recorded; it will be finished")
