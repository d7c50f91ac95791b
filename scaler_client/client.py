"""``ScalerClient``: the scaler's HTTP API for a manager-app or a front-end, typed.

Retries: a call is repeated on 429, 502, 503 and 504 and when no answer came (connection
refused or reset, a read timeout), up to ``retries`` times, waiting what the answer's
``Retry-After`` asks (at most ``max_retry_after`` seconds), else an exponential backoff. Only
where a repeat is safe:

- every GET;
- the writes, because each says what the result must be rather than what to do to the current
  state, and the scaler checks versions: a config POST merges absolute values, a cache_list POST
  sets the whole list, ``resize`` names its target size, and a repeated drain confirmation
  answers the same id. A repeat after an answer that was lost (a 504 while the function ran on)
  does nothing more than the first did; a concurrent repeat loses its version check and re-reads;
- not ``set_test_miss_rate``: it grows or shrinks the pool from its current size, so a repeat
  after a 502/503/504 (which may come after the change was made) could resize twice. It is
  repeated only after a 429, which API Gateway answers before the function runs, and after a
  connection that never opened.

Errors are typed (``scaler_client.errors``) whether the app answered (Chalice's
``{"Code","Message"}``) or API Gateway did (``{"message"}``). Depends on urllib3 only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import HTTPError, InvalidHeader, MaxRetryError
from urllib3.util.retry import Retry

from scaler_client.errors import UnexpectedAnswerError, UnreachableError, api_error
from scaler_client.models import CacheList, Config, Decision, Health, HistoryRecord

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
# Answered before the request reaches the function: safe to repeat whatever the call.
NOT_PROCESSED_STATUSES = frozenset({429})
Sleep = Callable[[float], None]


class _Retry(Retry):
    """urllib3's ``Retry`` that waits through an injectable ``sleep`` (tests pass one that
    records instead of sleeping), never longer than ``max_wait``, and retries only the statuses
    it is given: urllib3 would also repeat any 413/429/503 that carries ``Retry-After``, whether
    the call may be repeated or not."""

    RETRY_AFTER_STATUS_CODES = frozenset()

    def __init__(self, *args: Any, sleep: Sleep = time.sleep, max_wait: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sleep = sleep
        self._max_wait = max_wait

    def new(self, **kwargs: Any) -> _Retry:
        retry = super().new(**kwargs)
        retry._sleep, retry._max_wait = self._sleep, self._max_wait
        return retry

    def sleep(self, response: Any = None) -> None:
        delay: float | None = None
        if self.respect_retry_after_header and response is not None:
            try:
                delay = self.get_retry_after(response)
            except InvalidHeader:  # neither seconds nor a date: back off as without one
                delay = None
        self._sleep(min(delay if delay else self.get_backoff_time(), self._max_wait))


class ScalerClient:
    """The API at ``base_url`` (the stage's URL, e.g. ``https://<id>.execute-api.<region>.amazonaws.com/api``)
    with the bearer ``token``. Thread-safe; ``close()`` (or ``with``) releases its connections."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff_factor: float = 0.5,
        max_retry_after: float = 30.0,
        sleep: Sleep = time.sleep,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_factor = backoff_factor
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        # Longer than API Gateway's 29 s: a slow call ends in its 504, not in a second call
        # started while the first still runs.
        self._pool = pool or urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout)
        )

    def __enter__(self) -> ScalerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.clear()

    # -- the calls --------------------------------------------------------------------------

    def health(self) -> Health:
        return Health.from_json(self._call("GET", "/api/scaler"))

    def config(self) -> Config:
        return Config.from_json(self._call("GET", "/api/scaler/config"))

    def set_config(self, **fields: Any) -> Config:
        """Change config fields (SPEC's names, or the aliases); the whole config after it.

        The scaler checks every field and the rules on the result: :class:`BadRequestError`
        lists every problem, and nothing was changed.
        """
        return Config.from_json(self._call("POST", "/api/scaler/config", body=fields))

    def cache_list(self) -> CacheList:
        return CacheList.from_json(self._call("GET", "/api/scaler/cache_list"))

    def set_cache_list(self, cache_pool_ids: Sequence[str]) -> CacheList:
        """Make these instances the pool, in this order (adopted or released, never terminated)."""
        body = {"cache_pool_ids": list(cache_pool_ids)}
        return CacheList.from_json(self._call("POST", "/api/scaler/cache_list", body=body))

    def history(self, minutes: int = 60) -> list[HistoryRecord]:
        """The records of the ``minutes`` up to the pool's clock, oldest first."""
        data = self._call("GET", "/api/scaler/history", query={"minutes": minutes})
        records = data.get("records") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise UnexpectedAnswerError(f"the history answer has no list of records: {data!r}"[:300])
        return [HistoryRecord.from_json(record) for record in records]

    def resize(self, target_size: int) -> Decision:
        """Resize by hand (auto_mode off, else :class:`ConflictError`); the decision."""
        return Decision.from_json(self._call("POST", "/api/scaler/resize", body={"target_size": target_size}))

    def confirm_drain(self, cache_ip: str) -> str:
        """The front-end moved its keys off the draining node at ``cache_ip``: it may go.
        Answers the id of the node terminated (:class:`NotFoundError`: no such node;
        :class:`ConflictError`: not draining, e.g. taken back)."""
        data = self._call("POST", "/api/poolsize/change", body={"cache_ip": cache_ip})
        terminated = data.get("terminated") if isinstance(data, dict) else None
        if not isinstance(terminated, str):
            raise UnexpectedAnswerError(f"the answer names no terminated node: {data!r}"[:300])
        return terminated

    def set_test_miss_rate(self, test_miss_rate: float) -> Decision:
        """The test endpoint: the ratio rule applied now with that miss rate (see the module's
        note: retried only where it cannot have run)."""
        body = {"test_miss_rate": test_miss_rate}
        return Decision.from_json(self._call("POST", "/api/scaler/set_test_miss_rate", body=body, safe=False))

    # -- HTTP -------------------------------------------------------------------------------

    def _retry(self, safe: bool) -> _Retry:
        return _Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries if safe else 0,
            status=self.retries,
            redirect=False,
            allowed_methods=None,  # every method: which calls repeat is decided here, per call
            status_forcelist=RETRIED_STATUSES if safe else NOT_PROCESSED_STATUSES,
            backoff_factor=self.backoff_factor,
            raise_on_status=False,  # the last answer is raised as its typed error below
            sleep=self._sleep,
            max_wait=self.max_retry_after,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        safe: bool = True,
    ) -> Any:
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            response = self._pool.request(
                method, url, body=data, headers=headers, retries=self._retry(safe), redirect=False
            )
        except MaxRetryError as exc:
            raise UnreachableError(f"{method} {url}: no answer ({exc.reason})") from exc
        except HTTPError as exc:
            raise UnreachableError(f"{method} {url}: no answer ({exc})") from exc
        if response.status >= 400:
            retry_after = response.headers.get("Retry-After", "").strip()
            seconds = float(retry_after) if retry_after.isdigit() else None
            raise api_error(response.status, response.data, response.headers, response.reason or "", seconds)
        if not 200 <= response.status < 300:
            raise UnexpectedAnswerError(f"{method} {url}: HTTP {response.status}")
        try:
            return json.loads(response.data)
        except ValueError:
            text = response.data[:100].decode("utf-8", "replace")
            raise UnexpectedAnswerError(f"{method} {url}: the answer is not JSON: {text!r}") from None
