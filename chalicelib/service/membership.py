"""Membership changes made through the API: set the node list, confirm a drain, terminate all,
list instances.

Each reads the pool and EC2, has ``domain/changes.py`` plan the change, and has the executor
write it first and act second (``executor.apply_change``): a failed EC2 call answers 503 and the
next writer (or tick) finishes the recorded work. Instances the manager-app drops from the list
are only ever released (untagged once their ``decrease`` was delivered), never terminated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.ec2 import Ec2Nodes
from chalicelib.adapters.frontend import Deadline, Notifier
from chalicelib.domain import changes
from chalicelib.domain.clock import WallClock, wall_clock
from chalicelib.domain.config import MAX_NODES, TEXT_SPACE
from chalicelib.domain.errors import PoolConflictError, ValidationError, retry_on_conflict
from chalicelib.domain.instances import Instance, NodeIdentity
from chalicelib.domain.pool import Node, Pool
from chalicelib.domain.settings import Settings
from chalicelib.service.executor import apply_change, end_terminating, refuse_if_held, settle_tags

INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
ADOPTABLE_STATES = ("pending", "running")


def parse_cache_pool_ids(pairs: list[tuple[str, Any]], *, from_form: bool) -> list[str]:
    """``cache_pool_ids`` of a cache_list POST: 1..8 unique EC2 instance ids, in order.

    A form may give one comma-separated value (whitespace around each id ignored, a trailing comma
    allowed) or repeat the field, one id each.
    """
    unknown = sorted({key for key, _ in pairs if key != "cache_pool_ids"})
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}")
    values = [value for _, value in pairs]
    if not values:
        raise ValidationError("cache_pool_ids is required")
    if from_form and len(values) == 1:
        ids = [part.strip(TEXT_SPACE) for part in values[0].split(",")]
        if len(ids) > 1 and not ids[-1]:
            ids.pop()  # "i-…,i-…," as a list joined with a comma after each id
    elif from_form:
        ids = values
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
            change = changes.node_list(
                pool,
                ids,
                instances,
                at=self.clock(pool),
                source_ip=source_ip,
                announced=self.notifier is not None,
            )
            return pool if change is None else self._apply(change)

        return retry_on_conflict(attempt)

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

    def _apply(self, change: changes.Change) -> Pool:
        return apply_change(self.store, self.ec2, change, self.notifier, self.deadline)

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
            change = changes.terminate_all(pool, doomed, at=self.clock(pool), source_ip=source_ip)
            if change is not None:
                self._apply(change)
            return doomed

        return retry_on_conflict(attempt)

    # -- the front-end confirms a drain ---------------------------------------------------

    def confirm_drain(self, ip: str, *, source_ip: str) -> str:
        """Terminate the draining node at ``ip`` and drop it from the list; answer its id.

        The end is recorded before EC2 is called, so no other writer can take the node back
        once it may go. A repeated confirmation answers the same id (recent confirmations are
        remembered), and finishes a termination that EC2 failed the first time.
        """
        return self._confirm(lambda pool: changes.draining_at(pool, ip), source_ip=source_ip)

    def confirm_drain_of(self, node_id: str, *, source_ip: str) -> str:
        """:meth:`confirm_drain` for the node with id ``node_id`` (operators know nodes by id)."""
        return self._confirm(lambda pool: changes.draining_node(pool, node_id), source_ip=source_ip)

    def _confirm(self, find: Callable[[Pool], Node | str], *, source_ip: str) -> str:
        def attempt() -> str:
            pool = self.store.load_pool()
            node = find(pool)
            if isinstance(node, str):  # confirmed before: finish its end if EC2 failed it
                if node in pool.terminating:
                    end_terminating(self.store, self.ec2, pool)
                return node
            refuse_if_held(pool, self.wall_clock())
            change = changes.drain_confirmed(pool, node, node.ip, at=self.clock(pool), source_ip=source_ip)
            self._apply(change)
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
