"""What the API answers, as frozen dataclasses (SPEC's "HTTP API" section).

Each ``from_json`` reads SPEC's fields and keeps the rest (fields the scaler may add) in
``extra``; a field SPEC promises that is missing or of the wrong type raises
:class:`~scaler_client.errors.UnexpectedAnswerError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

from scaler_client.errors import UnexpectedAnswerError

T = TypeVar("T")

LAUNCHING, IN_SERVICE, DRAINING = "launching", "in_service", "draining"


def _field(
    data: Mapping[str, Any], name: str, kind: type[T] | tuple[type, ...], *, optional: bool = False
) -> Any:
    if not isinstance(data, Mapping):
        raise UnexpectedAnswerError(f"expected a JSON object, got {type(data).__name__}")
    if name not in data:
        raise UnexpectedAnswerError(f"the answer has no {name!r}")
    value = data[name]
    if value is None and optional:
        return None
    # JSON has one number type: an int is a fine float, a bool is not a number.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and kind is not bool:
        raise UnexpectedAnswerError(f"{name!r} is {value!r}, not {kind}")
    if not isinstance(value, kind):
        raise UnexpectedAnswerError(f"{name!r} is {value!r}, not {kind}")
    return value


def _time(data: Mapping[str, Any], name: str) -> datetime:
    text = _field(data, name, str)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UnexpectedAnswerError(f"{name!r} is not an ISO 8601 time: {text!r}") from None


def _extra(data: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    return {name: value for name, value in data.items() if name not in known}


@dataclass(frozen=True)
class Config:
    """The scaler's config (``GET``/``POST /api/scaler/config``)."""

    max_miss_rate_threshold: float
    min_miss_rate_threshold: float
    expand_ratio: float
    shrink_ratio: float
    auto_mode: bool
    min_pool_size: int
    max_pool_size: int
    scale_in_window_minutes: int
    min_get_requests: int
    policy: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields the scaler adds beyond SPEC's

    @classmethod
    def from_json(cls, data: Any) -> Config:
        kinds = {
            "max_miss_rate_threshold": float,
            "min_miss_rate_threshold": float,
            "expand_ratio": float,
            "shrink_ratio": float,
            "auto_mode": bool,
            "min_pool_size": int,
            "max_pool_size": int,
            "scale_in_window_minutes": int,
            "min_get_requests": int,
            "policy": str,
        }
        values = {name: _field(data, name, kind) for name, kind in kinds.items()}
        return cls(**values, extra=_extra(data, set(kinds)))


@dataclass(frozen=True)
class Node:
    """A member of the pool: ``state`` is ``launching``, ``in_service`` or ``draining``."""

    id: str
    ip: str | None
    index: int
    state: str

    @classmethod
    def from_json(cls, data: Any) -> Node:
        return cls(
            id=_field(data, "id", str),
            ip=_field(data, "ip", str, optional=True),
            index=_field(data, "index", int),
            state=_field(data, "state", str),
        )


@dataclass(frozen=True)
class CacheList:
    """The pool (``GET``/``POST /api/scaler/cache_list``).

    ``cache_pool_ids``: launching and in-service nodes in order; ``nodes`` also shows the
    draining ones; ``sequence``: the last notification the front-end answered (0 before any).
    """

    cache_pool_ids: tuple[str, ...]
    nodes: tuple[Node, ...]
    sequence: int

    @property
    def in_service(self) -> tuple[Node, ...]:
        """The nodes to spread keys over, in index order (a front-end's starting point)."""
        return tuple(sorted((n for n in self.nodes if n.state == IN_SERVICE), key=lambda n: n.index))

    @classmethod
    def from_json(cls, data: Any) -> CacheList:
        ids = _field(data, "cache_pool_ids", list)
        if not all(isinstance(node_id, str) for node_id in ids):
            raise UnexpectedAnswerError(f"'cache_pool_ids' holds something other than ids: {ids!r}")
        return cls(
            cache_pool_ids=tuple(ids),
            nodes=tuple(Node.from_json(node) for node in _field(data, "nodes", list)),
            sequence=_field(data, "sequence", int),
        )


@dataclass(frozen=True)
class Decision:
    """A scaling decision: what ``resize`` and ``set_test_miss_rate`` answer, and what a tick
    record holds. ``action``: ``scale_out``, ``scale_in``, ``repair``, ``replace`` or ``hold``;
    ``miss_rate`` None without data; ``extra``: the rest (``draining``, ``launched``…)."""

    time: datetime
    miss_rate: float | None
    previous_size: int
    target_size: int
    action: str
    reason: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> Decision:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            time=_time(data, "time"),
            miss_rate=_field(data, "miss_rate", float, optional=True),
            previous_size=_field(data, "previous_size", int),
            target_size=_field(data, "target_size", int),
            action=_field(data, "action", str),
            reason=_field(data, "reason", str),
            extra=_extra(data, known),
        )


@dataclass(frozen=True)
class HistoryRecord:
    """One history record (``GET /api/scaler/history``): ``kind`` is ``tick``, ``config`` or
    ``membership``; ``details`` holds the rest of it (a config record's ``changed``…)."""

    time: datetime
    kind: str
    details: Mapping[str, Any]

    @property
    def decision(self) -> Decision | None:
        """A tick record's decision (it is a decision plus ``requests`` and ``policy``)."""
        if self.kind != "tick":
            return None
        return Decision.from_json({"time": self.time.isoformat(), **self.details})

    @classmethod
    def from_json(cls, data: Any) -> HistoryRecord:
        return cls(
            time=_time(data, "time"),
            kind=_field(data, "kind", str),
            details=_extra(data, {"time", "kind"}),
        )


@dataclass(frozen=True)
class Health:
    """``GET /api/scaler`` (no token needed)."""

    status: str
    pool_size: int
    auto_mode: bool

    @classmethod
    def from_json(cls, data: Any) -> Health:
        return cls(
            status=_field(data, "status", str),
            pool_size=_field(data, "pool_size", int),
            auto_mode=_field(data, "auto_mode", bool),
        )
