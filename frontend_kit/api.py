"""The two calls a front-end makes to the scaler's API, over ``urllib`` (no other dependency).

``fetch_pool`` is the kit's ``fetch_pool`` (``GET /api/scaler/cache_list``), ``confirm_drain`` its
``confirm_drain`` (``POST /api/poolsize/change``). Both send ``Authorization: Bearer <token>`` and
raise ``OSError`` when the API cannot be reached or answers what they cannot use, which the
kit's worker logs and tries again.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from frontend_kit.ring import CacheNode

log = logging.getLogger(__name__)

# The scaler has nothing left to do for that node: it is gone (404) or no longer draining (409,
# e.g. taken back into service by a scale-out). A repeated confirmation answers 2xx.
SETTLED = (404, 409)


class ScalerApi:
    """The scaler's API under ``api_url``, its base (``https://<api-id>.execute-api.<region>.amazonaws.com/prod``)."""

    def __init__(self, api_url: str, token: str | None, timeout: float = 3.0) -> None:
        self.api_url, self.token, self.timeout = api_url.rstrip("/"), token, timeout

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.api_url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            answer = response.read()
        try:
            return json.loads(answer) if answer else None
        except ValueError as exc:
            raise OSError(f"{method} {path}: the answer is not JSON") from exc

    def fetch_pool(self) -> dict[str, Any]:
        """``GET /api/scaler/cache_list``: the nodes, their states, the last notice's ``sequence``."""
        answer = self._request("GET", "/api/scaler/cache_list")
        if not isinstance(answer, dict):
            raise OSError("GET /api/scaler/cache_list: the answer is not an object")
        return answer

    def confirm_drain(self, node: CacheNode) -> None:
        """``POST /api/poolsize/change {"cache_ip": ip}``: the node's keys are moved, it may go.

        Settled on a 2xx, and on a 404 or a 409 (nothing left to confirm); anything else, a 503
        while the scaler has not recorded the ``decrease`` as delivered among them, raises
        ``OSError`` so that the kit tries again.
        """
        if not node.ip:
            raise OSError(f"node {node.id} has no IP to confirm")
        try:
            self._request("POST", "/api/poolsize/change", {"cache_ip": node.ip})
        except urllib.error.HTTPError as error:
            if error.code not in SETTLED:
                raise
            log.info("drain of %s (%s) already settled: HTTP %d", node.id, node.ip, error.code)
