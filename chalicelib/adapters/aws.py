"""Lazily created, cached boto3 clients.

A client made before moto starts talks to real AWS, so nothing here runs at import time;
tests call :func:`reset_clients` whenever they start a new mock.

The clients come from one boto3 session per process, made on first use: a session parses each
service's model once (EC2's is megabytes of JSON), so a fresh session per client would parse it
again for every client. The session holds no connection; clients do, and they are what
:func:`reset_clients` forgets. Sessions are not safe to share across threads while they make
clients (the local stack's scheduler and server threads both do), hence the lock.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import NoRegionError

from chalicelib.domain.errors import ConfigurationError

# Short timeouts and few retries: a tick runs every minute, and a stuck call must fail
# fast so that the next tick can try again rather than pile up behind this one.
_BOTO_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
)

_clients: dict[str, Any] = {}
_session: list[boto3.session.Session] = []
_lock = threading.Lock()


def client(service: str) -> Any:
    """Return the cached boto3 client for ``service``, creating it on first use.

    Settings that make no client (no region, an endpoint that is no URL) raise
    :class:`ConfigurationError`, which names them.
    """
    with _lock:
        if service not in _clients:
            if not _session:
                _session.append(boto3.session.Session())
            # boto3 honours AWS_ENDPOINT_URL (and per-service variants) itself, read here.
            try:
                _clients[service] = _session[0].client(service, config=_BOTO_CONFIG)
            except NoRegionError as exc:
                raise ConfigurationError("no AWS region: set AWS_DEFAULT_REGION") from exc
            except ValueError as exc:  # botocore's "Invalid endpoint: …"
                raise ConfigurationError(f"{exc} (is AWS_ENDPOINT_URL a URL?)") from exc
        return _clients[service]


def reset_clients() -> None:
    """Forget every cached client (tests: after starting or stopping a mock)."""
    _clients.clear()
