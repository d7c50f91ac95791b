"""The client's errors: one class per answer a caller handles differently.

An HTTP error answer is a :class:`ApiError` whatever produced it: the app (Chalice's body,
``{"Code": "...", "Message": "..."}``) or API Gateway in front of it (its own body,
``{"message": "..."}``, and an ``x-amzn-ErrorType`` header), so callers never parse bodies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class ScalerClientError(Exception):
    """Base of every error the client raises."""


class UnreachableError(ScalerClientError):
    """No HTTP answer (connection refused, timed out, reset) after the retries."""


class UnexpectedAnswerError(ScalerClientError):
    """A success answer whose body is not what SPEC says it is (not JSON, a field missing)."""


class ApiError(ScalerClientError):
    """An HTTP error answer, after the retries that were safe.

    ``code`` is Chalice's ``Code`` (``BadRequestError``…) or API Gateway's error type
    (``ForbiddenException``…), None when neither says; ``message`` is the text to show a person;
    ``retry_after`` the seconds the server asked for, when it did.
    """

    status: int = 0

    def __init__(self, status: int, message: str, code: str | None = None, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


class BadRequestError(ApiError):
    """400: the input was refused (every problem in ``message``); nothing was changed."""


class UnauthorizedError(ApiError):
    """401: the token is missing or wrong, or the scaler has none configured."""


class ForbiddenError(ApiError):
    """403: API Gateway refused the request (a wrong URL or stage, a resource policy)."""


class NotFoundError(ApiError):
    """404: an unknown node, or a test endpoint that is disabled."""


class ConflictError(ApiError):
    """409: the request conflicts with the pool's state (``resize`` while auto_mode is on…)."""


class PayloadTooLargeError(ApiError):
    """413: a body over 64 KiB."""


class TooManyRequestsError(ApiError):
    """429: throttled, and still throttled after the retries."""


class UnavailableError(ApiError):
    """502, 503 or 504: AWS failed behind the API, another writer held the pool, or the
    function failed or timed out; still so after the retries that were safe. Try again later."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: TooManyRequestsError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}
_SHOWN_CHARS = 300


def api_error(
    status: int, body: bytes, headers: Mapping[str, str], reason: str = "", retry_after: float | None = None
) -> ApiError:
    """The typed error for an error answer, its message read from whichever body it carries."""
    code: str | None = None
    message: str | None = None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        # Chalice: {"Code", "Message"}; API Gateway's own answers: {"message"}.
        text = data.get("Message", data.get("message"))
        message = text if isinstance(text, str) else None
        code = data.get("Code") if isinstance(data.get("Code"), str) else None
    if code is None:
        # API Gateway names its errors in a header, e.g. "ForbiddenException" (or with ":<url>").
        code = (headers.get("x-amzn-ErrorType") or "").split(":")[0].strip() or None
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = text[:_SHOWN_CHARS] or reason or "no message"
    return _BY_STATUS.get(status, ApiError)(status, message, code, retry_after)
