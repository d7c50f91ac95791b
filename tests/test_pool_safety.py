"""Regression tests for the ways a review found to break the pool's invariants.

Each drives the routes, the scheduled function or injected adapters, and each failed before
its fix: a terminate ahead of its intent, nine live instances, notification progress lost,
an outbox without bound, drains stranded without a front-end, a released node terminated,
one node's impossible figures deciding for the pool, a vanished node not replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import chalice.test
import pytest
from chalice.local import LambdaContext
from chalice.test import Client

from chalicelib.adapters.cloudwatch import PoolMetrics
from chalicelib.adapters.dynamodb import StateStore
from chalicelib.adapters.ec2 import Ec2Nodes
from chalicelib.adapters.frontend import Deadline, Notifier
from chalicelib.domain.errors import DependencyError
from chalicelib.domain.notices import MAX_QUEUED_NOTICES
from chalicelib.domain.settings import Settings
from chalicelib.service import wiring
from chalicelib.service.tick import TickDeps, run_tick
from tests.conftest import NODE_AMI, PROJECT_DIR, TABLE, instance_states, post_json, publish, run_instances
from tests.fakes import Cloud, FakeEc2, FakeStore, fake_adapters
from tests.fakes import FakeFrontend as InMemoryFrontend
from tests.frontend import FakeFrontend
from tests.test_drain import four_in_service
from tests.test_tick import at, live, members, nodes, serve, tick

LIVE = ("pending", "running", "stopping", "stopped")
T_END = datetime(2100, 1, 1, tzinfo=UTC)


class Killed(BaseException):
    """The invocation dies here (a Lambda timeout): no handler of the app's may catch it."""


@pytest.fixture
def frontend(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFrontend]:
    with FakeFrontend() as fake:
        monkeypatch.setenv("FRONTEND_NOTIFY_URL", fake.url)
        monkeypatch.setenv("FRONTEND_NOTIFY_TIMEOUT_SECONDS", "0.2")
        monkeypatch.setenv("NODE_READINESS", "running")
        yield fake


def live_tagged(ec2: Any) -> list[str]:
    return [i for i, (state, pool) in instance_states(ec2).items() if pool == "default" and state in LIVE]


REAL_LAUNCH, REAL_TERMINATE = Ec2Nodes.launch, Ec2Nodes.terminate


def never_nine(ec2: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every launch checks, before EC2 is called, that fewer than 8 instances are live."""
    real_launch = REAL_LAUNCH
    seen: list[int] = []

    def launch(self: Ec2Nodes, *args: Any) -> Any:
        seen.append(len(live_tagged(ec2)))
        assert seen[-1] < 8, f"a launch with {seen[-1]} instances live"
        return real_launch(self, *args)

    monkeypatch.setattr(Ec2Nodes, "launch", launch)
    return seen


def failing_terminate(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Ec2Nodes, ids: Any) -> None:
        raise DependencyError("EC2 call failed (RequestLimitExceeded)")

    monkeypatch.setattr(Ec2Nodes, "terminate", refuse)


def every_listed_node_is_live(client: Client, ec2: Any) -> None:
    states = instance_states(ec2)
    for node in nodes(client):
        assert states[node["id"]][0] in ("pending", "running"), (node, states[node["id"]])


def deps(notifier: Notifier | None, deadline: Deadline | None = None) -> TickDeps:
    """The scheduled function's adapters as production builds them, with the notifier injected."""
    settings = Settings.from_env()
    built = TickDeps.from_settings(settings)
    return TickDeps(
        settings=settings,
        store=built.store,
        ec2=built.ec2,
        metrics=PoolMetrics(settings.metric_names),
        notifier=notifier,
        deadline=deadline or Deadline(None),
    )


# -- 1. record the intent, then terminate ----------------------------------------------------


def test_a_take_back_racing_a_confirmed_drain_never_lists_the_terminated_node(
    client: Client, ec2: Any, frontend: FakeFrontend, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = four_in_service(client, frontend)
    post_json(client, "/api/scaler/resize", {"target_size": 2})  # listed[2:] drain; decrease delivered
    goner = listed[3]
    real_terminate = Ec2Nodes.terminate
    rival: list[Any] = []

    def terminate_after_a_rival(self: Ec2Nodes, ids: Any) -> None:
        ids = list(ids)
        if goner["id"] in ids and not rival:
            # Between the confirmation's last read and its EC2 call, a resize takes nodes back.
            rival.append(post_json(client, "/api/scaler/resize", {"target_size": 4}).json_body)
        real_terminate(self, ids)

    monkeypatch.setattr(Ec2Nodes, "terminate", terminate_after_a_rival)
    told_before = len(frontend.notices)
    confirm = post_json(client, "/api/poolsize/change", {"cache_ip": goner["ip"]})
    assert rival, "the rival ran between the confirmation and its terminate"
    assert confirm.status_code == 200 and confirm.json_body == {"terminated": goner["id"]}
    assert instance_states(ec2)[goner["id"]][0] in ("shutting-down", "terminated")
    assert goner["id"] not in [n["id"] for n in nodes(client)]
    every_listed_node_is_live(client, ec2)
    for notice in frontend.notices[told_before:]:
        if notice["change"] == "increase":
            assert goner["id"] not in notice["cache_pool_ids"] + [a["id"] for a in notice["added"]]
    tick(client, 1)
    every_listed_node_is_live(client, ec2)


def test_terminate_all_that_dies_after_terminating_lists_no_dead_node(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 3})
    real_terminate = Ec2Nodes.terminate

    def terminate_then_die(self: Ec2Nodes, ids: Any) -> None:
        real_terminate(self, ids)
        raise Killed

    monkeypatch.setattr(Ec2Nodes, "terminate", terminate_then_die)
    with pytest.raises(Killed):
        post_json(client, "/api/scaler/terminate_all", {})
    monkeypatch.setattr(Ec2Nodes, "terminate", real_terminate)
    assert live_tagged(ec2) == []
    assert nodes(client) == [], "the list was emptied before EC2 was called"
    decision = tick(client, 0)
    assert (decision["action"], decision["previous_size"], decision["target_size"]) == ("repair", 0, 1)
    assert len(live_tagged(ec2)) == 1


# -- 2. never nine: terminate first, launch into room that exists ------------------------------


def test_replacing_a_node_of_a_full_pool_never_runs_nine(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_json(client, "/api/scaler/config", {"min_pool_size": 8, "max_pool_size": 8})
    tick(client, 0)
    serve(client, 1, 0.5)
    tick(client, 1)
    first = members(client)[0]
    ec2.stop_instances(InstanceIds=[first])
    launches = never_nine(ec2, monkeypatch)
    failing_terminate(monkeypatch)
    serve(client, 2, 0.5)
    decision = tick(client, 2)
    assert "RequestLimitExceeded" in " ".join(decision["errors"])
    assert launches == [] and len(live_tagged(ec2)) == 8 and len(members(client)) <= 8
    monkeypatch.setattr(Ec2Nodes, "terminate", REAL_TERMINATE)
    launches = never_nine(ec2, monkeypatch)
    serve(client, 3, 0.5)
    decision = tick(client, 3)  # the terminate is retried first, then the one replacement launched
    assert decision["action"] == "replace" and len(decision["launched"]) == 1
    assert instance_states(ec2)[first][0] in ("shutting-down", "terminated")
    assert launches == [7] and len(live_tagged(ec2)) == 8
    assert len(instance_states(ec2)) == 9, "one replacement in all, not one per attempt"
    serve(client, 4, 0.5)
    tick(client, 4)
    assert len(instance_states(ec2)) == 9 and len(members(client)) == 8


def test_an_orphan_terminated_in_a_scale_out_frees_its_room_only_once_it_is_gone(
    client: Client, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_READINESS", "running")
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 7})
    tick(client, 0)
    post_json(client, "/api/scaler/config", {"auto_mode": True})
    (orphan,) = run_instances(ec2, pool="default")
    serve(client, 1, 0.5)
    tick(client, 1)  # the orphan is first seen
    launches = never_nine(ec2, monkeypatch)
    failing_terminate(monkeypatch)
    serve(client, 2, 0.95)
    decision = tick(client, 2)  # terminate the orphan and grow 7 → 8: the terminate fails
    assert launches == [] and len(live_tagged(ec2)) == 8
    assert "RequestLimitExceeded" in " ".join(decision["errors"])
    monkeypatch.setattr(Ec2Nodes, "terminate", REAL_TERMINATE)
    serve(client, 3, 0.95)
    tick(client, 3)
    assert instance_states(ec2)[orphan][0] in ("shutting-down", "terminated")
    assert len(live_tagged(ec2)) == 8 and len(members(client)) == 8


# -- 3. notification progress is saved as it is made ------------------------------------------


def queue_three_notices(client: Client, frontend: FakeFrontend) -> None:
    """increase (4 in service), decrease (2 drain), increase (1 taken back): none delivered."""
    frontend.status = 500
    four_in_service(client, frontend)
    post_json(client, "/api/scaler/resize", {"target_size": 2})
    post_json(client, "/api/scaler/resize", {"target_size": 3})
    assert [n["change"] for n in StateStore(TABLE, "default").load_pool().outbox] == [
        "increase",
        "decrease",
        "increase",
    ]


def recording_post(sent: list[dict[str, Any]], fail_after: int | None = None) -> Any:
    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        if fail_after is not None and len(sent) == fail_after:
            raise Killed
        sent.append(json.loads(body))
        return 200

    return post


def test_an_invocation_that_dies_while_delivering_keeps_what_it_delivered(
    client: Client, ec2: Any, frontend: FakeFrontend
) -> None:
    queue_three_notices(client, frontend)
    sent: list[dict[str, Any]] = []
    dying = Notifier(frontend.url, post=recording_post(sent, fail_after=1), sleep=lambda _: None)
    with pytest.raises(Killed):
        run_tick(deps(dying), at(1))
    assert [n["sequence"] for n in sent] == [1]
    healthy = Notifier(frontend.url, post=recording_post(sent), sleep=lambda _: None)
    run_tick(deps(healthy), at(2))
    assert [n["sequence"] for n in sent] == [1, 2, 3], "the delivered head is not sent again"
    assert StateStore(TABLE, "default").load_pool().outbox == ()


def test_delivery_stops_with_time_to_spare_and_the_next_tick_goes_on(
    client: Client, ec2: Any, frontend: FakeFrontend
) -> None:
    queue_three_notices(client, frontend)
    now = [0.0]
    sent: list[dict[str, Any]] = []

    def slow_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        now[0] += timeout  # each answer takes the whole timeout
        sent.append(json.loads(body))
        return 200

    notifier = Notifier(frontend.url, timeout=1.0, post=slow_post, sleep=lambda _: None)
    run_tick(deps(notifier, Deadline(3.5, clock=lambda: now[0])), at(1))
    # an attempt starts only with its timeout plus a second to record it left: 3.5 s allow two
    assert [n["sequence"] for n in sent] == [1, 2]
    assert [n["sequence"] for n in StateStore(TABLE, "default").load_pool().outbox] == [3]
    run_tick(deps(notifier, Deadline(3.5, clock=lambda: now[0])), at(2))
    assert [n["sequence"] for n in sent] == [1, 2, 3]


def test_the_scheduled_function_delivers_within_its_lambda_context(
    client: Client, ec2: Any, frontend: FakeFrontend, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 2})
    # 0.5 s left: less than one attempt (0.2 s) plus a second to record it. Nothing is tried.
    monkeypatch.setattr(chalice.test, "LambdaContext", partial(LambdaContext, max_runtime_ms=500))
    tick(client, 0)
    assert frontend.received == []
    assert [n["change"] for n in StateStore(TABLE, "default").load_pool().outbox] == ["increase"]
    monkeypatch.setattr(chalice.test, "LambdaContext", partial(LambdaContext, max_runtime_ms=120_000))
    tick(client, 1)
    assert [n["sequence"] for n in frontend.notices] == [1]


def test_a_deadline_is_the_context_s_remaining_time_cut_to_a_cap() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 40_000

    assert 24 < Deadline.of_invocation(Context(), cap_seconds=25).left() <= 25
    assert 39 < Deadline.of_invocation(Context()).left() <= 40
    assert 59 < Deadline.of_invocation(None, cap_seconds=60).left() <= 60
    assert Deadline.of_invocation(None).left() == float("inf")


# -- 4. the outbox is bounded --------------------------------------------------------------


def test_eight_hundred_changes_with_the_front_end_down_keep_the_item_small(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the in-memory adapters (moto copies the whole table on each transaction: 800 changes
    would take a minute); the stateful test checks that they agree with moto."""
    cloud, frontend = Cloud(), InMemoryFrontend()
    monkeypatch.setattr(wiring, "adapters", fake_adapters(cloud, frontend))
    monkeypatch.setenv("FRONTEND_NOTIFY_URL", "https://frontend.example/notify")
    monkeypatch.setenv("NODE_READINESS", "running")
    from app import app

    client = Client(app, stage_name="dev", project_dir=str(PROJECT_DIR))
    store = FakeStore(cloud, TABLE, "default")
    frontend.mode = "down"
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 3})
    tick(client, 0)
    for change in range(800):
        target = 2 if change % 2 == 0 else 3  # drain the last node, then take it back
        assert post_json(client, "/api/scaler/resize", {"target_size": target}).status_code == 200
    assert store.item_bytes() < 64 * 1024
    assert len(store.load_pool().outbox) <= MAX_QUEUED_NOTICES
    changes = [r for r in store.history(10**8, T_END) if r.get("change") == "resize"]
    assert len(changes) == 801 and frontend.attempts >= 800, "every change was made, and told"
    frontend.mode = "up"
    tick(client, 1)
    notices = frontend.delivered
    assert store.load_pool().outbox == ()
    assert [n["sequence"] for n in notices] == list(range(1, len(notices) + 1))
    serving = [n["id"] for n in nodes(client) if n["state"] == "in_service"]
    assert notices[-1]["cache_pool_ids"] == serving and len(serving) == 3


# -- 5. without a notify URL, drains are not stranded ---------------------------------------


def test_unsetting_the_notify_url_ends_drains_whose_decrease_was_queued(
    client: Client, ec2: Any, frontend: FakeFrontend, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = four_in_service(client, frontend)
    frontend.status = 500
    post_json(client, "/api/scaler/resize", {"target_size": 2})  # decrease queued, undelivered
    stranded = [n["id"] for n in listed[2:]]
    monkeypatch.delenv("FRONTEND_NOTIFY_URL")
    decision = tick(client, 1)
    assert sorted(decision["terminated"]) == sorted(stranded)
    assert {instance_states(ec2)[i][0] for i in stranded} <= {"shutting-down", "terminated"}
    assert [n["id"] for n in nodes(client)] == [n["id"] for n in listed[:2]]
    assert StateStore(TABLE, "default").load_pool().outbox == ()
    # The front-end comes back: later notices go on from the last number handed out.
    frontend.status = 200
    monkeypatch.setenv("FRONTEND_NOTIFY_URL", frontend.url)
    post_json(client, "/api/scaler/resize", {"target_size": 3})
    tick(client, 2)
    last = frontend.notices[-1]
    earlier = max(n["sequence"] for n in frontend.notices[:-1])
    assert last["change"] == "increase" and last["sequence"] > earlier
    assert last["cache_pool_ids"] == members(client)


# -- 6. terminate_all never terminates a released node -----------------------------------------


def test_terminate_all_spares_a_released_node_waiting_for_its_decrease(
    client: Client, ec2: Any, frontend: FakeFrontend
) -> None:
    a, b = run_instances(ec2, 2)
    post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [a, b]})
    tick(client, 0)
    frontend.status = 500
    post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [a]})  # b released; decrease queued
    assert instance_states(ec2)[b] == ("running", "default")
    response = post_json(client, "/api/scaler/terminate_all", {})
    assert response.status_code == 200 and response.json_body == {"terminated": [a]}
    assert instance_states(ec2)[b][0] == "running"
    frontend.status = 200
    tick(client, 1)
    tick(client, 2)
    assert instance_states(ec2)[b] == ("running", None), "released: untagged once told, never terminated"


# -- 7. one node's impossible figures do not decide for the pool --------------------------------


@pytest.mark.parametrize(
    ("gets", "hits", "why"),
    [(100, 300, "more hits than GET requests"), (-900, -100, "negative")],
)
def test_a_node_with_impossible_figures_is_left_out_of_the_sums(
    client: Client, ec2: Any, gets: int, hits: int, why: str
) -> None:
    post_json(client, "/api/scaler/config", {"min_pool_size": 2, "max_pool_size": 2})
    tick(client, 0)
    serve(client, 1, 0.5)
    tick(client, 1)
    good, bad = members(client)
    publish([good], at(1), gets=1000, hits=500)
    publish([bad], at(1), gets=gets, hits=hits)
    decision = tick(client, 2)
    assert decision["miss_rate"] == pytest.approx(0.5) and decision["requests"] == 1000
    assert bad in decision["reason"] and why in decision["reason"]


# -- 8. a node terminated out of band is replaced ----------------------------------------------


def test_a_node_terminated_out_of_band_above_the_minimum_is_replaced(client: Client, ec2: Any) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 3})
    tick(client, 0)
    serve(client, 1, 0.5)
    tick(client, 1)
    post_json(client, "/api/scaler/config", {"auto_mode": True})
    first, *rest = members(client)
    ec2.terminate_instances(InstanceIds=[first])
    serve(client, 2, 0.5)
    decision = tick(client, 2)
    assert decision["action"] == "replace" and first in decision["reason"]
    assert (decision["previous_size"], decision["target_size"]) == (3, 3)
    assert first not in members(client) and members(client)[:2] == rest and len(members(client)) == 3
    assert len(live(ec2)) == 3


# -- a private IP reused by a new node --------------------------------------------------------


def two_then_one_on_fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[Client, Cloud, InMemoryFrontend, str]:
    """The whole app on in-memory fakes with a front-end: two nodes in service, then a resize
    to one; answers the node draining (its decrease delivered)."""
    cloud, frontend = Cloud(), InMemoryFrontend()
    monkeypatch.setattr(wiring, "adapters", fake_adapters(cloud, frontend))
    monkeypatch.setenv("FRONTEND_NOTIFY_URL", "https://frontend.example/notify")
    monkeypatch.setenv("NODE_READINESS", "running")
    from app import app

    client = Client(app, stage_name="dev", project_dir=str(PROJECT_DIR))
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 2})
    tick(client, 0)
    (draining,) = post_json(client, "/api/scaler/resize", {"target_size": 1}).json_body["draining"]
    return client, cloud, frontend, draining


def test_a_confirmation_for_an_ip_a_new_node_reuses_ends_that_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recent confirmations are remembered by IP so that a repeat answers the same; EC2 hands a
    freed private IP to the next instance, and the new node's own drain must still end it."""
    client, cloud, _, first = two_then_one_on_fakes(monkeypatch)
    reused_ip = cloud.instances[first].ip
    confirmed = post_json(client, "/api/poolsize/change", {"cache_ip": reused_ip})
    assert confirmed.json_body == {"terminated": first}
    (second,) = post_json(client, "/api/scaler/resize", {"target_size": 2}).json_body["launched"]
    cloud.instances[second].ip = reused_ip  # EC2 reuses the freed address
    tick(client, 1)
    assert post_json(client, "/api/scaler/resize", {"target_size": 1}).json_body["draining"] == [second]
    again = post_json(client, "/api/poolsize/change", {"cache_ip": reused_ip})
    assert again.json_body == {"terminated": second}
    assert cloud.instances[second].state == "terminated"
    repeat = post_json(client, "/api/poolsize/change", {"cache_ip": reused_ip})
    assert repeat.json_body == {"terminated": second}, "a repeat answers the latest confirmation"


# -- a node list set while a drain is confirmed ----------------------------------------------


def test_a_node_list_set_while_its_draining_node_is_ended_never_lists_the_dead_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the state machine: the manager-app swaps a node while the front-end confirms
    the drain of another. The swap checked its instances before it read the pool, so the node
    the confirmation ended in between came back, listed as an adopted node."""
    client, cloud, frontend, draining = two_then_one_on_fakes(monkeypatch)
    staying = nodes(client)[0]["id"]
    newcomer = cloud.run_instance(NODE_AMI).id
    told_before = len(frontend.delivered)
    real_describe = FakeEc2.describe
    rival: list[int] = []

    def describe_then_a_rival(self: FakeEc2, ids: Any) -> Any:
        found = real_describe(self, ids)
        if draining in list(ids) and not rival:
            rival.append(0)  # the rival's own calls pass straight through
            confirmed = post_json(client, "/api/poolsize/change", {"cache_ip": cloud.instances[draining].ip})
            rival[0] = confirmed.status_code
        return found

    monkeypatch.setattr(FakeEc2, "describe", describe_then_a_rival)
    swap = post_json(client, "/api/scaler/cache_list", {"cache_pool_ids": [newcomer, draining]})
    assert rival == [200], "the confirmation ran between the swap's check and its write"
    assert cloud.instances[draining].state == "terminated"
    assert swap.status_code == 400 and draining in swap.json_body["Message"], swap.json_body
    listed = [node["id"] for node in nodes(client)]
    assert listed == [staying], "a refused list changes nothing"
    for notice in frontend.delivered[told_before:]:
        assert draining not in [*notice["cache_pool_ids"], *(a["id"] for a in notice["added"])]
