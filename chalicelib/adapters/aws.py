"""Lazily created, cached boto3 clients.

A client made before moto starts talks to real AWS, so nothing here runs at import time;
tests call :func:`reset_clients` whenever they start a new mock.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

# Short timeouts and few retries: a tick runs every minute, and a stuck call must fail
# fast so that the next tick can try again rather than pile up behind this one.
_BOTO_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
)

_clients: dict[str, Any] = {}


def client(service: str) -> Any:
    """Return the cached boto3 client for ``service``, creating it on first use."""
    if service not in _clients:
        # boto3 honours AWS_ENDPOINT_URL (and per-service variants) itself.
        _clients[service] = boto3.session.Session().client(service, config=_BOTO_CONFIG)
    return _clients[service]


def reset_clients() -> None:
    """Forget every cached client (tests: after starting or stopping a mock)."""
    _clients.clear()
