"""Pure: the config's parsing, SPEC's rules, and the atomic merge against in-memory stores."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.config import (
    check_rules,
    default_config,
    normalize,
    parse_patch,
    update_config,
)
from chalicelib.domain.errors import BusyError, ValidationError, VersionConflictError
from chalicelib.domain.records import Record

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_defaults_are_specs() -> None:
    assert default_config() == {
        "max_miss_rate_threshold": 0.8,
        "min_miss_rate_threshold": 0.2,
        "expand_ratio": 2.0,
        "shrink_ratio": 0.5,
        "auto_mode": True,
        "min_pool_size": 1,
        "max_pool_size": 8,
        "scale_in_window_minutes": 5,
        "min_get_requests": 50,
        "policy": "ratio",
        # README's optional fields: unset.
        "shadow_policy": None,
        "scheduled_floors": [],
    }


@pytest.mark.parametrize(
    ("raw", "from_form", "expected"),
    [
        ({"max_miss_rate_threshold": 1}, False, {"max_miss_rate_threshold": 1.0}),
        ({"min_miss_rate_threshold": 0}, False, {"min_miss_rate_threshold": 0.0}),
        ({"ratio_expand_pool": 1.5}, False, {"expand_ratio": 1.5}),
        ({"ratio_shrink_pool": "0.25"}, True, {"shrink_ratio": 0.25}),
        ({"auto_mode": "false"}, False, {"auto_mode": False}),
        ({"auto_mode": " TRUE "}, True, {"auto_mode": True}),
        ({"auto_mode": False}, False, {"auto_mode": False}),
        ({"min_pool_size": "3"}, True, {"min_pool_size": 3}),
        ({"scale_in_window_minutes": 60}, False, {"scale_in_window_minutes": 60}),
        ({"min_get_requests": 0}, False, {"min_get_requests": 0}),
        ({"policy": "ratio"}, False, {"policy": "ratio"}),
        ({"policy": "predictive"}, False, {"policy": "predictive"}),
        ({"expand_ratio": "1e1"}, True, {"expand_ratio": 10.0}),
        # An integer is any whole number, as JSON Schema's `integer` says: 2.0 and 1e2 are integers.
        ({"min_pool_size": 2.0}, False, {"min_pool_size": 2}),
        ({"min_get_requests": 145.0}, False, {"min_get_requests": 145}),
        ({"min_get_requests": 1e2}, False, {"min_get_requests": 100}),
        ({"min_get_requests": 2**53 - 1}, False, {"min_get_requests": 2**53 - 1}),
        ({"min_get_requests": "9007199254740991"}, True, {"min_get_requests": 2**53 - 1}),
        ({"scale_in_window_minutes": "1e1"}, True, {"scale_in_window_minutes": 10}),
        ({"max_pool_size": "8.0"}, True, {"max_pool_size": 8}),
        # A form's text may carry ASCII whitespace around it, and a sign or a bare point.
        ({"min_pool_size": "\t+3\v\f"}, True, {"min_pool_size": 3}),
        ({"shrink_ratio": "\n.25\r "}, True, {"shrink_ratio": 0.25}),
        ({"min_get_requests": "-0"}, True, {"min_get_requests": 0}),
    ],
)
def test_accepted_values(raw: dict[str, Any], from_form: bool, expected: dict[str, Any]) -> None:
    assert parse_patch(raw, from_form=from_form) == expected


# Every field rule of SPEC, each broken once: (body, form?, words the message must contain)
REFUSED = [
    ({"max_miss_rate_threshold": 0}, False, "max_miss_rate_threshold: must be 0 < x ≤ 1"),
    ({"max_miss_rate_threshold": 1.01}, False, "max_miss_rate_threshold: must be 0 < x ≤ 1"),
    ({"min_miss_rate_threshold": -0.1}, False, "min_miss_rate_threshold: must be 0 ≤ x < 1"),
    ({"min_miss_rate_threshold": 1}, False, "min_miss_rate_threshold: must be 0 ≤ x < 1"),
    ({"expand_ratio": 1}, False, "expand_ratio: must be > 1"),
    ({"ratio_expand_pool": 0.5}, False, "ratio_expand_pool: must be > 1"),
    ({"shrink_ratio": 1}, False, "shrink_ratio: must be 0 < x < 1"),
    ({"shrink_ratio": 0}, False, "shrink_ratio: must be 0 < x < 1"),
    ({"ratio_shrink_pool": "1.5"}, True, "ratio_shrink_pool: must be 0 < x < 1"),
    ({"min_pool_size": 0}, False, "min_pool_size: must be 1..8"),
    ({"max_pool_size": 9}, False, "max_pool_size: must be 1..8"),
    ({"scale_in_window_minutes": 0}, False, "scale_in_window_minutes: must be 1..60"),
    ({"scale_in_window_minutes": 61}, False, "scale_in_window_minutes: must be 1..60"),
    ({"min_get_requests": -1}, False, "min_get_requests: must be 0..9007199254740991"),
    ({"min_get_requests": 2**53}, False, "min_get_requests: must be 0..9007199254740991"),
    ({"policy": "predictive-ish"}, False, "policy: must be 'ratio' or 'predictive'"),
    # wrong types
    ({"max_miss_rate_threshold": "0.5"}, False, "max_miss_rate_threshold: must be a number"),
    ({"max_miss_rate_threshold": True}, False, "max_miss_rate_threshold: must be a number"),
    ({"max_miss_rate_threshold": None}, False, "max_miss_rate_threshold: must be a number"),
    ({"min_pool_size": 2.5}, False, "min_pool_size: must be an integer"),
    ({"min_pool_size": "2.5"}, True, "min_pool_size: must be an integer"),
    ({"min_pool_size": "\u00a02"}, True, "min_pool_size: must be an integer"),  # not ASCII whitespace
    ({"min_pool_size": "2"}, False, "min_pool_size: must be an integer"),
    ({"min_pool_size": "two"}, True, "min_pool_size: must be an integer"),
    ({"auto_mode": 1}, False, "auto_mode: must be a boolean"),
    ({"auto_mode": "yes"}, True, "auto_mode: must be a boolean"),
    ({"policy": 3}, False, "policy: must be 'ratio' or 'predictive'"),
    ({"expand_ratio": [2]}, False, "expand_ratio: must be a number"),
    # non-finite numbers
    ({"expand_ratio": float("inf")}, False, "expand_ratio: must be a finite number"),
    ({"expand_ratio": float("nan")}, False, "expand_ratio: must be a finite number"),
    ({"expand_ratio": "inf"}, True, "expand_ratio: must be a number"),
    ({"expand_ratio": "nan"}, True, "expand_ratio: must be a number"),
    ({"expand_ratio": "1e999"}, True, "expand_ratio: must be a finite number"),
    ({"expand_ratio": 10**400}, False, "expand_ratio: must be a finite number"),  # beyond any double
    ({"min_pool_size": "1e999"}, True, "min_pool_size: must be a finite number"),
    # unknown fields and an alias given beside its field
    ({"max_pool": 3}, False, "max_pool: unknown field"),
    ({"expand_ratio": 2, "ratio_expand_pool": 3}, False, "given twice"),
]


@pytest.mark.parametrize(("raw", "from_form", "words"), REFUSED)
def test_refused_values(raw: dict[str, Any], from_form: bool, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_patch(raw, from_form=from_form)
    assert words in str(refused.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as refused:
        parse_patch({"min_pool_size": 0, "nonsense": 1})
    assert "min_pool_size" in str(refused.value) and "nonsense: unknown field" in str(refused.value)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {"min_miss_rate_threshold": 0.5, "max_miss_rate_threshold": 0.5},
            "min_miss_rate_threshold must be below",
        ),
        ({"min_miss_rate_threshold": 0.9}, "min_miss_rate_threshold must be below"),
        ({"min_pool_size": 5, "max_pool_size": 4}, "min_pool_size must not exceed max_pool_size"),
    ],
)
def test_cross_field_rules(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        check_rules({**default_config(), **changes})


def test_min_equal_max_pool_size_is_allowed() -> None:
    check_rules({**default_config(), "min_pool_size": 4, "max_pool_size": 4})


def test_normalize_fills_defaults_and_restores_floats() -> None:
    assert normalize({"expand_ratio": 3, "auto_mode": False}) == {
        **default_config(),
        "expand_ratio": 3.0,
        "auto_mode": False,
    }
    assert isinstance(normalize({"expand_ratio": 3})["expand_ratio"], float)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(
    [*default_config(), "ratio_expand_pool", "ratio_shrink_pool", "unknown"]
) | st.text(max_size=10)


@given(st.dictionaries(field_names, json_values, max_size=5), st.booleans())
def test_any_input_is_either_a_valid_patch_or_a_validation_error(raw: dict[str, Any], form: bool) -> None:
    try:
        patch = parse_patch(raw, from_form=form)
    except ValidationError:
        return
    merged = {**default_config(), **patch}
    for name, value in patch.items():
        assert type(value) is type(default_config()[name])
    assert all(name in default_config() for name in merged)


# -- the atomic merge ---------------------------------------------------------------------


class MemoryConfigStore:
    """An in-memory versioned store; ``check_version=False`` makes it a naive overwrite."""

    def __init__(self, check_version: bool = True) -> None:
        self.config: dict[str, Any] = {}
        self.version = 0
        self.records: list[Record] = []
        self.check_version = check_version
        self.lock = threading.Lock()

    def load_config(self) -> tuple[dict[str, Any], int]:
        with self.lock:
            return normalize(self.config), self.version

    def save_config(self, config: dict[str, Any], expected_version: int, record: Record) -> None:
        with self.lock:
            if self.check_version and expected_version != self.version:
                raise VersionConflictError("stale")
            self.config, self.version = dict(config), self.version + 1
            self.records.append(record)


class InterleavingStore:
    """Wraps a store so that the first two loads both happen before either save."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.barrier = threading.Barrier(2, timeout=10)
        self.loads = 0

    def load_config(self) -> tuple[dict[str, Any], int]:
        loaded = self.inner.load_config()
        self.loads += 1
        if self.loads <= 2:
            self.barrier.wait()
        return loaded

    def save_config(self, config: dict[str, Any], expected_version: int, record: Record) -> None:
        self.inner.save_config(config, expected_version, record)


def run_two_writers(store: Any) -> InterleavingStore:
    """Two managers save different fields at once, both reading before either writes."""
    interleaved = InterleavingStore(store)
    errors: list[BaseException] = []

    def writer(patch: dict[str, Any]) -> None:
        try:
            update_config(interleaved, patch, source_ip="10.0.0.1", now=NOW)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=({"max_miss_rate_threshold": 0.9},)),
        threading.Thread(target=writer, args=({"expand_ratio": 3.0},)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not errors
    return interleaved


def assert_both_updates_survive(store: Any) -> None:
    config, _ = store.load_config()
    assert config["max_miss_rate_threshold"] == 0.9
    assert config["expand_ratio"] == 3.0


def test_concurrent_writers_both_survive() -> None:
    store = MemoryConfigStore()
    interleaved = run_two_writers(store)
    assert interleaved.loads == 3, "the loser of the race re-reads once"
    assert_both_updates_survive(store)
    assert [set(record.body["changed"]) for record in store.records] in (
        [{"max_miss_rate_threshold"}, {"expand_ratio"}],
        [{"expand_ratio"}, {"max_miss_rate_threshold"}],
    )


def test_the_same_check_catches_a_naive_read_modify_write() -> None:
    store = MemoryConfigStore(check_version=False)
    run_two_writers(store)
    with pytest.raises(AssertionError):
        assert_both_updates_survive(store)


def test_an_update_made_invalid_by_a_concurrent_writer_is_refused() -> None:
    store = MemoryConfigStore()
    inner_save = store.save_config
    rival_done: list[bool] = []

    def save_after_a_rival(config: dict[str, Any], expected_version: int, record: Record) -> None:
        if not rival_done:
            rival_done.append(True)
            # A rival lowers the maximum between our read and our write.
            inner_save({**normalize({}), "max_miss_rate_threshold": 0.3}, expected_version, record)
        inner_save(config, expected_version, record)

    store.save_config = save_after_a_rival  # type: ignore[method-assign]
    with pytest.raises(ValidationError, match="min_miss_rate_threshold must be below"):
        update_config(store, {"min_miss_rate_threshold": 0.5}, source_ip="x", now=NOW)
    assert store.load_config()[0]["max_miss_rate_threshold"] == 0.3
    assert store.load_config()[0]["min_miss_rate_threshold"] == 0.2


def test_no_change_writes_nothing() -> None:
    store = MemoryConfigStore()
    assert update_config(store, {"expand_ratio": 2.0}, source_ip="x", now=NOW) == default_config()
    assert store.version == 0 and store.records == []


def test_a_change_is_recorded_with_what_it_was_and_who_made_it() -> None:
    store = MemoryConfigStore()
    update_config(store, {"auto_mode": False, "expand_ratio": 2.0}, source_ip="192.0.2.7", now=NOW)
    (record,) = store.records
    assert record.to_dict() == {
        "time": "2026-11-26T12:00:00Z",
        "kind": "config",
        "changed": {"auto_mode": False},
        "previous": {"auto_mode": True},
        "source_ip": "192.0.2.7",
    }


def test_endless_conflicts_end_in_busy() -> None:
    class AlwaysLosing(MemoryConfigStore):
        def save_config(self, config: dict[str, Any], expected_version: int, record: Record) -> None:
            raise VersionConflictError("always")

    with pytest.raises(BusyError):
        update_config(AlwaysLosing(), {"auto_mode": False}, source_ip="x", now=NOW)
