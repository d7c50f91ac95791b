"""The operators' command line, against moto."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib import cli
from tests.conftest import TABLE


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if code == 0 else out


def test_bootstrap_twice(moto: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "bootstrap") == (0, {"table": TABLE, "created": False})  # the fixture made it
    assert run(capsys, "--stage", "prod", "bootstrap")[1] == {
        "table": "memcache-scaler-prod",
        "created": True,
    }
    assert run(capsys, "--stage", "prod", "bootstrap")[1]["created"] is False


def test_tick_at_a_time_then_status(moto: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, dry = run(capsys, "tick", "--at", "2026-11-26T12:00:40Z", "--dry-run")
    assert (
        code == 0
        and dry["dry_run"] is True
        and dry["would_launch"] == 1
        and dry["time"] == "2026-11-26T12:00:00Z"
    )
    assert run(capsys, "status")[1]["pool_size"] == 0
    code, decision = run(capsys, "tick", "--at", "2026-11-26T12:00:40Z")
    assert (code, decision["action"], decision["target_size"]) == (0, "repair", 1)
    status = run(capsys, "status")[1]
    assert status["pool_size"] == 1 and status["last_tick"] == "2026-11-26T12:00:00Z"
    assert status["terminating"] == []


def test_a_bad_time_is_refused(moto: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["tick", "--at", "yesterday"])
    assert exit_.value.code == 2
