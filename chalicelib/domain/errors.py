"""The project's own exceptions.

Adapters turn AWS failures into these; the routes map them to HTTP answers in one place
(``chalicelib.web.http_errors.handle_errors``). Every optimistic write is retried by one loop,
:func:`retry_on_conflict`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
ATTEMPTS = 8  # writes of one pool item rarely race more than twice in a row
_BUSY = "the pool kept changing under this request"


class ScalerError(Exception):
    """Base of every error the scaler raises on purpose."""


class ValidationError(ScalerError):
    """The caller sent bad input; nothing was changed (HTTP 400)."""


class UnknownNodeError(ScalerError):
    """The request names a node the pool does not have (HTTP 404)."""


class PoolConflictError(ScalerError):
    """The request conflicts with the pool's state or the deployment (HTTP 409)."""


class DependencyError(ScalerError):
    """An AWS call failed; the request may be retried (HTTP 503)."""


class ConfigurationError(ScalerError):
    """The deployment's settings are wrong (an environment variable): no retry helps."""


class VersionConflictError(ScalerError):
    """A conditional write lost against another writer; re-read and try again."""


class RecordExistsError(VersionConflictError):
    """A record with a fixed key (a tick's) was written before: that work is done."""


class BusyError(DependencyError):
    """Another writer kept winning the pool's state; try again shortly (HTTP 503)."""


def retry_on_conflict(attempt: Callable[[], T], *, busy: str = _BUSY) -> T:
    """Run ``attempt`` (read, decide, write under a version check) until its write wins.

    A lost race (:class:`VersionConflictError`) reads and decides again; a writer that keeps
    losing answers :class:`BusyError` (503, try again) with ``busy`` as the reason.
    """
    for _ in range(ATTEMPTS):
        try:
            return attempt()
        except RecordExistsError:
            raise
        except VersionConflictError:
            continue
    raise BusyError(f"{busy}; try again")
