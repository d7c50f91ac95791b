"""``python -m node_agent``: the command line, the environment, and the wiring."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from node_agent import clock_file
from node_agent.agent import Agent, MetricNames
from node_agent.curve import StreamCurve
from node_agent.imds import DEFAULT_IMDS_URL, InstanceMetadata, MetadataError
from node_agent.memcached import Counters, parse_address, read_stats
from node_agent.publisher import Publisher

LOG = logging.getLogger("node_agent")


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m node_agent",
        description="Sample this node's memcached every interval and publish GetRequests and Hits "
        "(per-interval deltas, dimension NodeId) to CloudWatch.",
    )
    parser.add_argument(
        "--memcached",
        default=env.get("NODE_AGENT_MEMCACHED", "127.0.0.1:11211"),
        help="host:port of memcached (env NODE_AGENT_MEMCACHED; default %(default)s)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=float(env.get("NODE_AGENT_INTERVAL", "10")),
        help="seconds between samples (env NODE_AGENT_INTERVAL; default %(default)s)",
    )
    parser.add_argument(
        "--node-id",
        default=env.get("NODE_ID") or None,
        help="the NodeId to publish (env NODE_ID; default: the EC2 instance id from IMDSv2)",
    )
    parser.add_argument(
        "--region",
        default=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        help="CloudWatch's region (env AWS_REGION; default: the instance's, from IMDSv2)",
    )
    parser.add_argument(
        "--imds-url",
        default=env.get("NODE_AGENT_IMDS_URL", DEFAULT_IMDS_URL),
        help="the instance metadata service (env NODE_AGENT_IMDS_URL; default %(default)s)",
    )
    parser.add_argument(
        "--backlog-intervals",
        type=int,
        default=int(env.get("NODE_AGENT_BACKLOG_INTERVALS", "30")),
        help="unsent intervals kept for the next try (default %(default)s)",
    )
    parser.add_argument(
        "--curve-items",
        type=int,
        default=int(env.get("NODE_AGENT_CURVE_ITEMS", "0")),
        help="publish HitsWithin, the miss-ratio curve, for a cache of this many items "
        "(env NODE_AGENT_CURVE_ITEMS; default 0: no curve)",
    )
    parser.add_argument(
        "--clock-file",
        type=Path,
        default=env.get("NODE_AGENT_CLOCK_FILE") or None,
        help="follow the time in this file instead of the wall clock: publish each time it changes, "
        "stamped inside the minute before it, then write it to <file>.<node-id>.ack "
        "(env NODE_AGENT_CLOCK_FILE; for a simulation's clock, such as the local stack's)",
    )
    parser.add_argument("--log-level", default=env.get("NODE_AGENT_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be positive")
    return args


def utc_now() -> datetime:
    return datetime.now(UTC)


def cloudwatch_client(region: str) -> Any:
    import boto3
    from botocore.config import Config

    # One attempt per call: the publisher retries itself, within the interval's budget.
    config = Config(connect_timeout=2, read_timeout=4, retries={"mode": "standard", "max_attempts": 1})
    return boto3.session.Session().client("cloudwatch", region_name=region, config=config)


def build_agent(args: argparse.Namespace, env: Mapping[str, str]) -> Agent:
    metadata = InstanceMetadata(args.imds_url)
    node_id = args.node_id or metadata.instance_id()
    region = args.region or metadata.region()
    address = parse_address(args.memcached)
    names = MetricNames.from_env(env)
    client = cache(lambda: cloudwatch_client(region))
    publisher = Publisher(
        client, names.namespace, now=utc_now, sleep=time.sleep, max_intervals=args.backlog_intervals
    )
    curve = StreamCurve(address, args.curve_items) if args.curve_items > 0 else None
    if curve is not None:
        curve.start()
    LOG.info("node %s, region %s, memcached %s, every %ss", node_id, region, args.memcached, args.interval)
    return Agent(
        read_counters=curve.read_counters if curve else lambda: Counters.from_stats(read_stats(address)),
        publisher=publisher,
        node_id=node_id,
        names=names,
        interval_seconds=args.interval,
        now=utc_now,
        sleep=time.sleep,
        curve=curve,
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = parse_args(argv, env)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        agent = build_agent(args, env)
    except MetadataError as exc:
        LOG.error("no node id or region (give --node-id and --region off EC2): %s", exc)
        return 2
    try:
        if args.clock_file is not None:
            clock_file.follow(agent, args.clock_file, sleep=time.sleep)
        else:
            agent.run()
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
