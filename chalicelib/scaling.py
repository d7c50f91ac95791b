"""Decide, then apply: turn a decision into a plan, carry it out on EC2, record the outcome.

Shared by the tick and by the routes that resize by hand. A plan is written to the pool
(``pending_plan``) before EC2 is touched, so a run that dies midway is finished by whoever
loads the pool next, with the same launch tokens: a launch is never made twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from chalicelib.config import MAX_NODES
from chalicelib.ec2 import Ec2Nodes, Instance
from chalicelib.errors import BusyError, RecordExistsError, ScalerError, VersionConflictError
from chalicelib.notifier import Notifier, announce, deliver_outbox
from chalicelib.policy import REPAIR, SCALE_IN, SCALE_OUT, Decision
from chalicelib.pool import DRAINING, IN_SERVICE, LAUNCHING, Node, Pool
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
    notify: bool = False,
    replacing: list[str] | None = None,
    policy_memory: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The work a decision means. Growing takes draining nodes back first (their cache is warm),
    then launches at the end of the list; shrinking takes the list's tail, which drains when a
    front-end is to be told (``notify``) and is terminated at once otherwise. ``replacing`` nodes
    leave the same way and their places are launched anew."""
    replacing = list(replacing or [])
    members = [node for node in pool.nodes if node.state != DRAINING and node.id not in replacing]
    draining = [node for node in pool.nodes if node.state == DRAINING]
    size, target = len(members), decision.target_size
    take_back = [node.id for node in draining[: max(0, target - size)]] if not replacing else []
    grown = size + len(take_back)
    # Live instances (draining ones too) never exceed the hard maximum; a drained node still counts.
    room = MAX_NODES - len(pool.nodes) + (0 if notify else len(replacing))
    launch = [
        {"token": launch_token(pool_name, label, slot), "slot": slot}
        for slot in range(grown, min(target, grown + room))
    ]
    doomed = [*replacing, *([node.id for node in members[target:]] if target < size else [])]
    return {
        "source": source,
        "mode": "automatic" if source == "tick" else "manual",
        "notify": notify,
        "time": time,
        "label": label,
        "summary": summary,
        "take_back": take_back,
        "launch": launch,
        "drain": doomed if notify else [],
        "terminate": [*(expired or []), *([] if notify else doomed)],
        "recent_miss_rates": list(recent_miss_rates),
        "events": list(events or []),
        "policy_memory": policy_memory,
    }


LEASE_SECONDS = 150  # longer than any invocation that writes a plan may run


def held_by_another(pool: Pool, wall_now: datetime | None = None) -> bool:
    """A plan written less than a lease ago: its writer may still be carrying it out.

    The lease is a wall-clock safety interval, not a scaling rule, so it reads the wall clock.
    """
    plan = pool.pending_plan
    if plan is None or not plan.get("claimed_at"):
        return False
    claimed = datetime.fromisoformat(plan["claimed_at"])
    return ((wall_now or datetime.now(UTC)) - claimed).total_seconds() < LEASE_SECONDS


def refuse_if_held(pool: Pool) -> None:
    """Routes that change membership wait for a resize in progress (503 with Retry-After)."""
    if held_by_another(pool):
        source = (pool.pending_plan or {}).get("source")
        raise BusyError(f"another writer holds the pool ({source} in progress); try again shortly")


def plan_acts(plan: dict[str, Any]) -> bool:
    return bool(plan["launch"] or plan["terminate"] or plan["drain"] or plan["take_back"])


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
    drain, take_back = set(plan["drain"]), set(plan["take_back"])
    nodes = []
    for node in pool.nodes:
        if node.id in outcome.terminated:
            continue
        if node.id in drain and node.state != DRAINING:
            node = replace(node, state=DRAINING, since=None, drain_delivered=False)
        elif node.id in take_back and node.state == DRAINING:
            node = replace(node, state=IN_SERVICE, since=plan["time"], drain_delivered=False)
        nodes.append(node)
    known = {node.id for node in nodes}
    new = [node for node in outcome.added if node.id not in known]
    serving = [node for node in nodes if node.state != DRAINING]
    nodes = [*serving, *new, *[node for node in nodes if node.state == DRAINING]]
    decision = plan["summary"]
    moved = outcome.added or outcome.terminated or drain or take_back
    resized = decision["action"] in RESIZING_ACTIONS and bool(moved)
    changes: dict[str, Any] = {
        "pending_plan": None,
        "recent_miss_rates": () if resized else tuple(plan["recent_miss_rates"][-RECENT_LIMIT:]),
    }
    if plan["source"] == "tick":
        changes.update(last_tick=plan["time"], last_decision=result_of(plan, outcome))
        if plan.get("policy_memory") is not None:
            changes["policy_memory"] = plan["policy_memory"]
    after = replace(pool.with_nodes(nodes), **changes)
    return announce(pool, after, plan["mode"]) if plan["notify"] else after


def result_of(plan: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    result = dict(plan["summary"])
    if outcome.added:
        result["launched"] = [node.id for node in outcome.added]
    if outcome.terminated:
        result["terminated"] = list(outcome.terminated)
    if plan["drain"]:
        result["draining"] = list(plan["drain"])
    if plan["take_back"]:
        result["taken_back"] = list(plan["take_back"])
    if outcome.failures:
        result["errors"] = list(outcome.failures)
    return result


def records_of(plan: dict[str, Any], outcome: Outcome, at: datetime, source_ip: str | None) -> list[Record]:
    """A tick's record (one per tick time), and a membership record when members changed."""
    result = result_of(plan, outcome)
    records: list[Record] = []
    if plan["source"] == "tick":
        records.append(tick_record(at, {**result, "events": plan["events"]}))
    added = [*plan["take_back"], *(node.id for node in outcome.added)]
    if added or outcome.terminated or plan["drain"] or plan["events"] or plan["source"] != "tick":
        reasons = [*plan["events"], result["reason"], *outcome.failures]
        records.append(
            membership_record(
                at,
                change=plan["source"],
                added=added,
                removed=[*plan["drain"], *outcome.terminated],
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
    notifier: Notifier | None = None,
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
            saved = store.save_pool(apply_outcome(current, plan, outcome), *records)
        except RecordExistsError:
            return store.load_pool(), result_of(plan, outcome)
        except VersionConflictError:
            current = store.load_pool()
            continue
        return notify(store, saved, notifier, plan["time"]), result_of(plan, outcome)
    raise BusyError("the pool kept changing while a resize was being recorded; it will be finished")


def notify(store: StateStore, pool: Pool, notifier: Notifier | None, stamp: str | None) -> Pool:
    """Deliver what the pool has queued for the front-end, and record what went out.

    A lost race here only means the same notifications go out again next time, with the same
    sequence numbers, which the front-end recognises.
    """
    if notifier is None or not pool.outbox:
        return pool
    delivered = deliver_outbox(pool, notifier, stamp)
    if delivered is pool:
        return pool
    try:
        return store.save_pool(delivered)
    except VersionConflictError:
        return store.load_pool()
