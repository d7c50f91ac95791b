"""CloudWatch adapter: what the pool's nodes published, read in ONE GetMetricData call per tick.

The call is paged (``NextToken``) but never split by node, so a tick costs the same whatever the
pool size. The miss-rate arithmetic is plain Python on the sums (no metric math).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters import aws
from chalicelib.domain.errors import DependencyError
from chalicelib.domain.settings import MetricNames
from chalicelib.domain.traffic import CAPACITY_FACTORS, NodeTraffic, PoolTraffic

# CloudWatch answers standard-resolution data in whole minutes.
PERIOD_SECONDS = 60
CURVE_DIMENSION = "CapacityFactor"


class PoolMetrics:
    """Reads ``GetRequests`` and ``Hits`` (and, when asked, the ``HitsWithin`` curve) for a set of nodes."""

    def __init__(self, names: MetricNames, *, client: Any = None) -> None:
        self.names = names
        self._client = client

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else aws.client("cloudwatch")

    def _query(self, query_id: str, metric: str, dimensions: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {"Namespace": self.names.namespace, "MetricName": metric, "Dimensions": dimensions},
                "Period": PERIOD_SECONDS,
                "Stat": "Sum",
            },
            "ReturnData": True,
        }

    def read(
        self,
        node_ids: Sequence[str],
        end: datetime,
        window_seconds: int,
        lookback_seconds: int,
        *,
        curve: bool = False,
    ) -> PoolTraffic:
        """Sums over [end − window, end) and the newest datapoint within [end − lookback, end).

        ``curve`` adds the seven ``HitsWithin`` series per node to the same call (8 nodes make 72
        queries, well under GetMetricData's 500): still one call per tick, however many pages.
        """
        if not node_ids:
            return PoolTraffic()
        lookback_seconds = max(lookback_seconds, window_seconds)
        queries, owners = [], {}
        for index, node in enumerate(node_ids):
            node_dimension = {"Name": self.names.dimension, "Value": node}
            for kind, metric in (("g", self.names.gets), ("h", self.names.hits)):
                query_id = f"{kind}{index}"
                owners[query_id] = (node, kind)
                queries.append(self._query(query_id, metric, [node_dimension]))
            for position, factor in enumerate(CAPACITY_FACTORS if curve else ()):
                query_id = f"w{index}x{position}"
                owners[query_id] = (node, f"w{position}")
                dimensions = [node_dimension, {"Name": CURVE_DIMENSION, "Value": factor}]
                queries.append(self._query(query_id, self.names.hits_within, dimensions))
        window_start = end - timedelta(seconds=window_seconds)
        sums: dict[tuple[str, str], float] = {}
        newest: dict[str, datetime] = {}
        try:
            pages = self.client.get_paginator("get_metric_data").paginate(
                MetricDataQueries=queries,
                StartTime=end - timedelta(seconds=lookback_seconds),
                EndTime=end,
                ScanBy="TimestampDescending",
            )
            for page in pages:
                for result in page["MetricDataResults"]:
                    node, kind = owners[result["Id"]]
                    for stamp, value in zip(result["Timestamps"], result["Values"], strict=False):
                        if stamp >= window_start:
                            sums[(node, kind)] = sums.get((node, kind), 0.0) + value
                        if kind == "g" and (node not in newest or stamp > newest[node]):
                            newest[node] = stamp
        except (ClientError, BotoCoreError) as exc:
            code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
            raise DependencyError(f"CloudWatch GetMetricData failed ({code})") from exc
        return PoolTraffic(
            {
                node: NodeTraffic(
                    sums.get((node, "g"), 0.0),
                    sums.get((node, "h"), 0.0),
                    newest.get(node),
                    _within(sums, node) if curve else None,
                )
                for node in node_ids
            }
        )


def _within(sums: Mapping[tuple[str, str], float], node: str) -> tuple[float, ...] | None:
    """A node's curve over the window, or None unless it published every factor in it."""
    values = [sums.get((node, f"w{position}")) for position in range(len(CAPACITY_FACTORS))]
    if any(value is None for value in values):
        return None
    return tuple(float(value) for value in values if value is not None)
