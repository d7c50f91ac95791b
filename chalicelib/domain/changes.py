"""The membership changes the routes make (set the node list, confirm a drain, terminate all),
planned without AWS: each answers the pool to write and its record, and the executor writes it
under the pool's version check before it calls EC2 (``service/executor.apply_change``).

They are not a tick's :class:`~chalicelib.domain.plan.Plan`: they launch nothing, so they need
no launch tokens and no lease; what they end is moved to ``Pool.terminating`` in the same write,
and terminating an instance twice is harmless. A route writing one never makes another writer
wait.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from chalicelib.domain.errors import BusyError, PoolConflictError, UnknownNodeError
from chalicelib.domain.instances import Instance
from chalicelib.domain.notices import announce
from chalicelib.domain.pool import DRAINING, IN_SERVICE, Node, Pool
from chalicelib.domain.records import Record, membership_record

CONFIRMED_KEPT = 32  # recent confirmations remembered, so a repeated one answers the same id


@dataclass(frozen=True)
class Change:
    pool: Pool  # to be written over the pool it was planned from
    record: Record
    # The change owes tag work of its own (adopted or released nodes): the route answers 503
    # when EC2 refuses it, and a retry of the same request finishes it.
    tags: bool = False
    # The change ends instances: once it is written, EC2 is asked to end all that
    # ``Pool.terminating`` holds (a termination another writer left unconfirmed included).
    ends: bool = False


def node_list(
    pool: Pool,
    ids: Sequence[str],
    instances: Mapping[str, Instance],
    *,
    at: datetime,
    source_ip: str,
    announced: bool,
) -> Change | None:
    """``ids`` as the pool's list, in that order: new ones adopted (to tag), draining ones
    taken back, dropped ones released (untagged once their ``decrease`` is delivered, never
    terminated). None when the list is the pool's already. ``announced``: a front-end is told."""
    nodes = [_member(pool.node(node_id), instances[node_id]) for node_id in ids]
    if tuple(nodes) == pool.nodes:
        return None
    adopted = [node_id for node_id in ids if pool.node(node_id) is None]
    released = [node.id for node in pool.nodes if node.id not in ids]
    changed = pool.with_nodes(
        nodes,
        # Tag work still owed for nodes that stay listed is kept, not forgotten.
        pending_tag=(*[i for i in pool.pending_tag if i in ids and i not in adopted], *adopted),
        pending_untag=(*pool.pending_untag, *released),
        recent_miss_rates=(),
    )
    if announced:
        # A swap: decrease for the released nodes now, increase for the adopted ones when they
        # come into service; released nodes keep their tag until told.
        changed = announce(pool, changed, "manual")
    record = membership_record(
        at,
        change="replace",
        added=adopted,
        removed=released,
        reason="node list set through cache_list",
        source_ip=source_ip,
    )
    return Change(changed, record, tags=True)


def _member(current: Node | None, instance: Instance) -> Node:
    if current is None:
        return Node.launching(instance, adopted=True)
    # A draining node that the manager-app lists again is taken back, cache still warm.
    return replace(current, state=IN_SERVICE) if current.state == DRAINING else current


def drain_confirmed(pool: Pool, node: Node, ip: str | None, *, at: datetime, source_ip: str) -> Change:
    """The front-end (or an operator) confirmed that draining ``node`` at ``ip`` may go: it leaves
    the list and is to be terminated. Refused (503, try again) while its ``decrease`` is
    undelivered. The confirmation is remembered by IP, when the node has one."""
    if not node.drain_delivered:
        # SPEC: a node goes only after its decrease was answered with a 2xx. A front-end may
        # confirm a breath before that answer is recorded: it tries again shortly.
        raise BusyError(f"{node.id}{_at(ip)} is draining, its decrease not delivered yet; try again")
    confirmed = {**(pool.confirmed or {}), **({ip: node.id} if ip else {})}
    record = membership_record(
        at,
        change="drain_confirmed",
        removed=[node.id],
        reason=f"the drain of {node.id}{_at(ip)} was confirmed: terminated",
        source_ip=source_ip,
    )
    trimmed = dict(list(confirmed.items())[-CONFIRMED_KEPT:])
    return Change(replace(pool.ending([node.id]), confirmed=trimmed), record, ends=True)


def draining_at(pool: Pool, ip: str) -> Node | str:
    """The draining node at ``ip``, or the id an earlier confirmation for ``ip`` ended."""
    node = next((node for node in pool.nodes if node.ip == ip), None)
    if node is not None and node.state == DRAINING:
        return node
    earlier = (pool.confirmed or {}).get(ip)
    if earlier is not None:
        return earlier
    if node is None:
        raise UnknownNodeError(f"no node of the pool has IP {ip}")
    raise PoolConflictError(f"{node.id} at {ip} is {node.state}, not draining")


def draining_node(pool: Pool, node_id: str) -> Node | str:
    """The draining node ``node_id``, or ``node_id`` itself when an earlier confirmation ended
    it: :func:`draining_at` for a caller who knows the node by id (an operator), not by IP."""
    node = pool.node(node_id)
    if node is not None and node.state == DRAINING:
        return node
    if node_id in (pool.confirmed or {}).values():
        return node_id
    if node is None:
        raise UnknownNodeError(f"no node of the pool has id {node_id}")
    raise PoolConflictError(f"{node_id}{_at(node.ip)} is {node.state}, not draining")


def _at(ip: str | None) -> str:
    return f" at {ip}" if ip else ""


def terminate_all(pool: Pool, doomed: Sequence[str], *, at: datetime, source_ip: str) -> Change | None:
    """An empty list, and ``doomed`` (the pool's live instances, listed or only tagged, released
    ones excepted) to be terminated. None when there is nothing to do."""
    if not pool.nodes and not doomed:
        return None
    record = membership_record(
        at,
        change="terminate_all",
        removed=list(doomed),
        reason="terminate_all test endpoint",
        source_ip=source_ip,
    )
    intent = replace(
        pool.with_nodes([], recent_miss_rates=(), pending_plan=None),
        terminating=tuple(dict.fromkeys([*pool.terminating, *doomed])),
    )
    return Change(intent, record, ends=True)
