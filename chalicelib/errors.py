"""The project's own exceptions.

Adapters turn AWS failures into these; the routes map them to HTTP answers in one place
(``chalicelib.api.handle_errors``).
"""

from __future__ import annotations


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


class VersionConflictError(ScalerError):
    """A conditional write lost against another writer; re-read and try again."""


class RecordExistsError(VersionConflictError):
    """A record with a fixed key (a tick's) was written before: that work is done."""


class BusyError(DependencyError):
    """Another writer kept winning the pool's state; try again shortly (HTTP 503)."""
