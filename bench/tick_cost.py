"""What one steady-state tick costs under moto: median wall time and AWS calls, at pool sizes 1 and 8.

    .venv/bin/python -m bench.tick_cost [--ticks 30]

A steady tick is one with nothing to do: every node in service and publishing, the miss rate
within the thresholds. moto runs in-process, so the times measure the scaler's own work plus
moto's, not network latency to AWS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws

from chalicelib.adapters import aws
from chalicelib.domain.config import default_config
from chalicelib.domain.records import config_record
from chalicelib.domain.settings import Settings
from chalicelib.service.tick import TickDeps, run_tick

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _publish(node_ids: list[str], minute: datetime) -> None:
    data = [
        {
            "MetricName": name,
            "Dimensions": [{"Name": "NodeId", "Value": node}],
            "Timestamp": minute,
            "Value": value,
            "Unit": "Count",
        }
        for node in node_ids
        for name, value in (("GetRequests", 1000), ("Hits", 500))
    ]
    boto3.client("cloudwatch").put_metric_data(Namespace="Memcache", MetricData=data)


def measure(size: int, ticks: int) -> tuple[float, dict[str, int]]:
    """Median seconds of a steady tick at ``size`` nodes, and the calls one such tick makes."""
    with mock_aws():
        aws.reset_clients()
        settings = Settings.from_env({"NODE_AMI_ID": "ami-12c6146b", "TABLE_NAME": "bench"})
        deps = TickDeps.from_settings(settings)
        deps.store.create_table()
        config = {**default_config(), "min_pool_size": size, "max_pool_size": size}
        deps.store.save_config(config, 0, config_record(T0, changed={}, previous={}, source_ip="bench"))
        run_tick(deps, T0)  # repair to size
        times: list[float] = []
        calls: dict[str, int] = {}
        for minute in range(1, ticks + 3):
            _publish(deps.store.load_pool().cache_pool_ids, T0 + timedelta(minutes=minute - 1))
            counted: dict[str, int] = {}

            def count(event_name: str, counted: dict[str, int] = counted, **_: Any) -> None:
                name = event_name.split(".", 1)[1]
                counted[name] = counted.get(name, 0) + 1

            for client in aws._clients.values():
                client.meta.events.register("before-call", count)
            started = time.perf_counter()
            decision = run_tick(deps, T0 + timedelta(minutes=minute))
            elapsed = time.perf_counter() - started
            for client in aws._clients.values():
                client.meta.events.unregister("before-call", count)
            if minute >= 3:  # nodes in service, nothing to do
                assert decision["action"] == "hold", decision
                times.append(elapsed)
                calls = counted
        aws.reset_clients()
    return statistics.median(times), calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    print(f"{'pool size':>9}  {'median tick (ms)':>16}  {'AWS calls':>9}  calls")
    for size in (1, 8):
        median, calls = measure(size, args.ticks)
        detail = ", ".join(f"{name} {count}" for name, count in sorted(calls.items()))
        print(f"{size:>9}  {median * 1000:>16.1f}  {sum(calls.values()):>9}  {detail}")


if __name__ == "__main__":
    main()
