"""HTTP errors in Chalice's shape, and the one place project errors become status codes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from chalice import (
    BadRequestError,
    ChaliceViewError,
    ConflictError,
    NotFoundError,
    Response,
)

from chalicelib.domain.errors import (
    DependencyError,
    PoolConflictError,
    ScalerError,
    UnknownNodeError,
    ValidationError,
)

RETRY_AFTER_SECONDS = 5


class PayloadTooLargeError(ChaliceViewError):
    STATUS_CODE = 413


class ServiceUnavailableError(ChaliceViewError):
    STATUS_CODE = 503


_STATUS_FOR: list[tuple[type[ScalerError], type[ChaliceViewError]]] = [
    (ValidationError, BadRequestError),
    (UnknownNodeError, NotFoundError),
    (PoolConflictError, ConflictError),
    (DependencyError, ServiceUnavailableError),  # BusyError included
]


def chalice_error(exc: ScalerError) -> ChaliceViewError:
    for project_error, http_error in _STATUS_FOR:
        if isinstance(exc, project_error):
            return http_error(str(exc))
    return ChaliceViewError(str(exc))


def error_response(exc: ChaliceViewError, headers: dict[str, str] | None = None) -> Response:
    """Chalice's own error shape, for middleware (which cannot raise view errors)."""
    return Response(
        body={"Code": type(exc).__name__, "Message": str(exc)},
        status_code=exc.STATUS_CODE,
        headers=headers or {},
    )


def handle_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's exceptions into Chalice's HTTP errors (Chalice renders those)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except ScalerError as exc:
            raise chalice_error(exc) from exc

    return wrapped
