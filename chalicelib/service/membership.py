"""Membership changes made through the API: set the node list, confirm a drain, terminate all,
list instances.

Write first, act second, so that a failure loses no node: each change is written to the pool
item under its version check with the work it implies (tags owed in ``pending_tag`` and
``pending_untag``, instances to end in ``terminating``), and only then is EC2 called; a failed
EC2 call answers 503 and the next writer (or tick) finishes the recorded work. Instances the
manager-app drops from the list are only ever released (untagged once their ``decrease`` was
delivered), never terminated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.ec2 import Ec2Nodes
from chalicelib.adapters.frontend import Deadline, Notifier
from chalicelib.adapters.observability import logger
from chalicelib.domain.clock import WallClock, wall_clock
from chalicelib.domain.config import MAX_NODES
from chalicelib.domain.errors import (
    BusyError,
    DependencyError,
    PoolConflictError,
    UnknownNodeError,
    ValidationError,
    VersionConflictError,
    retry_on_conflict,
)
from chalicelib.domain.instances import Instance, NodeIdentity
from chalicelib.domain.notices import announce, awaiting_notice
from chalicelib.domain.pool import DRAINING, IN_SERVICE, Node, Pool
from chalicelib.domain.records import Record, membership_record
from chalicelib.domain.settings import Settings
from chalicelib.service.executor import end_terminating, notify, refuse_if_held

INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
ADOPTABLE_STATES = ("pending", "running")
_CONFIRMED_KEPT = 32


def parse_cache_pool_ids(pairs: list[tuple[str, Any]], *, from_form: bool) -> list[str]:
    """``cache_pool_ids`` of a cache_list POST: 1..8 unique EC2 instance ids, in order.

    A form may repeat the field or give one comma-separated value.
    """
    unknown = sorted({key for key, _ in pairs if key != "cache_pool_ids"})
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}")
    values = [value for _, value in pairs]
    if not values:
        raise ValidationError("cache_pool_ids is required")
    if from_form:
        ids = [part.strip() for value in values for part in value.split(",") if part.strip()]
    elif len(values) == 1 and isinstance(values[0], list):
        ids = values[0]
    else:
        raise ValidationError("cache_pool_ids must be a list of instance ids")
    if not all(isinstance(node_id, str) for node_id in ids):
        raise ValidationError("cache_pool_ids must hold only strings")
    if not 1 <= len(ids) <= MAX_NODES:
        raise ValidationError(f"cache_pool_ids must hold 1..{MAX_NODES} ids, got {len(ids)}")
    malformed = [node_id for node_id in ids if not INSTANCE_ID.fullmatch(node_id)]
    if malformed:
        raise ValidationError(f"not EC2 instance ids: {', '.join(map(repr, malformed[:8]))}")
    repeated = sorted({node_id for node_id in ids if ids.count(node_id) > 1})
    if repeated:
        raise ValidationError(f"ids listed more than once: {', '.join(repeated)}")
    return ids


class Membership:
    """The API's membership operations over the table and EC2."""

    def __init__(
        self,
        store: StateStore,
        ec2: Ec2Nodes,
        settings: Settings,
        clock: Callable[[Pool], datetime],
        notifier: Notifier | None = None,
        *,
        wall_clock: WallClock = wall_clock,
        deadline: Deadline | None = None,
    ) -> None:
        self.store = store
        self.ec2 = ec2
        self.settings = settings
        self.clock = clock
        self.notifier = notifier
        self.wall_clock = wall_clock
        self.deadline = deadline

    # -- cache_list POST ------------------------------------------------------------------

    def replace(self, ids: list[str], *, source_ip: str) -> Pool:
        """Make ``ids`` the pool, in that order: adopt new ones, release dropped ones."""
        identity = self.ec2.node_identity(self.settings.launch)

        def attempt() -> Pool:
            pool = settle_tags(self.store, self.ec2, self.store.load_pool(), strict=False)
            refuse_if_held(pool, self.wall_clock())
            ending = [node_id for node_id in ids if node_id in pool.terminating]
            if ending:
                raise ValidationError(f"being terminated by the pool, cannot be adopted: {', '.join(ending)}")
            # Checked after the load: a node another writer ends from here on changes the pool's
            # version (its intent is written before EC2 is called), so this write would lose.
            instances = self._check_adoptable(ids, identity)
            nodes = [self._member(pool.node(node_id), instances[node_id]) for node_id in ids]
            if tuple(nodes) == pool.nodes:
                return pool
            saved = self.store.save_pool(*self._listed(pool, nodes, source_ip))
            # The new list stands; a tag call that fails here answers 503, and the owed work is
            # finished by the next writer (a retry of this request does it at once).
            told = notify(self.store, saved, self.notifier, None, self.deadline)
            return settle_tags(self.store, self.ec2, told)

        return retry_on_conflict(attempt)

    def _listed(self, pool: Pool, nodes: list[Node], source_ip: str) -> tuple[Pool, Record]:
        """The pool with ``nodes`` as its list (adopted ones to tag, dropped ones to untag once
        told), and the change's record."""
        ids = [node.id for node in nodes]
        adopted = [node_id for node_id in ids if pool.node(node_id) is None]
        released = [node.id for node in pool.nodes if node.id not in ids]
        record = membership_record(
            self.clock(pool),
            change="replace",
            added=adopted,
            removed=released,
            reason="node list set through cache_list",
            source_ip=source_ip,
        )
        changed = pool.with_nodes(
            nodes,
            # Tag work still owed for nodes that stay listed is kept, not forgotten.
            pending_tag=(*[i for i in pool.pending_tag if i in ids and i not in adopted], *adopted),
            pending_untag=(*pool.pending_untag, *released),
            recent_miss_rates=(),
        )
        if self.notifier is not None:
            # A swap: decrease for the released nodes now, increase for the adopted ones
            # when they come into service; released nodes keep their tag until told.
            changed = announce(pool, changed, "manual")
        return changed, record

    def _check_adoptable(self, ids: list[str], identity: NodeIdentity) -> dict[str, Instance]:
        image, profile = identity.image_id, identity.instance_profile
        if image is None:
            raise PoolConflictError(
                "no node image is configured (NODE_AMI_ID or NODE_LAUNCH_TEMPLATE), "
                "so no instance can be checked for adoption"
            )
        found = self.ec2.describe(ids)
        problems = []
        for node_id in ids:
            instance = found.get(node_id)
            if instance is None:
                problems.append(f"{node_id}: no such instance")
            elif instance.state not in ADOPTABLE_STATES:
                problems.append(f"{node_id}: instance is {instance.state}, not pending or running")
            elif instance.image_id != image:
                problems.append(f"{node_id}: image {instance.image_id} is not the node image {image}")
            elif not identity.carries_profile(instance):
                # IAM lets the role tag (adopt) only instances with the node profile: refuse
                # here, naming the instance, rather than let EC2's refusal surface as a 503.
                carried = instance.instance_profile_arn
                problems.append(
                    f"{node_id}: has no instance profile, not the node instance profile {profile}"
                    if carried is None
                    else f"{node_id}: instance profile {carried} is not the node instance profile {profile}"
                )
            elif instance.pool not in (None, self.settings.pool_name):
                problems.append(f"{node_id}: belongs to pool {instance.pool!r}")
        if problems:
            raise ValidationError("; ".join(problems))
        return found

    @staticmethod
    def _member(current: Node | None, instance: Instance) -> Node:
        if current is None:
            return Node.launching(instance, adopted=True)
        # A draining node that the manager-app lists again is taken back, cache still warm.
        return replace(current, state=IN_SERVICE) if current.state == DRAINING else current

    # -- terminate_all (test endpoint) ----------------------------------------------------

    def terminate_all(self, *, source_ip: str) -> list[str]:
        """Terminate every live instance of the pool, listed or only tagged, and empty the list.

        Released nodes are no longer the pool's: untagged if they may be, and never terminated
        even while they keep the tag for their undelivered decrease.
        """

        def attempt() -> list[str]:
            pool = settle_tags(self.store, self.ec2, self.store.load_pool(), strict=False)
            refuse_if_held(pool, self.wall_clock())
            released = set(pool.pending_untag)
            tagged = [instance.id for instance in self.ec2.list_pool_instances()]
            candidates = [i for i in dict.fromkeys([*pool.live_ids, *tagged]) if i not in released]
            doomed = sorted(self.ec2.alive(candidates), key=candidates.index)
            if not pool.nodes and not doomed:
                return []
            record = membership_record(
                self.clock(pool),
                change="terminate_all",
                removed=doomed,
                reason="terminate_all test endpoint",
                source_ip=source_ip,
            )
            # The intent first: an empty list and the instances to end, then EC2.
            intent = replace(
                pool.with_nodes([], recent_miss_rates=(), pending_plan=None),
                terminating=tuple(dict.fromkeys([*pool.terminating, *doomed])),
            )
            end_terminating(self.store, self.ec2, self.store.save_pool(intent, record))
            return doomed

        return retry_on_conflict(attempt)

    # -- the front-end confirms a drain ---------------------------------------------------

    def confirm_drain(self, ip: str, *, source_ip: str) -> str:
        """Terminate the draining node at ``ip`` and drop it from the list; answer its id.

        The end is recorded before EC2 is called, so no other writer can take the node back
        once it may go. A repeated confirmation answers the same id (recent confirmations are
        remembered), and finishes a termination that EC2 failed the first time.
        """

        def attempt() -> str:
            pool = self.store.load_pool()
            node = next((node for node in pool.nodes if node.ip == ip), None)
            if node is None or node.state != DRAINING:
                earlier = (pool.confirmed or {}).get(ip)
                if earlier is not None:
                    if earlier in pool.terminating:
                        end_terminating(self.store, self.ec2, pool)
                    return earlier
                if node is None:
                    raise UnknownNodeError(f"no node of the pool has IP {ip}")
                raise PoolConflictError(f"{node.id} at {ip} is {node.state}, not draining")
            refuse_if_held(pool, self.wall_clock())
            if not node.drain_delivered:
                # SPEC: a node goes only after its decrease was answered with a 2xx. A front-end
                # may confirm a breath before that answer is recorded: it tries again shortly.
                raise BusyError(f"{node.id} at {ip} is draining, its decrease not delivered yet; try again")
            confirmed = {**(pool.confirmed or {}), ip: node.id}
            record = membership_record(
                self.clock(pool),
                change="drain_confirmed",
                removed=[node.id],
                reason=f"the front-end confirmed {node.id} at {ip} may go: terminated",
                source_ip=source_ip,
            )
            trimmed = dict(list(confirmed.items())[-_CONFIRMED_KEPT:])
            saved = self.store.save_pool(replace(pool.ending([node.id]), confirmed=trimmed), record)
            end_terminating(self.store, self.ec2, saved)
            return node.id

        return retry_on_conflict(attempt)

    # -- list ---------------------------------------------------------------------------

    def list_instances(self) -> list[dict[str, Any]]:
        """The pool's nodes in index order, with what EC2 says of each now."""
        pool = self.store.load_pool()
        found = self.ec2.describe(pool.live_ids)
        rows = []
        for index, node in enumerate(pool.nodes):
            instance = found.get(node.id)
            rows.append(
                {
                    "id": node.id,
                    "index": index,
                    "state": node.state,
                    "ip": (instance.ip if instance else None) or node.ip,
                    "instance_type": (instance.instance_type if instance else None) or node.instance_type,
                    "launched_at": (instance.launched_at if instance else None) or node.launched_at,
                    "ec2_state": instance.state if instance else "unknown",
                }
            )
        return rows


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
