"""Decide, then apply: turn a decision into a plan, carry it out on EC2, record the outcome.

Shared by the tick and by the routes that change the pool. Write first, act second: a plan is
written to the pool (``pending_plan``, and the nodes it ends moved to ``Pool.terminating``)
under the version check before EC2 is touched, so a run that dies midway is finished by
whoever loads the pool next, with the same launch tokens: a launch is never made twice, a
termination is retried until EC2 confirms it. On EC2, terminations come first and launches
only into the room that exists: never more than 8 live instances at any call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.ec2 import Ec2Nodes
from chalicelib.adapters.frontend import Deadline, Notifier
from chalicelib.adapters.observability import count_launch_failure, count_terminate_failure, logger
from chalicelib.domain.changes import Change
from chalicelib.domain.clock import parse_iso
from chalicelib.domain.config import MAX_NODES
from chalicelib.domain.errors import (
    BusyError,
    DependencyError,
    RecordExistsError,
    ScalerError,
    VersionConflictError,
    retry_on_conflict,
)
from chalicelib.domain.instances import Instance
from chalicelib.domain.notices import announce, awaiting_notice, delivered, enqueue
from chalicelib.domain.plan import Plan
from chalicelib.domain.planner import RECENT_LIMIT
from chalicelib.domain.policy import REPAIR, SCALE_IN, SCALE_OUT
from chalicelib.domain.pool import DRAINING, IN_SERVICE, Node, Pool
from chalicelib.domain.records import Record, membership_record, tick_record
from chalicelib.domain.settings import Settings

RESIZING_ACTIONS = (SCALE_OUT, SCALE_IN, REPAIR)


def claim(pool: Pool, plan: Plan, wall_now: datetime) -> Pool:
    """The plan's intent, to be written before EC2 is called: the plan itself, with a lease
    while its writer carries it out, and the nodes it ends moved to ``Pool.terminating``."""
    return replace(pool.ending(plan.terminate), pending_plan=replace(plan, claimed_at=wall_now.isoformat()))


LEASE_SECONDS = 150  # longer than any invocation that writes a plan may run


def held_by_another(pool: Pool, wall_now: datetime) -> bool:
    """A plan written less than a lease ago: its writer may still be carrying it out.

    The lease is a wall-clock safety interval, not a scaling rule, so it reads the wall clock.
    """
    plan = pool.pending_plan
    if plan is None or not plan.claimed_at:
        return False
    claimed = parse_iso(plan.claimed_at)
    return (wall_now - claimed).total_seconds() < LEASE_SECONDS


def refuse_if_held(pool: Pool, wall_now: datetime) -> None:
    """Routes that change membership wait for a resize in progress (503 with Retry-After)."""
    if held_by_another(pool, wall_now):
        source = pool.pending_plan.source if pool.pending_plan else None
        raise BusyError(f"another writer holds the pool ({source} in progress); try again shortly")


def plan_acts(plan: Plan, pool: Pool) -> bool:
    """Does carrying out ``plan`` on ``pool`` change members or need EC2?"""
    return needs_ec2(plan, pool) or bool(plan.drain or plan.take_back)


def needs_ec2(plan: Plan, pool: Pool) -> bool:
    """Must ``plan`` be written as an intent before it is carried out? Instances the pool is
    still terminating are retried by every plan."""
    return bool(plan.launch or plan.terminate or plan.replacing or pool.terminating)


@dataclass
class Outcome:
    added: list[Node] = field(default_factory=list)
    # Ended: EC2 accepted their termination now, or reports them gone already.
    terminated: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def terminate_live(ec2: Ec2Nodes, ids: list[str], outcome: Outcome) -> list[str]:
    """Terminate those of ``ids`` that are still live; answer the ones whose end is not confirmed.

    Instances already gone count as ended (a run that died after terminating them, or EC2
    having forgotten them: terminating those again would fail for good).
    """
    if not ids:
        return []
    try:
        alive = ec2.alive(ids)
        ec2.terminate([node_id for node_id in ids if node_id in alive])
    except ScalerError as exc:
        outcome.failures.append(f"terminate failed: {exc}")
        count_terminate_failure()
        return list(ids)
    outcome.terminated.extend(ids)
    return []


def carry_out(
    plan: Plan, pool: Pool, ec2: Ec2Nodes, settings: Settings, by_token: dict[str, Instance]
) -> Outcome:
    """Terminate first, then launch into the room that exists. A launch whose token already
    tagged an instance adopts it.

    ``pool`` is the pool as claimed. Failures are reported, not raised: what did happen must
    still be recorded.
    """
    outcome = Outcome()
    unconfirmed = terminate_live(ec2, list(pool.terminating), outcome)
    replacing = [node_id for node_id in plan.replacing if pool.node(node_id) is not None]
    still_listed = terminate_live(ec2, replacing, outcome)
    # A replacement waits for the end of the node it replaces.
    launches = plan.launch[: max(0, len(plan.launch) - len(still_listed))]
    live = len(pool.nodes) - len(replacing) + len(still_listed) + len(unconfirmed)
    live += sum(1 for launch in launches if launch.token in by_token)  # made by a run that died
    for launch in launches:
        instance = by_token.get(launch.token)
        if instance is None:
            if live >= MAX_NODES:
                outcome.failures.append(f"launch postponed: {live} instances live, at most {MAX_NODES}")
                break
            try:
                instance = ec2.launch(launch.token, settings.launch, launch.slot)
            except ScalerError as exc:
                outcome.failures.append(f"launch failed: {exc}")
                count_launch_failure()
                break
            live += 1
        outcome.added.append(Node.launching(instance, since=plan.time, token=launch.token))
    return outcome


def apply_outcome(pool: Pool, plan: Plan, outcome: Outcome) -> Pool:
    """The pool after the plan: whatever else changed it meanwhile is kept."""
    drain, take_back, ended = set(plan.drain), set(plan.take_back), set(outcome.terminated)
    nodes = []
    for node in pool.nodes:
        if node.id in ended:
            continue
        if node.id in drain and node.state != DRAINING:
            node = replace(node, state=DRAINING, since=None, drain_delivered=False)
        elif node.id in take_back and node.state == DRAINING:
            node = replace(node, state=IN_SERVICE, since=plan.time, drain_delivered=False)
        nodes.append(node)
    known = {node.id for node in nodes}
    new = [node for node in outcome.added if node.id not in known]
    serving = [node for node in nodes if node.state != DRAINING]
    nodes = [*serving, *new, *[node for node in nodes if node.state == DRAINING]]
    decision = plan.summary
    moved = outcome.added or outcome.terminated or drain or take_back
    resized = decision["action"] in RESIZING_ACTIONS and bool(moved)
    changes: dict[str, Any] = {
        "pending_plan": None,
        "recent_miss_rates": () if resized else tuple(plan.recent_miss_rates[-RECENT_LIMIT:]),
    }
    if plan.by_tick:
        changes.update(last_tick=plan.time, last_decision=result_of(plan, outcome))
        if plan.policy_memory is not None:
            changes["policy_memory"] = dict(plan.policy_memory)
        # A tick without a shadow forgets the last one's: a shadow started later starts afresh.
        changes["shadow_memory"] = None if plan.shadow_memory is None else dict(plan.shadow_memory)
    after = replace(pool.with_nodes(nodes).ended(ended), **changes)
    return announce(pool, after, plan.mode) if plan.notify else after


def result_of(plan: Plan, outcome: Outcome) -> dict[str, Any]:
    result = dict(plan.summary)
    if outcome.added:
        result["launched"] = [node.id for node in outcome.added]
    if outcome.terminated:
        result["terminated"] = list(outcome.terminated)
    if plan.drain:
        result["draining"] = list(plan.drain)
    if plan.take_back:
        result["taken_back"] = list(plan.take_back)
    if outcome.failures:
        result["errors"] = list(outcome.failures)
    return result


def records_of(plan: Plan, outcome: Outcome, at: datetime, source_ip: str | None) -> list[Record]:
    """A tick's record (one per tick time), and a membership record when members changed."""
    result = result_of(plan, outcome)
    records: list[Record] = []
    if plan.by_tick:
        records.append(tick_record(at, {**result, "events": list(plan.events)}))
    added = [*plan.take_back, *(node.id for node in outcome.added)]
    if added or outcome.terminated or plan.drain or plan.events or not plan.by_tick:
        reasons = [*plan.events, result["reason"], *outcome.failures]
        records.append(
            membership_record(
                at,
                change=plan.source,
                added=added,
                removed=[*plan.drain, *outcome.terminated],
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
    deadline: Deadline | None = None,
) -> tuple[Pool, dict[str, Any]]:
    """Carry out ``pool.pending_plan`` and write the outcome with its records; answer both."""
    plan = pool.pending_plan
    assert plan is not None
    outcome = carry_out(plan, pool, ec2, settings, by_token)
    # A tick's plan is recorded at its own T, even when a later tick finishes it.
    when = parse_iso(plan.time) if plan.time else at
    records = records_of(plan, outcome, when, source_ip)

    def attempt(current: Pool) -> Pool:
        if current.pending_plan != plan:
            # Someone finished it meanwhile; what this run ended is still recorded as ended.
            return record_ended(store, current, outcome.terminated)
        try:
            saved = store.save_pool(apply_outcome(current, plan, outcome), *records)
        except RecordExistsError:
            return store.load_pool()
        return notify(store, saved, notifier, plan.time, deadline)

    busy = "the pool kept changing while a resize was being recorded; it will be finished"
    return _on_latest(store, pool, attempt, busy=busy), result_of(plan, outcome)


def apply_in_one_write(
    store: StateStore,
    pool: Pool,
    plan: Plan,
    *,
    at: datetime,
    source_ip: str | None = None,
    notifier: Notifier | None = None,
    deadline: Deadline | None = None,
    **changes: Any,
) -> tuple[Pool, dict[str, Any]]:
    """A plan that needs no EC2 call (drains, take-backs, a tick that holds): the change and its
    records in one conditional write, then the front-end is told. Raises
    :class:`VersionConflictError` when another writer came first."""
    outcome = Outcome()
    after = replace(apply_outcome(pool, plan, outcome), **changes)
    saved = store.save_pool(after, *records_of(plan, outcome, at, source_ip))
    return notify(store, saved, notifier, plan.time, deadline), result_of(plan, outcome)


def save_change(store: StateStore, pool: Pool, change: Callable[[Pool], Pool], what: str) -> Pool:
    """Write ``change`` applied to the pool, re-reading and applying it again after a lost race;
    nothing when it changes nothing (another writer recorded it already)."""

    def attempt(current: Pool) -> Pool:
        after = change(current)
        return current if after == current else store.save_pool(after)

    return _on_latest(store, pool, attempt, busy=f"the pool kept changing while {what} was being recorded")


def _on_latest(store: StateStore, pool: Pool, attempt: Callable[[Pool], Pool], *, busy: str) -> Pool:
    """``attempt`` on ``pool``, then, after each lost race, on the pool read again."""
    latest = pool

    def once() -> Pool:
        nonlocal latest
        try:
            return attempt(latest)
        except VersionConflictError:
            latest = store.load_pool()
            raise

    return retry_on_conflict(once, busy=busy)


def record_ended(store: StateStore, pool: Pool, ids: list[str]) -> Pool:
    """Write that ``ids`` (instances in ``Pool.terminating``) have ended, whoever wrote meanwhile."""
    return save_change(store, pool, lambda current: current.ended(ids), "a termination")


def end_terminating(store: StateStore, ec2: Ec2Nodes, pool: Pool) -> Pool:
    """Terminate what ``pool`` has decided to end (its intent is written), and record it.

    When EC2 fails this raises :class:`DependencyError`; the intent stays written, and the next
    tick (or a retry of the same request) terminates them.
    """
    outcome = Outcome()
    unconfirmed = terminate_live(ec2, list(pool.terminating), outcome)
    pool = record_ended(store, pool, outcome.terminated)
    if unconfirmed:
        raise DependencyError(f"{outcome.failures[0]}; it will be retried")
    return pool


def notify(
    store: StateStore,
    pool: Pool,
    notifier: Notifier | None,
    stamp: str | None,
    deadline: Deadline | None = None,
) -> Pool:
    """Deliver what the pool has queued for the front-end, in order, recording each delivery
    as it is made: an invocation that dies midway keeps its progress.

    Stops at the first notice not answered with a 2xx, and before an attempt ``deadline``
    leaves no time for. A notice sent again after a lost write carries the same sequence,
    which the front-end recognises.
    """
    while notifier is not None and pool.outbox:
        head = pool.outbox[0]
        if "sequence" not in head:  # queued by an older version: number it before sending
            pool = save_change(store, pool, partial(enqueue, notices=[]), "a notice")
            continue
        if not notifier.deliver(head, deadline):
            break
        recorded = partial(delivered, sequence=head["sequence"], stamp=stamp)
        pool = save_change(store, pool, recorded, "a notice")
    return pool


def apply_change(
    store: StateStore,
    ec2: Ec2Nodes,
    change: Change,
    notifier: Notifier | None = None,
    deadline: Deadline | None = None,
) -> Pool:
    """Write a route's membership change with its record under the version check, then act:
    terminate what it ends, tell the front-end what it queued, carry out the tag work it owes.

    Raises :class:`VersionConflictError` when another writer came first (nothing was done), and
    :class:`DependencyError` when EC2 fails after the write: the work stays recorded.
    """
    saved = store.save_pool(change.pool, change.record)
    if change.ends:
        saved = end_terminating(store, ec2, saved)
    saved = notify(store, saved, notifier, None, deadline)
    return settle_tags(store, ec2, saved) if change.tags else saved


def settle_tags(store: StateStore, ec2: Ec2Nodes, pool: Pool, *, strict: bool = True) -> Pool:
    """Carry out the tag work recorded on ``pool`` and record that it is done.

    A released node whose ``decrease`` is still undelivered keeps its tag until it is. With
    ``strict`` False an EC2 failure leaves the work owed and answers ``pool``: writers settle
    first, and owed tag work that EC2 keeps refusing (an IAM policy, say) must not stop every
    tick and every route, the one that would drop that node from the list included.
    """
    waiting = awaiting_notice(pool)
    untag = [node_id for node_id in pool.pending_untag if node_id not in waiting]
    if not pool.pending_tag and not untag:
        return pool
    try:
        existing = ec2.describe([*pool.pending_tag, *untag])
        ec2.tag(_present(pool.pending_tag, existing))
        ec2.untag(_present(untag, existing))
    except DependencyError as exc:
        if strict:
            raise
        logger.warning("tag work stays owed", extra={"error": str(exc)})
        return pool
    still_waiting = tuple(node_id for node_id in pool.pending_untag if node_id in waiting)
    settled = replace(pool, pending_tag=(), pending_untag=still_waiting)
    try:
        return store.save_pool(settled)
    except VersionConflictError:
        # Someone wrote after us and owns the pool's tag work now; ours is done anyway.
        return store.load_pool()


def _present(ids: Iterable[str], existing: dict[str, Instance]) -> list[str]:
    return [node_id for node_id in ids if node_id in existing and existing[node_id].state != "terminated"]
