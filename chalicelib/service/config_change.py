"""A config change, one path for ``POST /api/scaler/config`` and the operators' CLI: the fields
checked one by one, merged into the stored config under its version check, the rules checked on
the result, and a record of what changed (``domain/config.py`` holds the rules)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.domain import config as config_rules
from chalicelib.domain.clock import WallClock, wall_clock
from chalicelib.service.history import pool_clock


def change_config(
    store: StateStore,
    fields: Mapping[str, Any],
    *,
    from_form: bool,
    source_ip: str,
    wall_clock: WallClock = wall_clock,
) -> dict[str, Any]:
    """Merge ``fields`` into the config and answer the whole config after the change.

    Every problem of ``fields`` is reported in one :class:`ValidationError` before anything is
    written; a change that writes nothing (the values it already has) records nothing.
    """
    patch = config_rules.parse_patch(fields, from_form=from_form)
    now = pool_clock(store.load_pool(), wall_clock)
    return config_rules.update_config(store, patch, source_ip=source_ip, now=now)
