"""Logs, metrics and traces with Powertools, put around every invocation by Chalice middleware.

Each request and each tick writes one JSON log line (with the request id, or the tick's T), and an
invocation that recorded metrics prints them as one EMF line, which CloudWatch turns into metrics
in the ``MemcacheScaler`` namespace. X-Ray subsegments are recorded only when the stage turns
tracing on (see :func:`tracing_disabled`); otherwise no Tracer is made, so neither the X-Ray SDK
nor the botocore it brings is imported (or packaged: a traced stage adds aws-xray-sdk to
requirements.txt, and a test of the package checks the two agree).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from chalice.app import CloudWatchEvent, Request, Response

from chalicelib.domain.clock import iso, tick_time

SERVICE = "memcache-scaler"
NAMESPACE = "MemcacheScaler"
# Decisions that change the pool; ``hold`` and a replayed decision count 0.
SCALING_ACTIONS = frozenset({"scale_out", "scale_in", "repair", "replace"})
NOTIFICATION_FAILURES = "NotificationFailures"
LAUNCH_FAILURES = "LaunchFailures"
TERMINATE_FAILURES = "TerminateFailures"
# Counted where they happen, in a tick or a route; a tick that counted none publishes a 0, so that
# the series is continuous and missing data means no ticks.
FAILURE_COUNTS = (NOTIFICATION_FAILURES, LAUNCH_FAILURES, TERMINATE_FAILURES)
# The tick's figures (``chalicelib.service.tick.figures``) and the metric each is published as.
FIGURE_METRICS = {
    "in_service": ("InService", MetricUnit.Count),
    "launching": ("Launching", MetricUnit.Count),
    "draining": ("Draining", MetricUnit.Count),
    "notices_queued": ("NotificationBacklog", MetricUnit.Count),
    "max_pool_size": ("MaxPoolSize", MetricUnit.Count),
    "max_miss_rate_threshold": ("MaxMissRateThreshold", MetricUnit.NoUnit),
}
# What a tick's log line carries from its summary, when present.
_TICK_FIELDS = (
    "action",
    "reason",
    "miss_rate",
    "requests",
    "previous_size",
    "target_size",
    "policy",
    "launched",
    "terminated",
    "draining",
    "taken_back",
    "errors",
    "replayed",
    "figures",
)


class _CurrentStdout:
    """``sys.stdout`` as it is at each write: pytest and the local stack replace it after import,
    and a handler holding the old stream would write where nobody reads."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def tracing_disabled(env: Mapping[str, str]) -> bool:
    """Off unless the stage sets ``POWERTOOLS_TRACE_DISABLED=false``.

    Chalice's ``xray`` flag turns on X-Ray for the stage's functions but tells the code nothing,
    while Powertools traces by default inside Lambda; so tracing follows this variable, default
    off, and a stage with ``"xray": true`` sets it to ``false`` (a test checks the two agree).
    """
    return (env.get("POWERTOOLS_TRACE_DISABLED") or "true").strip().lower() not in {"0", "false", "no", "off"}


logger = Logger(service=SERVICE, stream=cast(IO[str], _CurrentStdout()))
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def _tracer() -> Any:
    """Powertools' Tracer when the stage traces, else None: making one imports the X-Ray SDK,
    a fifth of a second of every cold start. When made, Powertools still turns tracing off
    outside Lambda (chalice local, tests)."""
    if tracing_disabled(os.environ):
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)


tracer = _tracer()


class _Untraced:
    def put_annotation(self, key: str, value: Any) -> None:
        """Nothing to annotate when nothing is traced."""


@contextmanager
def _subsegment(name: str) -> Iterator[Any]:
    if tracer is None:
        yield _Untraced()
        return
    with tracer.provider.in_subsegment(name) as subsegment:
        yield subsegment


def count_notification_failure() -> None:
    """A notification the front-end did not take (or that was refused before sending)."""
    metrics.add_metric(name=NOTIFICATION_FAILURES, unit=MetricUnit.Count, value=1)


def count_launch_failure() -> None:
    """A launch EC2 refused (after every instance type was tried): a bad image, subnet, role."""
    metrics.add_metric(name=LAUNCH_FAILURES, unit=MetricUnit.Count, value=1)


def count_terminate_failure() -> None:
    """A termination EC2 refused or did not answer; it stays owed and is retried."""
    metrics.add_metric(name=TERMINATE_FAILURES, unit=MetricUnit.Count, value=1)


def record_tick(summary: Mapping[str, Any] | None, duration_ms: float) -> None:
    """A tick's metrics; ``summary`` is None when the tick raised."""
    metrics.add_metric(name="TickDurationMs", unit=MetricUnit.Milliseconds, value=duration_ms)
    for name in FAILURE_COUNTS:
        if name not in metrics.metric_set:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=0)
    if summary is None:
        return
    for key, value in (summary.get("figures") or {}).items():
        if key in FIGURE_METRICS and isinstance(value, int | float) and not isinstance(value, bool):
            name, unit = FIGURE_METRICS[key]
            metrics.add_metric(name=name, unit=unit, value=value)
    replayed = bool(summary.get("replayed"))
    acted = summary.get("action") in SCALING_ACTIONS and not replayed
    metrics.add_metric(name="ScalingActions", unit=MetricUnit.Count, value=1 if acted else 0)
    if isinstance(summary.get("target_size"), int):
        metrics.add_metric(name="PoolSize", unit=MetricUnit.Count, value=summary["target_size"])
    if summary.get("miss_rate") is not None and not replayed:  # no data: no datapoint
        metrics.add_metric(name="MissRate", unit=MetricUnit.NoUnit, value=summary["miss_rate"])


def flush_metrics() -> None:
    """Print what this invocation recorded as one EMF line; nothing when it recorded nothing
    (Powertools warns on an empty flush, which every plain request would otherwise cause)."""
    if not metrics.metric_set:
        return
    stage = os.environ.get("STAGE")
    if stage:  # dev and prod may share an account: their alarms must not see each other's data
        metrics.add_dimension(name="stage", value=stage)
    metrics.flush_metrics()
    metrics.clear_metrics()  # flush keeps them when POWERTOOLS_METRICS_DISABLED is set


@contextmanager
def _log_keys(keys: Mapping[str, Any]) -> Iterator[None]:
    # Per thread: ``chalice local`` serves requests on threads, and keys must not leak across them.
    logger.thread_safe_append_keys(**keys)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(list(keys))


def _function_request_id(context: Any) -> str | None:
    return getattr(context, "aws_request_id", None)  # the local stack's scheduler passes None


def request_middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """HTTP: the request id and path on every log line of the request, then one line for it."""
    function_request_id = _function_request_id(request.lambda_context)
    keys = {
        # API Gateway's id is what a caller sees (x-amzn-RequestId); Lambda's is the fallback locally.
        "request_id": request.context.get("requestId") or function_request_id,
        "function_request_id": function_request_id,
        "method": request.method,
        "path": request.path,
    }
    started = time.perf_counter()
    with _log_keys(keys), _subsegment("## request") as subsegment:
        try:
            response = get_response(request)
        except Exception:
            logger.exception("request failed")
            raise
        finally:
            flush_metrics()  # routes record only failures: notifications, launches, terminations
        status = response.status_code
        subsegment.put_annotation("route", request.path)
        subsegment.put_annotation("status", status)
        log = logger.error if status >= 500 else logger.info
        log(
            "request",
            extra={
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "source_ip": request.context.get("identity", {}).get("sourceIp"),
            },
        )
        return response


def tick_middleware(event: CloudWatchEvent, get_response: Callable[[CloudWatchEvent], Any]) -> Any:
    """The scheduled tick: its T on every log line, one line for the decision, its metrics."""
    keys = {
        "tick_time": _tick_key(event.time),
        "event_id": event.event_id,
        "function_request_id": _function_request_id(event.context),
    }
    started = time.perf_counter()
    summary: dict[str, Any] | None = None
    with _log_keys(keys), _subsegment("## tick") as subsegment:
        try:
            summary = get_response(event)
            return summary
        except Exception:
            logger.exception("tick failed")
            raise
        finally:
            record_tick(summary, round((time.perf_counter() - started) * 1000, 1))
            if summary is not None:
                _log_tick(summary)
                subsegment.put_annotation("action", str(summary.get("action")))
            flush_metrics()


def _log_tick(summary: Mapping[str, Any]) -> None:
    fields = {name: summary[name] for name in _TICK_FIELDS if name in summary}
    (logger.warning if summary.get("errors") else logger.info)("tick", extra=fields)


def _tick_key(event_time: str) -> str:
    try:
        return iso(tick_time(event_time))
    except (TypeError, ValueError):
        return str(event_time)  # the tick itself will refuse it; the line still shows what came
