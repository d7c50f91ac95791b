"""The notification queue, pure: any run of membership changes and deliveries keeps it bounded,
never changes a numbered notice, numbers by one, and ends with the pool's real snapshot."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.notices import MAX_QUEUED_NOTICES, announce, delivered, last_delivered
from chalicelib.domain.pool import DRAINING, IN_SERVICE, LAUNCHING, Node, Pool

IDS = [f"i-{n:08x}" for n in range(12)]
KINDS = ["serve", "drain", "take_back", "release", "deliver", "fail"]
STEPS = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 11)), max_size=120)


def change(pool: Pool, kind: str, pick: int) -> Pool:
    """One membership change of the kinds the scaler makes, on the node ``pick`` points at."""
    node_id = IDS[pick]
    node = pool.node(node_id)
    if kind == "serve" and node is None and len(pool.nodes) < 8:
        return pool.with_nodes([*pool.nodes, Node(node_id, IN_SERVICE, ip=f"10.0.0.{pick}")])
    if kind == "serve" and node is not None and node.state == LAUNCHING:
        return pool.with_nodes([replace(n, state=IN_SERVICE) if n.id == node_id else n for n in pool.nodes])
    if kind == "drain" and node is not None and node.state == IN_SERVICE:
        return pool.with_nodes([replace(n, state=DRAINING) if n.id == node_id else n for n in pool.nodes])
    if kind == "take_back" and node is not None and node.state == DRAINING:
        back = replace(node, state=IN_SERVICE, drain_delivered=False)
        return pool.with_nodes([back if n.id == node_id else n for n in pool.nodes])
    if kind == "release" and node is not None:
        return pool.with_nodes([n for n in pool.nodes if n.id != node_id])
    return pool


@settings(max_examples=300, deadline=None, derandomize=True)
@given(STEPS)
def test_any_run_of_changes_keeps_the_queue_bounded_and_numbered_by_one(steps: list[tuple[str, int]]) -> None:
    pool, sent, numbered = Pool(), [], {}
    for kind, pick in steps:
        if kind in ("deliver", "fail"):
            if pool.outbox:
                head = pool.outbox[0]
                sent.append(head)
                if kind == "deliver":
                    pool = delivered(pool, head["sequence"], None)
        else:
            pool = announce(pool, change(pool, kind, pick), "automatic")
        assert len(pool.outbox) <= MAX_QUEUED_NOTICES
        for notice in pool.outbox:
            if "sequence" in notice:  # once numbered, never changed
                assert numbered.setdefault(notice["sequence"], notice) == notice
        if pool.outbox:
            assert "sequence" in pool.outbox[0], "the head is always numbered before it is sent"
        assert last_delivered(pool) <= pool.sequence
    # The front-end comes back: everything is delivered, in order, numbered by one.
    while pool.outbox:
        head = pool.outbox[0]
        sent.append(head)
        pool = delivered(pool, head["sequence"], None)
    distinct = list(dict.fromkeys(notice["sequence"] for notice in sent))
    assert distinct == list(range(1, len(distinct) + 1))
    assert last_delivered(pool) == pool.sequence == len(distinct)
    serving = [node.id for node in pool.nodes if node.state == IN_SERVICE]
    assert (sent[-1]["cache_pool_ids"] if sent else []) == serving, "the front-end ends up current"


def test_a_draining_node_is_named_in_a_queued_decrease_until_one_is_delivered() -> None:
    a, b = Node(IDS[0], IN_SERVICE, ip="10.0.0.1"), Node(IDS[1], IN_SERVICE, ip="10.0.0.2")
    pool = announce(Pool(), Pool(nodes=(a, b)), "automatic")  # increase, numbered 1, not delivered
    drained = announce(pool, pool.with_nodes([a, replace(b, state=DRAINING)]), "automatic")
    taken_back = announce(drained, drained.with_nodes([a, b]), "automatic")
    # b left and came back before anyone was told it was leaving: no decrease for it at all.
    assert [n["change"] for n in taken_back.outbox] == ["increase", "increase"]
    drained = announce(taken_back, taken_back.with_nodes([a, replace(b, state=DRAINING)]), "automatic")
    changes = [(n["change"], n.get("sequence")) for n in drained.outbox]
    assert changes == [("increase", 1), ("decrease", None)]
    assert drained.outbox[1]["removing"] == [{"id": b.id, "ip": b.ip}]
    told = delivered(drained, 1, "2026-11-26T12:00:00Z")
    assert told.outbox[0]["sequence"] == 2 and told.sequence == 2 and last_delivered(told) == 1
    done = delivered(told, 2, "2026-11-26T12:01:00Z")
    assert done.node(b.id).drain_delivered and done.node(b.id).since == "2026-11-26T12:01:00Z"
