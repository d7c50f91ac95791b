"""What the functions print for CloudWatch: JSON log lines and EMF metrics, read back from stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

import app as app_module
from chalicelib.adapters import aws, observability
from chalicelib.web import routes as api
from tests.conftest import AUTH, DEV_ENV, PROJECT_DIR, cw_event, post_json
from tests.frontend import FakeFrontend
from tests.test_tick import serve, tick


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    """Powertools keeps metrics on the class: none may leak in from another test, or out of this one."""
    observability.metrics.clear_metrics()
    yield
    observability.metrics.clear_metrics()


def printed(capsys: pytest.CaptureFixture[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What was printed since the last call: (EMF documents, log lines)."""
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return [d for d in documents if "_aws" in d], [d for d in documents if "_aws" not in d]


def metrics_of(emf: dict[str, Any]) -> dict[str, Any]:
    """One EMF document's metrics: name → value (a list when recorded more than once)."""
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "MemcacheScaler"
    return {metric["Name"]: emf[metric["Name"]] for metric in directive["Metrics"]}


def dimensions_of(emf: dict[str, Any]) -> dict[str, str]:
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    (names,) = directive["Dimensions"]
    return {name: emf[name] for name in names}


# What every tick publishes besides its duration, with the default config and nothing failing.
QUIET = {"NotificationFailures": [0.0], "LaunchFailures": [0.0], "TerminateFailures": [0.0]}


def figures(in_service: int = 0, launching: int = 0, draining: int = 0, backlog: int = 0) -> dict[str, Any]:
    """The pool's figures as a tick publishes them, with the default config's limits."""
    return {
        "InService": [float(in_service)],
        "Launching": [float(launching)],
        "Draining": [float(draining)],
        "NotificationBacklog": [float(backlog)],
        "MaxPoolSize": [8.0],
        "MaxMissRateThreshold": [0.8],
    }


def without_duration(emf: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics_of(emf).items() if k != "TickDurationMs"}


def test_a_tick_prints_one_emf_document_with_its_metrics(client: Client, capsys: Any) -> None:
    printed(capsys)
    assert tick(client, 0)["action"] == "repair"
    (emf,), _ = printed(capsys)
    values = metrics_of(emf)
    assert dimensions_of(emf) == {"service": "memcache-scaler", "stage": DEV_ENV["STAGE"]}
    assert without_duration(emf) == {
        "PoolSize": [1.0],
        "ScalingActions": [1.0],
        **QUIET,
        **figures(launching=1),
    }, "no MissRate without data"
    (duration,) = values["TickDurationMs"]
    assert 0 < duration < 60_000
    units = {m["Name"]: m["Unit"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["TickDurationMs"] == "Milliseconds" and units["ScalingActions"] == "Count"
    assert units["InService"] == units["NotificationBacklog"] == units["LaunchFailures"] == "Count"


def test_miss_rate_is_published_when_there_is_data_and_a_hold_is_no_action(
    client: Client, capsys: Any
) -> None:
    tick(client, 0)
    serve(client, 1, 0.9)
    printed(capsys)
    assert tick(client, 1)["action"] == "scale_out"
    (emf,), _ = printed(capsys)
    assert without_duration(emf) == {
        "MissRate": [0.9],
        "PoolSize": [2.0],
        "ScalingActions": [1.0],
        **QUIET,
        **figures(in_service=1, launching=1),
    }
    serve(client, 2, 0.5)
    assert tick(client, 2)["action"] == "hold"
    (emf,), _ = printed(capsys)
    assert metrics_of(emf)["ScalingActions"] == [0.0] and metrics_of(emf)["MissRate"] == [0.5]


def test_a_retried_event_counts_no_second_action(client: Client, capsys: Any) -> None:
    tick(client, 0)
    printed(capsys)
    assert tick(client, 0)["replayed"] is True
    (emf,), _ = printed(capsys)
    assert metrics_of(emf)["ScalingActions"] == [0.0] and metrics_of(emf)["PoolSize"] == [1.0]


def test_without_a_stage_the_service_is_the_only_dimension(capsys: Any) -> None:
    observability.record_tick(None, 12.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("STAGE", raising=False)
        observability.flush_metrics()
    (emf,), _ = printed(capsys)
    assert dimensions_of(emf) == {"service": "memcache-scaler"}
    assert metrics_of(emf) == {"TickDurationMs": [12.5], **QUIET}


def test_a_tick_logs_one_json_line_with_its_time_and_decision(client: Client, capsys: Any) -> None:
    printed(capsys)
    # The event fires 40 s into the minute; the tick's T is the minute.
    client.lambda_.invoke("scale", cw_event("2026-11-26T12:00:40Z"))
    _, (line,) = printed(capsys)
    assert line["level"] == "INFO" and line["service"] == "memcache-scaler" and line["message"] == "tick"
    assert line["tick_time"] == "2026-11-26T12:00:00Z"
    assert line["event_id"] == "event-2026-11-26T12:00:40Z" and line["function_request_id"]
    assert (line["action"], line["previous_size"], line["target_size"]) == ("repair", 0, 1)
    assert "below min_pool_size" in line["reason"] and len(line["launched"]) == 1


def test_routes_log_their_request_id_and_print_no_metrics(client: Client, capsys: Any) -> None:
    printed(capsys)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Powertools warns on a flush with no metrics
        assert client.http.get("/api/scaler/config", headers=AUTH).status_code == 200
        assert client.http.post("/api/scaler/config", body=b"{}").status_code == 401
    emf, (ok, refused) = printed(capsys)
    assert emf == []
    for line, status in ((ok, 200), (refused, 401)):
        assert (
            line["level"] == "INFO" and line["service"] == "memcache-scaler" and line["message"] == "request"
        )
        assert line["request_id"] and line["path"] == "/api/scaler/config" and line["status"] == status
        assert "tick_time" not in line, "keys of one invocation do not stay for the next"
    assert ok["request_id"] != refused["request_id"] and ok["method"] == "GET"


def test_a_route_that_records_a_metric_flushes_it_once(
    client: Client, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = api._status

    def failing_to_notify() -> dict[str, Any]:
        observability.count_notification_failure()
        return status()

    monkeypatch.setattr(api, "_status", failing_to_notify)
    printed(capsys)
    client.http.get("/api/scaler")
    client.http.get("/api/scaler")
    emf, _ = printed(capsys)
    assert [metrics_of(document) for document in emf] == [{"NotificationFailures": [1.0]}] * 2


def test_undelivered_notifications_are_counted_and_logged(
    client: Client, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeFrontend() as frontend:
        frontend.status = 503
        monkeypatch.setenv("FRONTEND_NOTIFY_URL", frontend.url)
        monkeypatch.setenv("FRONTEND_NOTIFY_TIMEOUT_SECONDS", "0.2")
        monkeypatch.setenv("NODE_READINESS", "running")
        tick(client, 0)  # launches a node: nothing to tell yet
        printed(capsys)
        tick(client, 1)  # the node is in service: its increase is not taken
        (emf,), lines = printed(capsys)
    assert len(frontend.received) == 3, "three attempts"
    assert metrics_of(emf)["NotificationFailures"] == [1.0]
    assert metrics_of(emf)["NotificationBacklog"] == [1.0], "the increase waits for the front-end"
    (warning,) = [line for line in lines if line["level"] == "WARNING"]
    assert warning["message"].startswith("notification not delivered")
    assert (warning["sequence"], warning["change"], warning["last"]) == (1, "increase", "HTTP 503")
    assert warning["tick_time"] == "2026-11-26T12:01:00Z"


def test_a_backlog_is_published_every_tick_until_the_front_end_takes_it(
    client: Client, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeFrontend() as frontend:
        frontend.status = 500  # the front-end is down
        monkeypatch.setenv("FRONTEND_NOTIFY_URL", frontend.url)
        monkeypatch.setenv("FRONTEND_NOTIFY_TIMEOUT_SECONDS", "0.2")
        monkeypatch.setenv("NODE_READINESS", "running")
        post_json(client, "/api/scaler/config", {"min_pool_size": 2})
        tick(client, 0)  # two launches: nothing to tell yet
        printed(capsys)
        backlog = []
        for minute in (1, 2, 3):  # in service: their increase waits, and waits
            tick(client, minute)
            (emf,), _ = printed(capsys)
            backlog.append(metrics_of(emf)["NotificationBacklog"])
        frontend.status = 200
        tick(client, 4)
        (emf,), _ = printed(capsys)
    assert backlog == [[1.0]] * 3
    assert without_duration(emf) == {"PoolSize": [2.0], "ScalingActions": [0.0], **QUIET, **figures(2)}


def test_the_pool_figures_follow_launches_drains_and_the_config(
    client: Client, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeFrontend() as frontend:
        monkeypatch.setenv("FRONTEND_NOTIFY_URL", frontend.url)
        monkeypatch.setenv("NODE_READINESS", "running")
        post_json(client, "/api/scaler/config", {"auto_mode": False, "max_pool_size": 6})
        assert post_json(client, "/api/scaler/resize", {"target_size": 4}).status_code == 200
        printed(capsys)
        tick(client, 0)  # the four come into service
        (in_service,), _ = printed(capsys)
        assert post_json(client, "/api/scaler/resize", {"target_size": 2}).json_body["action"] == "scale_in"
        post_json(client, "/api/scaler/config", {"max_miss_rate_threshold": 0.6})
        printed(capsys)
        tick(client, 1)  # two drain: their decrease is delivered, the front-end has not confirmed
        (draining,), _ = printed(capsys)
    limits = {"MaxPoolSize": [6.0]}
    assert without_duration(in_service) == {
        "PoolSize": [4.0],
        "ScalingActions": [0.0],
        **QUIET,
        **figures(in_service=4),
        **limits,
    }
    assert without_duration(draining) == {
        "PoolSize": [2.0],
        "ScalingActions": [0.0],
        **QUIET,
        **figures(in_service=2, draining=2),
        **limits,
        "MaxMissRateThreshold": [0.6],
    }


def test_a_failed_launch_is_counted_every_tick_it_fails(
    client: Client, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subnet that does not exist: EC2 (moto) refuses every RunInstances."""
    monkeypatch.setenv("NODE_SUBNET_IDS", "subnet-0000000000000bad0")
    printed(capsys)
    counted = []
    for minute in (0, 1, 2):
        decision = tick(client, minute)
        assert any("InvalidSubnetID.NotFound" in error for error in decision["errors"]), decision
        (emf,), (line,) = printed(capsys)
        counted.append(metrics_of(emf)["LaunchFailures"])
        assert metrics_of(emf)["Launching"] == [0.0] and line["level"] == "WARNING"
    monkeypatch.delenv("NODE_SUBNET_IDS")
    tick(client, 3)
    (emf,), _ = printed(capsys)
    assert counted == [[1.0]] * 3
    assert without_duration(emf) == {
        "PoolSize": [1.0],
        "ScalingActions": [1.0],
        **QUIET,
        **figures(launching=1),
    }


@contextmanager
def terminations_refused() -> Iterator[None]:
    """EC2 answers TerminateInstances with UnauthorizedOperation (an IAM policy that lacks it),
    raised inside botocore's call, where the adapter's own error handling sees it."""

    def refuse(**_: Any) -> None:
        error = {"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}}
        raise ClientError(error, "TerminateInstances")

    events = aws.client("ec2").meta.events
    events.register("before-call.ec2.TerminateInstances", refuse, unique_id="refuse-terminations")
    try:
        yield
    finally:
        events.unregister("before-call.ec2.TerminateInstances", unique_id="refuse-terminations")


def test_a_failed_terminate_is_counted_by_the_route_and_by_each_tick_that_retries_it(
    client: Client, capsys: Any
) -> None:
    tick(client, 0)
    printed(capsys)
    with terminations_refused():
        response = client.http.post("/api/scaler/terminate_all", headers=AUTH)
        assert response.status_code == 503, response.body
        route, _ = printed(capsys)
        decision = tick(client, 1)  # retried first: refused again
        (retried,), _ = printed(capsys)
    assert [metrics_of(document) for document in route] == [{"TerminateFailures": [1.0]}]
    assert any("UnauthorizedOperation" in error for error in decision["errors"]), decision
    assert metrics_of(retried)["TerminateFailures"] == [1.0]
    tick(client, 2)
    (settled,), _ = printed(capsys)
    assert metrics_of(settled)["TerminateFailures"] == [0.0]


def test_a_failing_tick_logs_the_error_and_still_flushes_once(
    client: Client, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(event_time: str, context: Any) -> dict[str, Any]:
        raise RuntimeError("DynamoDB is on fire")

    monkeypatch.setattr(app_module, "scheduled_tick", broken)
    printed(capsys)
    with pytest.raises(RuntimeError):
        tick(client, 0)
    (emf,), (line,) = printed(capsys)
    assert metrics_of(emf) == {"TickDurationMs": metrics_of(emf)["TickDurationMs"], **QUIET}
    assert line["level"] == "ERROR" and line["message"] == "tick failed"
    assert line["tick_time"] == "2026-11-26T12:00:00Z" and "DynamoDB is on fire" in line["exception"]


def test_each_line_is_printed_once(client: Client, capsys: Any) -> None:
    """configure_logs=False: Chalice's own handler on the same logger would print every line twice."""
    printed(capsys)
    client.http.get("/api/scaler")
    _, lines = printed(capsys)
    assert len(lines) == 1


# -- tracing follows the stage's xray flag ---------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "disabled"),
    [
        ({}, True),
        ({"POWERTOOLS_TRACE_DISABLED": "true"}, True),
        ({"POWERTOOLS_TRACE_DISABLED": "false"}, False),
        ({"POWERTOOLS_TRACE_DISABLED": "False"}, False),
        ({"POWERTOOLS_TRACE_DISABLED": "0"}, False),
        ({"POWERTOOLS_TRACE_DISABLED": ""}, True),
    ],
)
def test_tracing_is_off_unless_the_stage_turns_it_on(env: dict[str, str], disabled: bool) -> None:
    assert observability.tracing_disabled(env) is disabled


def test_tracing_is_off_in_tests_and_the_x_ray_sdk_is_not_imported() -> None:
    """No Tracer without tracing: it would import the X-Ray SDK (and its botocore) at cold start."""
    assert observability.tracer is None
    code = "import sys, app; print(sorted(m for m in sys.modules if m.startswith('aws_xray_sdk')))"
    env = {k: v for k, v in os.environ.items() if k != "POWERTOOLS_TRACE_DISABLED"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_traced_stage_makes_its_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    tracer = observability._tracer()
    assert tracer is not None and type(tracer).__name__ == "Tracer"


def test_each_stage_traces_exactly_when_its_xray_flag_is_on() -> None:
    """Chalice's ``xray`` and POWERTOOLS_TRACE_DISABLED live side by side in .chalice/config.json."""
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    for name, stage in config["stages"].items():
        env = {**config.get("environment_variables", {}), **stage.get("environment_variables", {})}
        xray = bool(stage.get("xray", config.get("xray", False)))
        assert observability.tracing_disabled(env) is not xray, name
        # The code cannot know its stage otherwise: the https rule and the metrics' dimension need it.
        assert env.get("STAGE") == name, f"stage {name} must set STAGE={name}"
