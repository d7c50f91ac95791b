"""Pure: scheduled floors, their windows on the tick's clock, and their checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.config import default_config, parse_patch
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.floors import DAYS, Floor, open_at, parse_floors, with_floor

THURSDAY = datetime(2026, 11, 26, tzinfo=UTC)  # a Thursday, midnight UTC
SUNDAY = THURSDAY + timedelta(days=3)


def floor(start: str, minutes: int, size: int = 4, days: tuple[str, ...] = ()) -> dict[str, Any]:
    return Floor(start, minutes, size, days).to_data()


def config(*floors: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**default_config(), "scheduled_floors": list(floors), **changes}


def at(day: datetime, hh_mm: str) -> datetime:
    hours, minutes = hh_mm.split(":")
    return day + timedelta(hours=int(hours), minutes=int(minutes))


@pytest.mark.parametrize(
    ("window", "moment", "is_open"),
    [
        (floor("18:00", 240), at(THURSDAY, "17:59"), False),
        (floor("18:00", 240), at(THURSDAY, "18:00"), True),  # open from its start minute
        (floor("18:00", 240), at(THURSDAY, "21:59"), True),
        (floor("18:00", 240), at(THURSDAY, "22:00"), False),  # its end is not in it
        # Across midnight: 23:00 for two hours is open at 00:30 the next day.
        (floor("23:00", 120), at(THURSDAY, "00:30"), True),
        (floor("23:00", 120), at(THURSDAY, "01:00"), False),
        # Weekly: Sunday 23:00 for two hours runs into Monday, across the week's end.
        (floor("23:00", 120, days=("sun",)), at(SUNDAY, "23:30"), True),
        (floor("23:00", 120, days=("sun",)), at(SUNDAY + timedelta(days=1), "00:59"), True),
        (floor("23:00", 120, days=("sun",)), at(SUNDAY + timedelta(days=1), "01:00"), False),
        (floor("23:00", 120, days=("sun",)), at(THURSDAY, "23:30"), False),  # not on Thursday
        # A weekend: Saturday 00:00 for two days.
        (floor("00:00", 2880, days=("sat",)), at(SUNDAY, "12:00"), True),
        (floor("00:00", 2880, days=("sat",)), at(SUNDAY + timedelta(days=1), "00:00"), False),
        (floor("09:00", 60, days=("mon", "thu")), at(THURSDAY, "09:30"), True),
        (floor("09:00", 60, days=("mon", "fri")), at(THURSDAY, "09:30"), False),
    ],
)
def test_a_window_is_open_from_its_start_for_its_duration(
    window: dict[str, Any], moment: datetime, is_open: bool
) -> None:
    assert (open_at(Floor.from_data(window), moment) is not None) is is_open


def test_an_open_window_knows_when_this_occurrence_began_and_ends() -> None:
    found = open_at(Floor("23:00", 120, 3, ("sun",)), at(SUNDAY + timedelta(days=1), "00:30"))
    assert found is not None
    assert (found.began, found.ends) == (at(SUNDAY, "23:00"), at(SUNDAY, "23:00") + timedelta(hours=2))


def test_the_highest_open_floor_raises_min_pool_size_and_is_named() -> None:
    settings_ = config(floor("18:00", 240, 3), floor("19:00", 60, 5, ("thu",)), floor("06:00", 60, 8))
    effective, raised = with_floor(settings_, at(THURSDAY, "19:15"))
    assert effective["min_pool_size"] == 5 and raised is not None
    assert raised.note == (
        "scheduled floor 5 (19:00 UTC for 60 min on thu, until 2026-11-26T20:00:00Z) "
        "raises min_pool_size 1 → 5"
    )
    assert raised.to_data() == {
        "min_pool_size": 5,
        "window": {"start": "19:00", "duration_minutes": 60, "min_pool_size": 5, "days": ["thu"]},
        "began": "2026-11-26T19:00:00Z",
        "ends": "2026-11-26T20:00:00Z",
    }
    assert settings_["min_pool_size"] == 1, "the stored config is not changed"


def test_a_floor_is_capped_by_max_pool_size_and_says_so() -> None:
    effective, raised = with_floor(config(floor("18:00", 240, 6), max_pool_size=4), at(THURSDAY, "18:00"))
    assert effective["min_pool_size"] == 4 and raised is not None
    assert "capped at max_pool_size 4" in raised.note


@pytest.mark.parametrize(
    "settings_", [config(floor("18:00", 240, 2), min_pool_size=2), config(floor("18:00", 240, 1)), config()]
)
def test_a_floor_at_or_below_the_minimum_or_closed_changes_nothing(settings_: dict[str, Any]) -> None:
    effective, raised = with_floor(settings_, at(THURSDAY, "19:00"))
    assert raised is None and effective == settings_


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 1439),
    minutes=st.integers(1, 10080),
    days=st.lists(st.sampled_from(DAYS), unique=True, max_size=7),
    offset=st.integers(0, 3 * 7 * 1440),
)
def test_a_window_is_open_at_exactly_the_minutes_it_covers(
    start: int, minutes: int, days: list[str], offset: int
) -> None:
    """Against brute force over three weeks of starts (of overlapping occurrences, the one ending last)."""
    if not days:
        minutes = min(minutes, 1440)
    window = Floor(f"{start // 60:02d}:{start % 60:02d}", minutes, 2, tuple(days))
    moment = THURSDAY + timedelta(minutes=offset)
    weekdays = [DAYS.index(day) for day in days] if days else range(7)
    starts = [
        THURSDAY + timedelta(days=day, minutes=start)
        for day in range(-14, 22)  # offsets reach the start of day 21
        if (THURSDAY + timedelta(days=day)).weekday() in weekdays
    ]
    covering = [began for began in starts if began <= moment < began + timedelta(minutes=minutes)]
    found = open_at(window, moment)
    assert (found is not None) == bool(covering)
    if found is not None:
        assert found.began == max(covering) and found.ends == found.began + timedelta(minutes=minutes)


def test_windows_are_stored_in_one_shape() -> None:
    parsed = parse_floors(
        [{"start": " 9:05", "duration_minutes": 30, "min_pool_size": 2, "days": ["sun", "fri"]}], max_size=8
    )
    assert parsed == [{"start": "09:05", "duration_minutes": 30, "min_pool_size": 2, "days": ["fri", "sun"]}]


def test_every_problem_of_every_window_is_reported_at_once() -> None:
    raw = [
        {"start": "18:00", "duration_minutes": 240, "min_pool_size": 4},
        {"start": "24:00", "duration_minutes": 0, "min_pool_size": 9, "colour": "red"},
        "18:00",
        {"start": "18:00", "duration_minutes": 1441, "min_pool_size": True},
        {"start": "18:00", "duration_minutes": 10081, "min_pool_size": 2, "days": ["fri", "fri"]},
        {"start": "18:00", "duration_minutes": 60, "min_pool_size": 2, "days": ["Fri", "weekend"]},
        {"days": [], "duration_minutes": 2.0},
    ]
    with pytest.raises(ValidationError) as caught:
        parse_patch({"scheduled_floors": raw, "min_pool_size": 0})
    assert str(caught.value).split("; ") == [
        "scheduled_floors[1].colour: unknown field",
        "scheduled_floors[1].start: must be HH:MM (UTC, 00:00 to 23:59), got '24:00'",
        "scheduled_floors[1].duration_minutes: must be an integer 1..1440 (every day: at most a day), got 0",
        "scheduled_floors[1].min_pool_size: must be an integer 1..8, got 9",
        "scheduled_floors[2]: must be an object with start, duration_minutes and min_pool_size",
        "scheduled_floors[3].duration_minutes: must be an integer 1..1440 (every day: at most a day), "
        "got 1441",
        "scheduled_floors[3].min_pool_size: must be an integer 1..8, got True",
        "scheduled_floors[4].days: a day given twice",
        "scheduled_floors[4].duration_minutes: must be an integer 1..10080 (with days: at most a week), "
        "got 10081",
        "scheduled_floors[5].days: 'Fri', 'weekend' not one of mon, tue, wed, thu, fri, sat, sun",
        "scheduled_floors[6].start: required",
        "scheduled_floors[6].min_pool_size: required",
        "scheduled_floors[6].days: must be a non-empty list of mon, tue, wed, thu, fri, sat, sun "
        "(or left out: every day)",
        "scheduled_floors[6].duration_minutes: must be an integer 1..10080 (with days: at most a week), "
        "got 2.0",
        "min_pool_size: must be 1..8, got 0",
    ]


@pytest.mark.parametrize(
    ("raw", "from_form", "message"),
    [
        ({"scheduled_floors": {"start": "18:00"}}, False, "scheduled_floors: must be a list of windows"),
        ({"scheduled_floors": "[]"}, False, "scheduled_floors: must be a list of windows"),
        ({"scheduled_floors": "18:00 4"}, True, "scheduled_floors: must be a JSON list of windows"),
        ({"scheduled_floors": [floor("18:00", 60)] * 25}, False, "scheduled_floors: at most 24 windows"),
        ({"scheduled_floors": None}, False, "scheduled_floors: must be a list of windows"),
    ],
)
def test_a_value_that_is_no_list_of_windows_is_refused(
    raw: dict[str, Any], from_form: bool, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_patch(raw, from_form=from_form)
    assert str(caught.value).startswith(message)


def test_a_form_carries_the_windows_as_json_text() -> None:
    text = '[{"start": "18:00", "duration_minutes": 240, "min_pool_size": 4}]'
    assert parse_patch({"scheduled_floors": text}, from_form=True) == {
        "scheduled_floors": [floor("18:00", 240)]
    }
    assert parse_patch({"scheduled_floors": " "}, from_form=True) == {"scheduled_floors": []}
