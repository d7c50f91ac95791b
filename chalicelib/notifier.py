"""Telling the front-end: SPEC's ``increase``/``decrease`` notifications and their delivery.

Notifications are derived from how the pool changed (nodes newly in service, nodes newly
draining), queued on the pool (``outbox``) in the same write as the change, and delivered in
order afterwards. One that is not answered with a 2xx stays queued and is retried at the next
tick; until a ``decrease`` is delivered its nodes are neither terminated nor released.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chalicelib.pool import DRAINING, IN_SERVICE, Node, Pool
from chalicelib.settings import Settings

INCREASE = "increase"
DECREASE = "decrease"
SIGNATURE_HEADER = "X-Scaler-Signature"


def notifier_for(settings: Settings) -> Notifier | None:
    """The front-end's notifier, when ``FRONTEND_NOTIFY_URL`` is set."""
    if not settings.frontend_notify_url:
        return None
    return Notifier(
        settings.frontend_notify_url,
        settings.frontend_notify_secret,
        timeout=settings.frontend_notify_timeout_seconds,
    )


def announce(before: Pool, after: Pool, mode: str) -> Pool:
    """``after`` with the notifications that the change from ``before`` calls for, queued.

    A ``decrease`` names nodes newly draining and in-service nodes released from the pool (a
    swap); released nodes are untagged only once it is delivered (``untag_after``). Then an
    ``increase`` names nodes newly in service.
    """
    kept = {node.id for node in after.nodes}
    was_draining = {node.id for node in before.nodes if node.state == DRAINING}
    was_in_service = set(before.in_service_ids)
    released = [node for node in before.nodes if node.id not in kept and node.state == IN_SERVICE]
    draining = [n for n in after.nodes if n.state == DRAINING and n.id not in was_draining]
    serving = [n for n in after.nodes if n.state == IN_SERVICE and n.id not in was_in_service]
    queued, sequence = list(after.outbox), after.sequence
    untag_after = dict(after.untag_after or {})
    for change, nodes in ((DECREASE, [*draining, *released]), (INCREASE, serving)):
        if nodes:
            sequence += 1
            queued.append(_notice(after, sequence, change, mode, nodes))
            if change == DECREASE:
                untag_after.update({node.id: sequence for node in released})
    # A released node whose own decrease is still queued waits for that one.
    for node in before.nodes:
        if node.id not in kept and node.state == DRAINING and not node.drain_delivered:
            waiting = [n["sequence"] for n in queued if node.id in {r["id"] for r in n["removing"]}]
            if waiting:
                untag_after[node.id] = waiting[0]
    return replace(after, outbox=tuple(queued), sequence=sequence, untag_after=untag_after or None)


def awaiting_notice(pool: Pool) -> set[str]:
    """Released nodes whose decrease is not delivered yet: they keep the pool tag for now."""
    queued = {notice["sequence"] for notice in pool.outbox}
    return {node_id for node_id, sequence in (pool.untag_after or {}).items() if sequence in queued}


def _notice(pool: Pool, sequence: int, change: str, mode: str, nodes: list[Node]) -> dict[str, Any]:
    in_service = [node for node in pool.nodes if node.state == IN_SERVICE]
    listed = [{"id": node.id, "ip": node.ip} for node in nodes]
    return {
        "sequence": sequence,
        "change": change,
        "mode": mode,
        "node_ip": [node.ip for node in in_service],
        "cache_pool_ids": [node.id for node in in_service],
        "added": listed if change == INCREASE else [],
        "removing": listed if change == DECREASE else [],
    }


Post = Callable[[str, bytes, dict[str, str], float], int]


def _urllib_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Notifier:
    """POSTs notifications with a timeout and a few quick retries; never raises."""

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        timeout: float = 3.0,
        attempts: int = 3,
        post: Post = _urllib_post,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url, self.secret, self.timeout, self.attempts = url, secret, timeout, attempts
        self._post, self._sleep = post, sleep

    def headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.secret:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        return headers

    def deliver(self, notice: dict[str, Any]) -> bool:
        """True once the front-end answered 2xx."""
        body = json.dumps(notice, separators=(",", ":")).encode()
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(min(1.0, self.timeout) * attempt / 2)
            try:
                if 200 <= self._post(self.url, body, self.headers(body), self.timeout) < 300:
                    return True
            except (OSError, ValueError):
                continue  # refused, timed out, unreachable: try again, then leave it queued
        return False


def deliver_outbox(pool: Pool, notifier: Notifier, stamp: str | None) -> Pool:
    """Deliver queued notifications in order, stopping at the first that fails.

    A delivered ``decrease`` starts its nodes' drain clock: at ``stamp`` (a tick's T), or, when a
    route delivered it, at the next tick (routes do not start clocks).
    """
    queued = list(pool.outbox)
    delivered_removals: set[str] = set()
    while queued and notifier.deliver(queued[0]):
        notice = queued.pop(0)
        delivered_removals.update(node["id"] for node in notice["removing"])
    if len(queued) == len(pool.outbox):
        return pool
    nodes = [
        replace(node, drain_delivered=True, since=stamp)
        if node.state == DRAINING and node.id in delivered_removals
        else node
        for node in pool.nodes
    ]
    return replace(pool.with_nodes(nodes), outbox=tuple(queued))
