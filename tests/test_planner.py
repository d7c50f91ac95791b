"""The tick's decision without AWS: ``plan_tick`` and ``make_plan`` on plain data, the
executor's pure half (``apply_outcome``) and the routes' membership changes
(``domain/changes.py``), table-driven and as properties.

No moto and no adapters: the pool, the instances EC2 reports and the nodes' traffic are built
here, so each case reads as SPEC's rule it checks.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import changes
from chalicelib.domain.clock import iso
from chalicelib.domain.config import MAX_NODES, default_config
from chalicelib.domain.errors import BusyError, PoolConflictError, UnknownNodeError
from chalicelib.domain.instances import Instance
from chalicelib.domain.node_life import Timeouts, deadline
from chalicelib.domain.planner import Readings, Rules, make_plan, plan_tick
from chalicelib.domain.policies import policy_named
from chalicelib.domain.policy import HOLD, REPAIR, REPLACE, SCALE_IN, SCALE_OUT, Decision
from chalicelib.domain.pool import DRAINING, IN_SERVICE, LAUNCHING, STATES, Node, Pool
from chalicelib.domain.traffic import NodeTraffic, PoolTraffic
from chalicelib.service.executor import Outcome, apply_outcome

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EARLIER = iso(NOW - timedelta(hours=1))
RULES = Rules("default", Timeouts(readiness="running"), notify=True)


def serving(count: int, state: str = IN_SERVICE) -> Pool:
    return Pool(
        nodes=tuple(
            Node(f"i-{n}", state, ip=f"10.0.0.{n}", since=EARLIER, launched_at=EARLIER) for n in range(count)
        )
    )


def running(pool: Pool) -> dict[str, Instance]:
    """What EC2 reports: every listed node running."""
    return {
        node.id: Instance(node.id, "running", "ami", node.ip, "t3.micro", EARLIER, "default")
        for node in pool.nodes
    }


def traffic(pool: Pool, miss_rate: float, gets: float = 1000.0) -> PoolTraffic:
    return PoolTraffic(
        {
            node.id: NodeTraffic(gets, gets * (1 - miss_rate), last_published=NOW - timedelta(minutes=1))
            for node in pool.nodes
        }
    )


def plan(pool: Pool, readings: Readings, rules: Rules = RULES, **config: Any) -> Any:
    merged = {**default_config(), **config}
    return plan_tick(pool, merged, readings, policy_named(merged["policy"]), NOW, rules)


# -- SPEC's rules, one case each ------------------------------------------------------------


@pytest.mark.parametrize("policy", ["ratio", "predictive"])
def test_no_data_never_shrinks_the_pool(policy: str) -> None:
    pool = serving(4)
    planned = plan(pool, Readings(running(pool), PoolTraffic()), policy=policy)
    assert planned.plan.summary["action"] == HOLD
    assert not planned.plan.drain and not planned.plan.terminate and not planned.plan.launch


def test_a_failed_metrics_read_is_no_data_and_says_so() -> None:
    pool = serving(4)
    planned = plan(pool, Readings(running(pool), PoolTraffic(), metrics_error="no data: throttled"))
    assert planned.plan.summary["action"] == HOLD
    assert planned.plan.summary["reason"].startswith("no data: throttled")


def test_bounds_come_first() -> None:
    pool = serving(1)
    planned = plan(pool, Readings(running(pool), traffic(pool, 0.5)), min_pool_size=3)
    assert planned.plan.summary["action"] == REPAIR
    assert [launch.slot for launch in planned.plan.launch] == [1, 2]


def test_a_scale_in_drains_when_a_front_end_is_told_and_terminates_nothing() -> None:
    pool = serving(4)
    readings = Readings(running(pool), traffic(pool, 0.05))
    planned = plan(pool, readings, scale_in_window_minutes=1)
    assert planned.plan.summary["action"] == SCALE_IN
    assert planned.plan.drain == ("i-2", "i-3") and planned.plan.terminate == ()
    without = plan(pool, readings, Rules("default", RULES.timeouts, notify=False), scale_in_window_minutes=1)
    assert without.plan.drain == () and without.plan.terminate == ("i-2", "i-3")


def test_a_node_terminated_out_of_band_is_replaced() -> None:
    pool = serving(3)
    instances = running(pool)
    del instances["i-1"]  # EC2 no longer reports it
    planned = plan(pool, Readings(instances, traffic(pool, 0.5)))
    assert planned.plan.summary["action"] == REPLACE
    assert len(planned.plan.launch) == 1
    assert "i-1" not in [node.id for node in planned.pool.nodes]


def test_one_node_s_impossible_figures_are_left_out_of_the_sums() -> None:
    pool = serving(2)
    figures = traffic(pool, 0.5)
    figures.nodes["i-0"] = NodeTraffic(100.0, 300.0, last_published=NOW - timedelta(minutes=1))
    planned = plan(pool, Readings(running(pool), figures))
    assert planned.plan.summary["miss_rate"] == pytest.approx(0.5)
    assert "i-0 left out of the sums: more hits than GET requests" in planned.plan.summary["reason"]


def test_a_launching_node_ready_comes_into_service_and_is_announced() -> None:
    pool = serving(2, LAUNCHING)
    planned = plan(pool, Readings(running(pool), traffic(pool, 0.5)))
    assert [node.state for node in planned.pool.nodes] == [IN_SERVICE, IN_SERVICE]
    assert [notice["change"] for notice in planned.pool.outbox] == ["increase"]


def test_the_plan_round_trips_through_its_stored_shape() -> None:
    from chalicelib.domain.plan import Plan

    pool = serving(4)
    planned = plan(pool, Readings(running(pool), traffic(pool, 0.95)))
    assert planned.plan.launch
    assert Plan.from_data(planned.plan.to_data()) == planned.plan


# -- properties ------------------------------------------------------------------------------

NODES = st.lists(st.sampled_from(STATES), min_size=0, max_size=MAX_NODES)


@settings(max_examples=300, deadline=None)
@given(states=NODES, target=st.integers(1, MAX_NODES), notify=st.booleans(), replacing=st.booleans())
def test_a_plan_never_leaves_more_than_eight_live(
    states: list[str], target: int, notify: bool, replacing: bool
) -> None:
    """Nodes staying after the plan's terminations, plus its launches, never exceed 8."""
    pool = Pool(nodes=tuple(Node(f"i-{n}", state) for n, state in enumerate(states)))
    serving_ids = [node.id for node in pool.nodes if node.state == IN_SERVICE]
    replaced = serving_ids[:1] if replacing and serving_ids else []
    decision = Decision(pool.pool_size, target, REPLACE if replaced else HOLD, "test")
    made = make_plan(
        pool, decision, pool_name="p", label="l", source="tick", time=iso(NOW), summary={},
        notify=notify, replacing=replaced,
    )  # fmt: skip
    ended = set(made.terminate) | set(made.replacing)
    assert len([node for node in pool.nodes if node.id not in ended]) + len(made.launch) <= MAX_NODES
    # Told before it goes: with a front-end, nothing listed is terminated by the plan itself.
    if notify:
        assert not ended & {node.id for node in pool.nodes}


@settings(max_examples=300, deadline=None)
@given(states=NODES, target=st.integers(1, MAX_NODES))
def test_the_outcome_of_a_plan_reaches_its_target_and_announces_every_change(
    states: list[str], target: int
) -> None:
    """Applying a plan with everything EC2 did: members reach the target (within the room), new
    drains are in a queued decrease, and the outbox stays within its bound."""
    pool = Pool(nodes=tuple(Node(f"i-{n}", state, ip=f"10.0.0.{n}") for n, state in enumerate(states)))
    decision = Decision(pool.pool_size, target, SCALE_OUT if target > pool.pool_size else SCALE_IN, "test")
    made = make_plan(
        pool, decision, pool_name="p", label="l", source="resize", time=None, summary=decision.to_dict(),
        notify=True,
    )  # fmt: skip
    added = [Node(f"n-{launch.slot}", LAUNCHING, token=launch.token) for launch in made.launch]
    after = apply_outcome(pool, made, Outcome(added=added))
    members = [node for node in after.nodes if node.state != DRAINING]
    room = MAX_NODES - len(pool.nodes) + len(made.take_back)
    assert len(members) == min(target, len(pool.nodes) - pool.count(DRAINING) + room)
    told = {node["id"] for notice in after.outbox for node in notice["removing"]}
    assert set(made.drain) <= told
    assert len(after.outbox) <= 3


# -- the routes' membership changes (domain/changes.py) ---------------------------------------


def test_a_node_list_adopts_new_ids_takes_back_drains_and_releases_the_rest() -> None:
    pool = serving(3)
    pool = pool.with_nodes([*pool.nodes[:2], replace(pool.nodes[2], state=DRAINING)])
    reported = {
        **running(pool),
        "i-9": Instance("i-9", "running", "ami", "10.0.0.9", "t3.micro", EARLIER, None),
    }
    change = changes.node_list(
        pool, ["i-9", "i-2", "i-0"], reported, at=NOW, source_ip="1.2.3.4", announced=True
    )
    assert change is not None and change.tags and not change.ends
    after = change.pool
    assert [(node.id, node.state) for node in after.nodes] == [
        ("i-9", LAUNCHING),
        ("i-2", IN_SERVICE),
        ("i-0", IN_SERVICE),
    ]
    assert after.pending_tag == ("i-9",) and after.pending_untag == ("i-1",)
    assert after.terminating == ()  # a dropped node is released, never terminated
    # The released node is in a queued decrease, and keeps its tag until that is delivered.
    assert [notice["change"] for notice in after.outbox] == ["decrease", "increase"]
    assert [node["id"] for node in after.outbox[0]["removing"]] == ["i-1"]
    assert change.record.body["source_ip"] == "1.2.3.4"
    assert (change.record.body["added"], change.record.body["removed"]) == (["i-9"], ["i-1"])


def test_the_same_node_list_is_no_change() -> None:
    pool = serving(2)
    assert (
        changes.node_list(pool, ["i-0", "i-1"], running(pool), at=NOW, source_ip="", announced=True) is None
    )


def test_a_confirmed_drain_ends_the_node_and_is_remembered_by_ip() -> None:
    pool = serving(3)
    drained = replace(pool.nodes[1], state=DRAINING, drain_delivered=True)
    pool = pool.with_nodes([pool.nodes[0], pool.nodes[2], drained])
    node = changes.draining_at(pool, "10.0.0.1")
    assert node == drained
    change = changes.drain_confirmed(pool, drained, "10.0.0.1", at=NOW, source_ip="")
    assert change.ends and change.pool.terminating == ("i-1",)
    assert change.pool.node("i-1") is None
    # Confirmed again after it went: the same id, not an error.
    assert changes.draining_at(change.pool, "10.0.0.1") == "i-1"


def test_a_drain_is_confirmed_only_after_its_decrease_was_delivered() -> None:
    pool = serving(2)
    undelivered = replace(pool.nodes[1], state=DRAINING, drain_delivered=False)
    with pytest.raises(BusyError):
        changes.drain_confirmed(
            pool.with_nodes([pool.nodes[0], undelivered]), undelivered, "10.0.0.1", at=NOW, source_ip=""
        )


@pytest.mark.parametrize(("ip", "error"), [("10.0.0.7", UnknownNodeError), ("10.0.0.0", PoolConflictError)])
def test_a_confirmation_for_no_draining_node_is_refused(ip: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        changes.draining_at(serving(2), ip)


def test_a_drain_confirmed_by_node_id_is_the_same_confirmation() -> None:
    pool = serving(3)
    drained = replace(pool.nodes[2], state=DRAINING, drain_delivered=True)
    pool = pool.with_nodes([*pool.nodes[:2], drained])
    assert changes.draining_node(pool, "i-2") == drained
    with pytest.raises(PoolConflictError, match="i-0 at 10.0.0.0 is in_service, not draining"):
        changes.draining_node(pool, "i-0")
    with pytest.raises(UnknownNodeError):
        changes.draining_node(pool, "i-9")
    after = changes.drain_confirmed(pool, drained, drained.ip, at=NOW, source_ip="cli").pool
    # Confirmed again, by id or by IP, after it went: the same id, not an error.
    assert changes.draining_node(after, "i-2") == changes.draining_at(after, "10.0.0.2") == "i-2"


def test_a_draining_node_without_an_ip_is_confirmed_by_id_alone() -> None:
    drained = Node("i-7", DRAINING, drain_delivered=True)
    change = changes.drain_confirmed(Pool(nodes=(drained,)), drained, None, at=NOW, source_ip="cli")
    assert change.pool.terminating == ("i-7",) and not change.pool.confirmed
    assert change.record.body["reason"] == "the drain of i-7 was confirmed: terminated"


def test_confirmations_are_remembered_within_a_bound() -> None:
    pool = Pool(confirmed={f"10.1.0.{n}": f"i-old{n}" for n in range(changes.CONFIRMED_KEPT)})
    drained = Node("i-new", DRAINING, ip="10.0.0.1", drain_delivered=True)
    after = changes.drain_confirmed(
        pool.with_nodes([drained]), drained, "10.0.0.1", at=NOW, source_ip=""
    ).pool
    assert len(after.confirmed) == changes.CONFIRMED_KEPT and after.confirmed["10.0.0.1"] == "i-new"


def test_terminate_all_empties_the_list_and_ends_what_it_found_alive() -> None:
    pool = replace(serving(3), terminating=("i-old",))
    change = changes.terminate_all(pool, ["i-0", "i-2", "i-orphan"], at=NOW, source_ip="")
    assert change is not None and change.ends
    assert change.pool.nodes == () and change.pool.pending_plan is None
    assert change.pool.terminating == ("i-old", "i-0", "i-2", "i-orphan")
    assert changes.terminate_all(Pool(), [], at=NOW, source_ip="") is None


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (Node("i-1", LAUNCHING, since="2026-11-26T12:00:00Z"), "2026-11-26T12:10:00Z"),
        (Node("i-1", LAUNCHING), None),  # a route's launch: no clock until the next tick
        (Node("i-1", DRAINING, since="2026-11-26T12:00:00Z", drain_delivered=True), "2026-11-26T12:05:00Z"),
        (Node("i-1", DRAINING, since=None, drain_delivered=False), None),  # its decrease not delivered
        (Node("i-1", IN_SERVICE, since="2026-11-26T12:00:00Z"), None),
    ],
)
def test_a_node_s_deadline_is_when_a_tick_ends_it_if_it_stays(node: Node, expected: str | None) -> None:
    assert deadline(node, Timeouts(launch_seconds=600, drain_seconds=300)) == expected
