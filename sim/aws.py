"""The simulation's only AWS calls: which pool instances run, and what the nodes publish.

Clients are made on first use, per ``Cloud`` (so one made inside ``moto.mock_aws`` never leaks
into another test); boto3 itself honours ``AWS_ENDPOINT_URL``, which the local stack sets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config

from sim.lru import FACTORS

POOL_TAG_KEY = "memcache-pool"
# Where in the minute [T − 60 s, T) the datapoints sit: the middle, safely inside the window
# whether a reader's period buckets start at T − 60 s or are checked with "< T".
STAMP_BEFORE_END = timedelta(seconds=30)
# CloudWatch's limit of datums per PutMetricData call.
MAX_DATUMS_PER_CALL = 1_000

_BOTO_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 3})


class Cloud:
    """EC2 and CloudWatch for the simulated nodes, with SPEC's metric names (env overrides them)."""

    def __init__(
        self, env: Mapping[str, str] | None = None, clients: Mapping[str, Any] | None = None
    ) -> None:
        env = os.environ if env is None else env
        self.namespace = env.get("METRICS_NAMESPACE") or "Memcache"
        self.dimension = env.get("METRICS_DIMENSION") or "NodeId"
        self.gets_metric = env.get("METRIC_GETS") or "GetRequests"
        self.hits_metric = env.get("METRIC_HITS") or "Hits"
        self.hits_within_metric = env.get("METRIC_HITS_WITHIN") or "HitsWithin"
        self._clients: dict[str, Any] = dict(clients or {})

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.session.Session().client(service, config=_BOTO_CONFIG)
        return self._clients[service]

    def running_pool_instances(self, pool_name: str) -> list[str]:
        """Ids of the pool's tagged instances that EC2 says are running (pending ones boot still)."""
        pages = (
            self.client("ec2")
            .get_paginator("describe_instances")
            .paginate(
                Filters=[
                    {"Name": f"tag:{POOL_TAG_KEY}", "Values": [pool_name]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]},
                ]
            )
        )
        return sorted(
            instance["InstanceId"]
            for page in pages
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
            if instance["State"]["Name"] == "running"
        )

    def publish(
        self,
        node_counts: Mapping[str, tuple[int, int]],
        window_end: datetime,
        within: Mapping[str, Sequence[int]] | None = None,
    ) -> int:
        """Put each node's ``(gets, hits)`` for the minute before ``window_end``; the datums sent.

        ``within`` adds SPEC's optional curve: per node, ``HitsWithin`` for each of
        ``CAPACITY_FACTORS`` (the extra dimension ``CapacityFactor``).
        """
        stamp = window_end - STAMP_BEFORE_END
        data = [
            {
                "MetricName": metric,
                "Dimensions": [{"Name": self.dimension, "Value": node_id}],
                "Timestamp": stamp,
                "Value": float(value),
                "Unit": "Count",
            }
            for node_id, (gets, hits) in sorted(node_counts.items())
            for metric, value in ((self.gets_metric, gets), (self.hits_metric, hits))
        ]
        for node_id, values in sorted((within or {}).items()):
            data.extend(
                {
                    "MetricName": self.hits_within_metric,
                    "Dimensions": [
                        {"Name": self.dimension, "Value": node_id},
                        {"Name": "CapacityFactor", "Value": factor},
                    ],
                    "Timestamp": stamp,
                    "Value": float(value),
                    "Unit": "Count",
                }
                for factor, value in zip(FACTORS, values, strict=True)
            )
        # Eight nodes make 72 datums with the curve, one call; the loop matters only for far more.
        for start in range(0, len(data), MAX_DATUMS_PER_CALL):
            self.client("cloudwatch").put_metric_data(
                Namespace=self.namespace, MetricData=data[start : start + MAX_DATUMS_PER_CALL]
            )
        return len(data)
