"""Who may call the API: one check for every route, as Chalice middleware.

Chalice's built-in authorizers run only in API Gateway, cannot read the cookie and cannot
answer in Chalice's error shape, so this runs inside the app, under ``chalice local`` too.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

from aws_lambda_powertools.utilities import parameters
from botocore.exceptions import ClientError
from chalice import NotFoundError, Response, UnauthorizedError
from chalice.app import Request

from chalicelib.domain.errors import DependencyError
from chalicelib.domain.settings import Settings
from chalicelib.web.bodies import MAX_BODY_BYTES
from chalicelib.web.http_errors import (
    RETRY_AFTER_SECONDS,
    PayloadTooLargeError,
    ServiceUnavailableError,
    error_response,
)

COOKIE_NAME = "scaler_token"
# Routes anyone may GET: the page that asks for the token, and the health check.
PUBLIC_ROUTES = {("GET", "/"), ("GET", "/api/scaler")}
PUBLIC_PREFIXES = ("/assets/",)
TEST_ROUTES = {"/api/scaler/terminate_all", "/api/scaler/set_test_miss_rate"}
_TOKEN_CACHE_SECONDS = 300


def configured_token(settings: Settings) -> str | None:
    """The API token: ``SCALER_API_TOKEN``, else the SSM SecureString it names, else None."""
    if settings.api_token:
        return settings.api_token
    if not settings.api_token_param:
        return None
    try:
        return parameters.get_parameter(settings.api_token_param, decrypt=True, max_age=_TOKEN_CACHE_SECONDS)
    except parameters.exceptions.GetParameterError as exc:
        # Powertools raises this while handling the ClientError, without chaining it.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ClientError) and cause.response["Error"]["Code"] == "ParameterNotFound":
            return None
        raise DependencyError("could not read the API token from SSM") from exc


def presented_token(request: Request) -> str | None:
    """The bearer token of the request; on a GET also the dashboard's cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method == "GET":
        cookie = SimpleCookie()
        try:
            cookie.load(request.headers.get("cookie", ""))
        except CookieError:
            return None
        if COOKIE_NAME in cookie and cookie[COOKIE_NAME].value:
            return cookie[COOKIE_NAME].value
    return None


def _is_public(request: Request) -> bool:
    return (request.method, request.path) in PUBLIC_ROUTES or (
        request.method == "GET" and request.path.startswith(PUBLIC_PREFIXES)
    )


def _refusal(request: Request, settings: Settings) -> Response | None:
    if request.path in TEST_ROUTES and not settings.enable_test_endpoints:
        return error_response(NotFoundError("test endpoints are disabled in this stage"))
    if _is_public(request):
        return None
    try:
        expected = configured_token(settings)
    except DependencyError as exc:
        return error_response(ServiceUnavailableError(str(exc)), {"Retry-After": str(RETRY_AFTER_SECONDS)})
    challenge = {"WWW-Authenticate": 'Bearer realm="memcache-scaler"'}
    if expected is None:
        return error_response(UnauthorizedError("no API token is configured for this deployment"), challenge)
    presented = presented_token(request)
    if presented is None:
        return error_response(UnauthorizedError("missing bearer token"), challenge)
    if not hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8")):
        return error_response(UnauthorizedError("wrong token"), challenge)
    if len(request.raw_body or b"") > MAX_BODY_BYTES:
        return error_response(PayloadTooLargeError(f"body over {MAX_BODY_BYTES} bytes"))
    return None


def http_middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """Refuse what may not pass (disabled test route, no or wrong token, oversized body);
    add ``Retry-After`` to every 503 on the way out."""
    refusal = _refusal(request, Settings.from_env())
    response = refusal if refusal is not None else get_response(request)
    if response.status_code == 503:
        response.headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return response
