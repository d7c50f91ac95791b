"""A client of the memcache scaler's HTTP API for the manager-app and the front-end.

Typed calls (``ScalerClient``), typed answers (``scaler_client.models``), typed errors
(``scaler_client.errors``) and retries that honour ``Retry-After`` where a repeat is safe.
It imports urllib3 and nothing of the scaler: it ships alone.
"""

from scaler_client.client import ScalerClient
from scaler_client.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ScalerClientError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
    UnexpectedAnswerError,
    UnreachableError,
)
from scaler_client.models import CacheList, Config, Decision, Health, HistoryRecord, Node

__all__ = [
    "ApiError",
    "BadRequestError",
    "CacheList",
    "Config",
    "ConflictError",
    "Decision",
    "ForbiddenError",
    "Health",
    "HistoryRecord",
    "Node",
    "NotFoundError",
    "PayloadTooLargeError",
    "ScalerClient",
    "ScalerClientError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "UnexpectedAnswerError",
    "UnreachableError",
]
