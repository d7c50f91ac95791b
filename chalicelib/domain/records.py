"""History records: what the scaler did and why, in SPEC's shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.domain.clock import iso


def sort_key_time(moment: datetime) -> str:
    """A fixed-width UTC stamp that sorts records made within the same second too."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Record:
    at: datetime
    kind: str  # "tick", "config" or "membership"
    body: dict[str, Any] = field(default_factory=dict)
    # A fixed id makes the record's key deterministic: a second write of it is refused, which
    # is how a retried tick finds out that its record (and state) were written already.
    fixed_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"time": iso(self.at), "kind": self.kind, **self.body}


def tick_record(at: datetime, body: dict[str, Any]) -> Record:
    return Record(at, "tick", body, fixed_id="tick")


def config_record(
    at: datetime, *, changed: dict[str, Any], previous: dict[str, Any], source_ip: str
) -> Record:
    return Record(at, "config", {"changed": changed, "previous": previous, "source_ip": source_ip})


def membership_record(
    at: datetime,
    *,
    change: str,
    reason: str,
    added: list[str] | None = None,
    removed: list[str] | None = None,
    source_ip: str | None = None,
) -> Record:
    body: dict[str, Any] = {
        "change": change,
        "added": added or [],
        "removed": removed or [],
        "reason": reason,
    }
    if source_ip is not None:
        body["source_ip"] = source_ip
    return Record(at, "membership", body)
