"""Telling the front-end: SPEC's ``increase``/``decrease`` notifications and their delivery.

Notifications are derived from how the pool changed (nodes newly in service, nodes newly
draining), queued on the pool (``outbox``) in the same write as the change, and delivered in
order afterwards. One that is not answered with a 2xx stays queued and is retried at the next
tick; until a ``decrease`` is delivered its nodes are neither terminated nor released.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from chalicelib.adapters.observability import count_notification_failure, logger
from chalicelib.domain.settings import Settings

# Answers worth another attempt at once (besides 5xx and no answer at all): a timeout, too fast.
RETRIED_STATUSES = (408, 429)
# What recording a delivery may take after it (one DynamoDB write, with a retry).
RECORD_SECONDS = 1.0
SIGNATURE_HEADER = "X-Scaler-Signature"
PROD_STAGE = "prod"
# Link-local (the instance metadata service, ECS and Lambda credentials endpoints live there)
# and EC2's IPv6 metadata address: a notification must never reach them.
_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(net) for net in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
)
# Host names the C resolver reads as IPv4 addresses (2852039166, 0xa9.0xfe.0xa9.0xfe, 169.254.43518).
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}")


def notifier_for(settings: Settings) -> Notifier | None:
    """The front-end's notifier, when ``FRONTEND_NOTIFY_URL`` is set.

    A URL that :func:`notify_url_problem` refuses still gives a notifier, one that sends nothing:
    notifications stay queued and draining nodes stay alive until the URL is fixed, where no
    notifier at all would terminate nodes the front-end still routes keys to.
    """
    url = settings.frontend_notify_url
    if not url:
        return None
    problem = notify_url_problem(url, settings.stage)
    if problem is not None:
        logger.error("FRONTEND_NOTIFY_URL refused: nothing is sent", extra={"problem": problem})
    return Notifier(
        url,
        settings.frontend_notify_secret,
        timeout=settings.frontend_notify_timeout_seconds,
        refusal=problem,
    )


def notify_url_problem(url: str, stage: str | None) -> str | None:
    """Why the scaler may not POST to ``url``, or None when it may.

    Every stage: an http(s) URL with a host that is not a link-local or metadata address
    (169.254.0.0/16, fe80::/10, fd00:ec2::254), written in any form the resolver takes as one
    (``::ffff:169.254.169.254``, ``2852039166``), nor an ``instance-data`` name. In ``prod`` also
    https, and no loopback, unspecified or ``localhost`` host (in Lambda, loopback is the runtime
    API). Other names are not resolved here: what DNS answers now is not what it answers at send
    time, so such a check would promise what it cannot keep.
    """
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".")
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an http(s) URL with a host"
    if stage == PROD_STAGE and parts.scheme != "https":
        return "must be https in prod"
    address = _address(host)
    if address is not None and _is_forbidden(address):
        return f"{host} is a link-local or metadata address"
    if host.split(".")[0] == "instance-data":
        return f"{host} names the instance metadata service"
    local = host == "localhost" or host.endswith(".localhost")
    if address is not None:
        local = any(candidate.is_loopback or candidate.is_unspecified for candidate in _spellings(address))
    if stage == PROD_STAGE and local:
        return f"{host} is this machine, not a front-end"
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` spells, if it spells one; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _spellings(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address, and the IPv4 address an IPv4-mapped IPv6 one (``::ffff:a.b.c.d``) reaches."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return [address] if mapped is None else [address, mapped]


def _is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(candidate in net for candidate in _spellings(address) for net in _FORBIDDEN_NETWORKS)


class Deadline:
    """When an invocation must stop starting slow work: Lambda kills it at its timeout.

    ``seconds`` None means no limit. ``clock`` is monotonic seconds (injectable for tests).
    """

    def __init__(self, seconds: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    @classmethod
    def of_invocation(cls, context: Any, *, cap_seconds: float | None = None) -> Deadline:
        """The Lambda context's remaining time, cut to ``cap_seconds`` (API Gateway gives a
        request 29 s whatever the function's timeout); ``cap_seconds`` alone without a context."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        seconds = remaining() / 1000 if remaining is not None else None
        if cap_seconds is not None:
            seconds = cap_seconds if seconds is None else min(seconds, cap_seconds)
        return cls(seconds)

    def left(self) -> float:
        return float("inf") if self._end is None else self._end - self._clock()

    def allows(self, seconds: float) -> bool:
        """Is there time for work that may take ``seconds``?"""
        return self.left() >= seconds


Post = Callable[[str, bytes, dict[str, str], float], int]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is the answer: a failed delivery


# http(s) only, and no redirects: urllib would turn the POST into a GET to wherever ``Location``
# says (a metadata address, plain http), count its 200 as delivered, and get past the URL check.
_OPENER = urllib.request.OpenerDirector()
for _handler in (
    urllib.request.ProxyHandler(),
    urllib.request.HTTPHandler(),
    urllib.request.HTTPSHandler(),
    urllib.request.HTTPDefaultErrorHandler(),
    urllib.request.HTTPErrorProcessor(),
    _NoRedirect(),
):
    _OPENER.add_handler(_handler)


def _urllib_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Notifier:
    """POSTs notifications with a timeout and a few quick retries; never raises."""

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        timeout: float = 3.0,
        attempts: int = 3,
        post: Post = _urllib_post,
        sleep: Callable[[float], None] = time.sleep,
        refusal: str | None = None,
    ) -> None:
        self.url, self.secret, self.timeout, self.attempts = url, secret, timeout, attempts
        self._post, self._sleep = post, sleep
        self.refusal = refusal  # why nothing may be sent to ``url`` (see notify_url_problem)

    def headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.secret:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        return headers

    def deliver(self, notice: dict[str, Any], deadline: Deadline | None = None) -> bool:
        """True once the front-end answered 2xx.

        An attempt starts only while ``deadline`` leaves time for it and for recording it.
        """
        body = json.dumps(notice, separators=(",", ":")).encode()
        last = self.refusal or "no attempt"
        for attempt in range(0 if self.refusal else self.attempts):
            backoff = min(1.0, self.timeout) * attempt / 2
            if deadline is not None and not deadline.allows(backoff + self.timeout + RECORD_SECONDS):
                last = f"{last}; out of time for another attempt"
                break
            if attempt:
                self._sleep(backoff)
            try:
                status = self._post(self.url, body, self.headers(body), self.timeout)
            except (OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue  # refused, timed out, unreachable: try again, then leave it queued
            if 200 <= status < 300:
                return True
            last = f"HTTP {status}"
            if status not in RETRIED_STATUSES and status < 500:
                break  # the front-end refused this notice: asking again at once changes nothing
        count_notification_failure()
        logger.warning(
            "notification not delivered; it stays queued",
            extra={"sequence": notice.get("sequence"), "change": notice.get("change"), "last": last},
        )
        return False
