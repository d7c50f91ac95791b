"""The notice endpoint as a WSGI app, for any framework that mounts one (Flask, Django, gunicorn)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from frontend_kit.notifications import FrontendKit

# SPEC's notices are a few hundred bytes; the scaler's own API refuses bodies over 64 KiB too.
MAX_BODY_BYTES = 64 * 1024

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed"}
_REASONS |= {411: "Length Required", 413: "Content Too Large"}


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers under their HTTP names (``HTTP_X_SCALER_SIGNATURE`` → ``X-Scaler-Signature``)."""
    named = (key for key in environ if key.startswith("HTTP_"))
    return {key[5:].replace("_", "-").title(): str(environ[key]) for key in named}


def wsgi_app(kit: FrontendKit) -> WsgiApp:
    """A WSGI app that answers the scaler's POSTs with ``kit.handle``, mounted at the notify URL."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        status, answer = _answer(kit, environ)
        body = json.dumps(answer).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if status == 405:
            headers.append(("Allow", "POST"))
        start_response(f"{status} {_REASONS.get(status, '')}".rstrip(), headers)
        return [body]

    return app


def _answer(kit: FrontendKit, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if environ.get("REQUEST_METHOD") != "POST":
        return 405, {"error": "POST a notice here"}
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return 411, {"error": "Content-Length required"}
    if length < 0 or length > MAX_BODY_BYTES:
        return 413, {"error": f"a notice is at most {MAX_BODY_BYTES} bytes"}
    body = environ["wsgi.input"].read(length)
    return kit.handle(_headers(environ), body)
