"""Adapter: the pool's traffic from CloudWatch, and the miss-rate arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from chalicelib.adapters.cloudwatch import PoolMetrics
from chalicelib.domain.errors import DependencyError
from chalicelib.domain.settings import MetricNames
from chalicelib.domain.traffic import NodeTraffic, PoolTraffic, miss_rate
from tests.conftest import REGION, metric_queries, publish

T = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("nodes", "in_service", "min_gets", "expected"),
    [
        ({"a": NodeTraffic(100, 80)}, ["a"], 50, (0.2, 100)),
        ({"a": NodeTraffic(100, 80), "b": NodeTraffic(300, 0)}, ["a", "b"], 50, (0.8, 400)),
        ({"a": NodeTraffic(100, 80), "b": NodeTraffic(300, 0)}, ["a"], 50, (0.2, 100)),  # b not in service
        ({"a": NodeTraffic(49, 0)}, ["a"], 50, (None, 49)),  # too few requests: no data, not 100%
        ({"a": NodeTraffic(0, 0)}, ["a"], 0, (None, 0)),  # nothing served: no data, not 0%
        ({}, ["a"], 50, (None, 0)),  # nothing published
        ({"a": NodeTraffic(50, 50)}, ["a"], 50, (0.0, 50)),
    ],
)
def test_miss_rate(
    nodes: dict[str, NodeTraffic], in_service: list[str], min_gets: int, expected: Any
) -> None:
    rate, requests = miss_rate(PoolTraffic(nodes), in_service, min_gets)
    assert (None if rate is None else round(rate, 9), requests) == expected


def test_reads_sums_over_the_window_and_the_newest_datapoint(moto: None) -> None:
    for minute in range(1, 6):  # 11:55 .. 11:59
        publish(["i-a"], T - timedelta(minutes=minute), gets=100, hits=60)
    publish(["i-a"], T, gets=9999, hits=0)  # at T: outside [T − 60 s, T)
    publish(["i-b"], T - timedelta(minutes=4), gets=10, hits=10)  # silent for the last 3 minutes
    traffic = PoolMetrics(MetricNames()).read(["i-a", "i-b", "i-c"], T, 60, 300)
    assert traffic.of("i-a") == NodeTraffic(100.0, 60.0, T - timedelta(minutes=1))
    assert traffic.of("i-b") == NodeTraffic(0.0, 0.0, T - timedelta(minutes=4))
    assert traffic.of("i-c") == NodeTraffic()
    wider = PoolMetrics(MetricNames()).read(["i-a"], T, 180, 300)
    assert wider.of("i-a").gets == 300.0


def _stubbed(pages: list[dict[str, Any]]) -> tuple[PoolMetrics, Stubber]:
    client = boto3.client("cloudwatch", region_name=REGION)
    stub = Stubber(client)
    for index, page in enumerate(pages):
        expected = {
            "MetricDataQueries": ANY,
            "StartTime": T - timedelta(seconds=300),
            "EndTime": T,
            "ScanBy": "TimestampDescending",
        }
        if index:
            expected["NextToken"] = f"page-{index}"
        stub.add_response("get_metric_data", page, expected)
    return PoolMetrics(MetricNames(), client=client), stub


def _result(query_id: str, values: list[float], minutes_before: list[int]) -> dict[str, Any]:
    return {
        "Id": query_id,
        "Label": query_id,
        "Timestamps": [T - timedelta(minutes=m) for m in minutes_before],
        "Values": values,
        "StatusCode": "PartialData",
    }


def test_every_page_of_one_call_is_read(moto: None) -> None:
    metrics, stub = _stubbed(
        [
            {
                "MetricDataResults": [_result("g0", [70], [1]), _result("h0", [35], [1])],
                "NextToken": "page-1",
            },
            {"MetricDataResults": [_result("g0", [30], [1]), _result("g1", [5], [3])]},
        ]
    )
    with stub:
        traffic = metrics.read(["i-a", "i-b"], T, 60, 300)
        stub.assert_no_pending_responses()
    assert traffic.of("i-a") == NodeTraffic(100.0, 35.0, T - timedelta(minutes=1))
    assert traffic.of("i-b") == NodeTraffic(0.0, 0.0, T - timedelta(minutes=3))


def test_one_call_whatever_the_pool_size_with_namespace_names_and_dimension_from_env(moto: None) -> None:
    names = MetricNames.from_env(
        {
            "METRICS_NAMESPACE": "Cache",
            "METRICS_DIMENSION": "Node",
            "METRIC_GETS": "Gets",
            "METRIC_HITS": "Hit",
        }
    )
    queries = metric_queries(names, [f"i-{n}" for n in range(8)], T)
    assert len(queries) == 16
    stats = {q["MetricStat"]["Metric"]["MetricName"] for q in queries}
    assert stats == {"Gets", "Hit"}
    assert {q["MetricStat"]["Metric"]["Namespace"] for q in queries} == {"Cache"}
    assert {q["MetricStat"]["Metric"]["Dimensions"][0]["Name"] for q in queries} == {"Node"}
    assert all(q["MetricStat"]["Stat"] == "Sum" and q["MetricStat"]["Period"] == 60 for q in queries)


def test_throttling_is_a_dependency_error(moto: None) -> None:
    client = boto3.client("cloudwatch", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("get_metric_data", "Throttling")
        with pytest.raises(DependencyError, match="Throttling"):
            PoolMetrics(MetricNames(), client=client).read(["i-a"], T, 60, 300)


def test_no_nodes_no_call() -> None:
    assert PoolMetrics(MetricNames(), client=object()).read([], T, 60, 300) == PoolTraffic()
