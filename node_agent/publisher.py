"""CloudWatch ``PutMetricData`` with retries inside the interval, and a bounded backlog.

A failed call is retried with backoff until the interval's deadline; if it still fails, its
datums stay in the backlog and go with the next interval's (their own timestamps kept). At most
``max_intervals`` intervals are kept; older ones are dropped and logged.

PutMetricData is not idempotent: a call that timed out after CloudWatch took it is resent, and
that interval is then counted twice. Only an ambiguous failure (a read timeout, a cut
connection) can do that; a refused connection or an error answer cannot.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

LOG = logging.getLogger(__name__)

# CloudWatch takes up to 1,000 datums per call; a full backlog (30 intervals of 9) is 270, so
# everything pending always goes in one call, and that call succeeds or fails as a whole.
MAX_DATUMS_PER_CALL = 1_000
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 4.0
# Answers that another try may change; any other 4xx would fail the same way forever.
RETRYABLE_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable", "InternalFailure"}
)

Datum = dict[str, Any]


class Publisher:
    """Sends each interval's datums as soon as they are made, keeping the unsent ones."""

    def __init__(
        self,
        client: Callable[[], Any],
        namespace: str,
        *,
        now: Callable[[], datetime],
        sleep: Callable[[float], None],
        max_intervals: int = 30,
    ) -> None:
        if max_intervals * 9 > MAX_DATUMS_PER_CALL:
            raise ValueError(f"a backlog of {max_intervals} intervals may not fit one call")
        self._client = client
        self.namespace = namespace
        self._now = now
        self._sleep = sleep
        self.max_intervals = max_intervals
        self.backlog: deque[list[Datum]] = deque()
        self.dropped_intervals = 0

    def send(self, datums: list[Datum], deadline: datetime) -> bool:
        """Send ``datums`` with whatever is kept from before; True when nothing is left unsent."""
        if datums:
            self.backlog.append(datums)
        while len(self.backlog) > self.max_intervals:
            lost = self.backlog.popleft()
            self.dropped_intervals += 1
            LOG.warning("backlog full: dropped %d unsent datums stamped %s", len(lost), _stamp(lost))
        if not self.backlog:
            return True
        pending = [datum for batch in self.backlog for datum in batch]
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            outcome = self._put(pending)
            if outcome == "sent":
                self.backlog.clear()
                return True
            if outcome == "rejected":
                LOG.error("CloudWatch refused %d datums for good; dropped", len(pending))
                self.dropped_intervals += len(self.backlog)
                self.backlog.clear()
                return True
            if self._now() + timedelta(seconds=backoff) >= deadline:
                LOG.warning(
                    "%d datums kept for the next interval (%d intervals)", len(pending), len(self.backlog)
                )
                return False
            self._sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _put(self, datums: list[Datum]) -> str:
        try:
            self._client().put_metric_data(Namespace=self.namespace, MetricData=datums)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            LOG.warning("PutMetricData failed: %s", error.get("Code"))
            if error.get("Code") in RETRYABLE_CODES or status >= 500 or status == 0:
                return "failed"
            return "rejected"
        except BotoCoreError as exc:
            LOG.warning("PutMetricData failed: %s", exc)
            return "failed"
        return "sent"


def _stamp(datums: list[Datum]) -> str:
    return str(datums[0]["Timestamp"]) if datums else "-"
