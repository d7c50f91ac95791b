"""SPEC's ``increase``/``decrease`` notices, derived from how the pool changed, and the bounded
queue (``Pool.outbox``) they wait in until the front-end answers. Pure: delivering them is
:mod:`chalicelib.adapters.frontend`'s.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from chalicelib.domain.pool import DRAINING, IN_SERVICE, Pool

INCREASE = "increase"
DECREASE = "decrease"
# The outbox holds at most one notice already numbered (the head: being sent, never changed
# again) and, behind it, at most one ``decrease`` and one ``increase`` not yet numbered, which
# absorb every later change. A front-end that stays down for days costs three notices.
MAX_QUEUED_NOTICES = 3


def announce(before: Pool, after: Pool, mode: str) -> Pool:
    """``after`` with the notifications that the change from ``before`` calls for, queued.

    A ``decrease`` names nodes newly draining and in-service nodes released from the pool (a
    swap); released nodes keep the pool tag until it is delivered (see :func:`awaiting_notice`).
    Then an ``increase`` names nodes newly in service.
    """
    kept = {node.id for node in after.nodes}
    was_draining = {node.id for node in before.nodes if node.state == DRAINING}
    was_in_service = set(before.in_service_ids)
    released = [node for node in before.nodes if node.id not in kept and node.state == IN_SERVICE]
    draining = [n for n in after.nodes if n.state == DRAINING and n.id not in was_draining]
    serving = [n for n in after.nodes if n.state == IN_SERVICE and n.id not in was_in_service]
    notices = [
        _notice(after, change, mode, nodes)
        for change, nodes in ((DECREASE, [*draining, *released]), (INCREASE, serving))
        if nodes
    ]
    return enqueue(after, notices) if notices else after


def enqueue(pool: Pool, notices: list[dict[str, Any]]) -> Pool:
    """``pool`` with ``notices`` queued: merged into the notices not yet numbered.

    What is not yet numbered has reached nobody, so it may still change: all of it becomes at
    most one ``decrease`` (every node leaving, unless it is in service again) and one
    ``increase`` (every node added, if it is still in service), both with the latest snapshot.
    A node taken back before its decrease went out needs no decrease at all.
    """
    numbered = [notice for notice in pool.outbox if "sequence" in notice]
    pending = [notice for notice in pool.outbox if "sequence" not in notice] + notices
    serving = set(pool.in_service_ids)
    removing = _union(notice["removing"] for notice in pending if notice["change"] == DECREASE)
    added = _union(notice["added"] for notice in pending if notice["change"] == INCREASE)
    merged = []
    for change, listed in (
        (DECREASE, [node for node in removing if node["id"] not in serving]),
        (INCREASE, [node for node in added if node["id"] in serving]),
    ):
        modes = [notice["mode"] for notice in pending if notice["change"] == change]
        if listed:
            merged.append(_notice(pool, change, modes[-1], listed))
    return _number_head(replace(pool, outbox=(*numbered, *merged)))


def _union(groups: Any) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for group in groups:
        for node in group:
            seen.setdefault(node["id"], node)
    return list(seen.values())


def _number_head(pool: Pool) -> Pool:
    """Number the outbox's head, if it is not numbered yet: it is the next to be sent.

    Numbers are handed out when a notice reaches the head, so they grow by one whatever was
    merged behind it; the number is stored before the notice is first sent, so a resend after
    a lost write carries the same number.
    """
    if not pool.outbox or "sequence" in pool.outbox[0]:
        return pool
    sequence = pool.sequence + 1
    head = {"sequence": sequence, **pool.outbox[0]}
    return replace(pool, outbox=(head, *pool.outbox[1:]), sequence=sequence)


def delivered(pool: Pool, sequence: int, stamp: str | None) -> Pool:
    """``pool`` after the front-end answered notice ``sequence`` with a 2xx.

    The notice leaves the outbox and the next one is numbered. A delivered ``decrease`` starts
    its nodes' drain clock: at ``stamp`` (a tick's T), or, when a route delivered it, at the
    next tick (routes do not start clocks). Answers ``pool`` itself when that notice is not
    at the head any more (another writer recorded it).
    """
    if not pool.outbox or pool.outbox[0].get("sequence") != sequence:
        return pool
    told = {node["id"] for node in pool.outbox[0]["removing"]}
    nodes = [
        replace(node, drain_delivered=True, since=stamp)
        if node.state == DRAINING and node.id in told and not node.drain_delivered
        else node
        for node in pool.nodes
    ]
    return _number_head(replace(pool.with_nodes(nodes), outbox=pool.outbox[1:]))


def awaiting_notice(pool: Pool) -> set[str]:
    """Nodes named in a queued decrease: a released one keeps the pool tag until it is told."""
    return {node["id"] for notice in pool.outbox for node in notice["removing"]}


def last_delivered(pool: Pool) -> int:
    """The sequence of the last notification the front-end answered (0 before any)."""
    if pool.outbox and "sequence" in pool.outbox[0]:
        return int(pool.outbox[0]["sequence"]) - 1
    return pool.sequence


def _notice(pool: Pool, change: str, mode: str, nodes: list[Any]) -> dict[str, Any]:
    """A notice without its number; ``nodes`` are pool nodes or ``{"id", "ip"}`` dicts."""
    in_service = [node for node in pool.nodes if node.state == IN_SERVICE]
    listed = [node if isinstance(node, dict) else {"id": node.id, "ip": node.ip} for node in nodes]
    return {
        "change": change,
        "mode": mode,
        "node_ip": [node.ip for node in in_service],
        "cache_pool_ids": [node.id for node in in_service],
        "added": listed if change == INCREASE else [],
        "removing": listed if change == DECREASE else [],
    }
