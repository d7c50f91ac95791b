"""The operators' command line, against moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import cli
from tests.conftest import PROJECT_DIR, TABLE, post_json, table_items
from tests.test_drain import frontend, state_of  # noqa: F401  (frontend: a fixture)
from tests.test_tick import nodes, tick


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()  # not what the routes of a test's set-up logged
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


# -- the commands an operator reaches for -----------------------------------------------------


def fail(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """A command that fails: its exit code and its stderr, with nothing on stdout."""
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert code != 0 and captured.out == ""
    return code, captured.err


@pytest.mark.parametrize(
    "command",
    [
        "bootstrap",
        "status",
        "tick",
        "history",
        "pause",
        "resume",
        "config",
        "config get",
        "config set",
        "drain",
    ],
)
def test_every_command_has_help_ending_with_the_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command.split(), "--help"])
    help_text = capsys.readouterr().out
    assert exit_.value.code == 0
    assert help_text.startswith(f"usage: python -m chalicelib.cli {command} ")
    assert help_text.rstrip().endswith(cli.EXIT_CODES.rstrip())
    assert "3  no such node, or a conflict with the pool's state" in cli.EXIT_CODES


def test_config_set_get_pause_and_resume_are_recorded_as_the_cli(
    moto: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, config = run(
        capsys, "config", "set", "max_miss_rate_threshold=0.7", "policy=predictive", "min_pool_size=2"
    )
    assert code == 0
    assert (config["max_miss_rate_threshold"], config["policy"], config["min_pool_size"]) == (
        0.7,
        "predictive",
        2,
    )
    assert run(capsys, "config", "get") == (0, config)
    assert run(capsys, "pause")[1] == {**config, "auto_mode": False}
    assert run(capsys, "pause")[1]["auto_mode"] is False  # already paused: no change, no record
    assert run(capsys, "resume")[1] == config
    code, history = run(capsys, "history", "--minutes", "5")
    assert code == 0
    assert [(r["kind"], r["changed"], r["source_ip"]) for r in history["records"]] == [
        ("config", {"max_miss_rate_threshold": 0.7, "policy": "predictive", "min_pool_size": 2}, "cli"),
        ("config", {"auto_mode": False}, "cli"),
        ("config", {"auto_mode": True}, "cli"),
    ]


def test_config_set_refuses_what_the_route_refuses_with_every_problem_listed(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    before = table_items()
    code, message = fail(
        capsys,
        "config",
        "set",
        "min_pool_size=2.5",
        "max_miss_rate_threshold=high",
        "colour=blue",
        "auto_mode=0",
    )
    body = {"min_pool_size": 2.5, "max_miss_rate_threshold": "high", "colour": "blue", "auto_mode": 0}
    answer = post_json(client, "/api/scaler/config", body)
    assert answer.status_code == 400
    assert (code, message) == (cli.EXIT_USAGE, f"error: {answer.json_body['Message']}\n")
    assert message.count(";") == 3, "all four problems, on one line"
    assert fail(capsys, "config", "set", "min_miss_rate_threshold=0.9")[1].startswith(
        "error: min_miss_rate_threshold must be below max_miss_rate_threshold"
    )
    assert fail(capsys, "config", "set", "expand_ratio=NaN") == (
        cli.EXIT_USAGE,
        "error: expand_ratio: must be a finite number, got nan\n",
    )
    assert fail(capsys, "config", "set", "auto_mode=true", "auto_mode=false") == (
        cli.EXIT_USAGE,
        "error: auto_mode: given more than once\n",
    )
    assert table_items() == before, "nothing was written"


def test_config_set_needs_key_value_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["config", "set"], ["config", "set", "auto_mode"], ["config", "set", "=1"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == cli.EXIT_USAGE
    assert "expected KEY=VALUE, got 'auto_mode'" in capsys.readouterr().err


def test_history_minutes_are_checked_as_the_route_checks_them(
    moto: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "history") == (0, {"records": []})
    for minutes in ("0", "10081", "an hour"):
        code, message = fail(capsys, "history", "--minutes", minutes)
        assert (code, message) == (
            cli.EXIT_USAGE,
            f"error: minutes must be an integer from 1 to 10080, got {minutes!r}\n",
        )


@pytest.mark.usefixtures("frontend")
def test_drain_confirms_a_draining_node_by_its_id(
    client: Client, ec2: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    post_json(client, "/api/scaler/config", {"auto_mode": False})
    post_json(client, "/api/scaler/resize", {"target_size": 4})
    tick(client, 0)  # in service; the front-end is told
    listed = nodes(client)
    assert post_json(client, "/api/scaler/resize", {"target_size": 3}).json_body["draining"] == [
        listed[3]["id"]
    ]
    goner = listed[3]["id"]

    assert run(capsys, "drain", goner) == (0, {"terminated": goner})
    assert state_of(ec2, goner) in ("shutting-down", "terminated")
    assert goner not in [node["id"] for node in nodes(client)]
    assert run(capsys, "drain", goner) == (0, {"terminated": goner}), "confirming again answers the same"
    (record,) = [r for r in run(capsys, "history")[1]["records"] if r.get("change") == "drain_confirmed"]
    assert (record["removed"], record["source_ip"]) == ([goner], "cli")

    serving = listed[0]["id"]
    assert fail(capsys, "drain", serving) == (
        cli.EXIT_REFUSED,
        f"error: {serving} at {listed[0]['ip']} is in_service, not draining\n",
    )
    assert fail(capsys, "drain", "i-0123456789abcdef0") == (
        cli.EXIT_REFUSED,
        "error: no node of the pool has id i-0123456789abcdef0\n",
    )
    assert fail(capsys, "drain", "10.0.0.1") == (
        cli.EXIT_USAGE,
        "error: not an EC2 instance id: '10.0.0.1'\n",
    )
    assert state_of(ec2, serving) == "running"


def test_aws_failing_is_exit_1_in_one_line(moto: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, message = fail(capsys, "--stage", "prod", "config", "get")  # prod's table was never made
    assert code == cli.EXIT_FAILED
    assert message == (
        "error: DynamoDB table 'memcache-scaler-prod' not found; "
        "create it with `python -m chalicelib.cli bootstrap`\n"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "DRAIN_TIMEOUT_SECONDS",
            "soon",
            "bad environment: DRAIN_TIMEOUT_SECONDS must be a whole number of seconds, got 'soon'",
        ),
        (
            "HISTORY_TTL_DAYS",
            "a month",
            "bad environment: HISTORY_TTL_DAYS must be a whole number of days, got 'a month'",
        ),
        (
            "FRONTEND_NOTIFY_TIMEOUT_SECONDS",
            "3s",
            "bad environment: FRONTEND_NOTIFY_TIMEOUT_SECONDS must be a number, got '3s'",
        ),
        ("AWS_ENDPOINT_URL", "localhost", "Invalid endpoint: localhost (is AWS_ENDPOINT_URL a URL?)"),
    ],
)
def test_a_bad_environment_variable_is_one_line_and_exit_2(
    name: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    assert fail(capsys, "config", "get") == (cli.EXIT_USAGE, f"error: {message}\n")


def test_a_bad_environment_variable_is_no_traceback_in_a_real_run() -> None:
    env = {**os.environ, "NODE_READINESS": "sometimes"}
    done = subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", "pause"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (cli.EXIT_USAGE, "")
    assert done.stderr == (
        "error: bad environment: NODE_READINESS must be one of ('metrics', 'running'), got 'sometimes'\n"
    )
