"""The suite does not depend on the day it runs: the route-and-tick scenarios, a year away.

Ticks run on their events' fixed times (2026-11-26 here); routes, leases and the records'
expiry read the wall clock. ``time_machine`` moves the wall clock in-process, a year ahead and
a year back, and every scenario must come out the same. (Under Debian's ``faketime`` the whole
in-process suite can be run the same way: README says how.)
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from chalice.test import Client

from tests import test_drain, test_manual, test_reconcile
from tests.conftest import AUTH, post_json, table_items
from tests.test_drain import frontend  # noqa: F401  (a fixture some scenarios take)
from tests.test_tick import tick

# The scenarios where routes and ticks meet the wall clock: a route writes before any tick and
# the next tick stamps what it started; a drain's clock runs from delivery; a writer's lease.
SCENARIOS: list[Callable[..., None]] = [
    test_manual.test_nodes_launched_by_a_route_are_stamped_by_the_next_tick,
    test_drain.test_an_unconfirmed_drain_ends_at_its_timeout_from_delivery,
    test_reconcile.test_a_route_finding_the_pool_held_answers_503_and_a_tick_holds,
    test_reconcile.test_an_expired_lease_is_taken_over,
]
SHIFTS = {"a year ahead": timedelta(days=365), "a year back": timedelta(days=-365)}


@pytest.mark.parametrize("shift", SHIFTS.values(), ids=SHIFTS.keys())
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__.removeprefix("test_") for s in SCENARIOS])
def test_a_scenario_comes_out_the_same_a_year_away(
    scenario: Callable[..., None], shift: timedelta, request: pytest.FixtureRequest
) -> None:
    fixtures = {name: request.getfixturevalue(name) for name in inspect.signature(scenario).parameters}
    with time_machine.travel(datetime.now(UTC) + shift, tick=True):
        scenario(**fixtures)


@pytest.mark.parametrize("shift", SHIFTS.values(), ids=SHIFTS.keys())
def test_a_record_written_before_any_tick_hides_no_tick_record(client: Client, shift: timedelta) -> None:
    """The defect that made the suite fail from 2 December on, at both ends of the clock."""
    with time_machine.travel(datetime.now(UTC) + shift, tick=True):
        written = datetime.now(UTC)
        post_json(client, "/api/scaler/config", {"auto_mode": False})  # stamped with the wall clock
        for minute in range(3):
            tick(client, minute)
        records = client.http.get("/api/scaler/history?minutes=60", headers=AUTH).json_body["records"]
    ticks = [r["time"] for r in records if r["kind"] == "tick"]
    assert ticks == ["2026-11-26T12:00:00Z", "2026-11-26T12:01:00Z", "2026-11-26T12:02:00Z"]
    # The window is the hour up to the last tick, and anything stamped later.
    in_window = written > datetime(2026, 11, 26, 11, 2, tzinfo=UTC)
    assert any(r["kind"] == "config" for r in records) == in_window


def test_records_expire_a_ttl_after_the_wall_clock_wrote_them(client: Client) -> None:
    wall = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    with time_machine.travel(wall, tick=False):
        tick(client, 0)  # stamped 2026-11-26T12:00 by its event
    expiries: list[Any] = [
        (json.loads(item["data"]["S"])["time"], int(item["expires_at"]["N"]))
        for item in table_items()
        if item["pk"]["S"].endswith("#history")
    ]
    assert expiries and {stamp for stamp, _ in expiries} == {"2026-11-26T12:00:00Z"}
    assert {expiry for _, expiry in expiries} == {int((wall + timedelta(days=30)).timestamp())}
