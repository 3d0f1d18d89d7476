"""The fetcher's HTTP retry policy: which failures are transient, how long to wait.

Connection errors, timeouts, truncated bodies, 408, 429 and 5xx are retried with full-jitter
exponential backoff, honouring `Retry-After`; everything else is final. An error writing the
store is never classified here (`tasks.fetch.StoreWriteError` stops the run instead).
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from tasks.rejections import Rejected
from tasks.url_guard import BlockedAddress

RETRY_STATUSES = frozenset({408, 429})


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries a poster gets and how long to wait between them."""

    attempts: int
    backoff_s: float
    backoff_max_s: float
    retry_after_max_s: float

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before the next try: Retry-After (capped) or full-jitter exponential."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s)
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))

    def retries(self, failure: Rejected, attempt: int) -> bool:
        """True when a failed attempt is worth another try."""
        return failure.transient and attempt < self.attempts


def classify(exc: Exception) -> Rejected:
    """Map an aiohttp/asyncio failure to an outcome; unknown exceptions propagate."""
    if isinstance(exc, Rejected):
        return exc
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return Rejected("timeout", f"socket timed out: {exc}", transient=True)
    if isinstance(exc, TimeoutError):
        return Rejected("timeout", "attempt exceeded total_timeout_s", transient=True)
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, BlockedAddress):
        return Rejected("blocked_address", str(exc.os_error))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Rejected("truncated", f"body ended early: {exc}", transient=True)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | ValueError):
        return Rejected("bad_scheme", f"invalid URL: {exc}")  # ValueError: yarl, IDNA
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Rejected("connection_error", f"{type(exc).__name__}: {exc}", transient=True)
    raise exc


def http_failure(status: int, target: object, retry_after: str | None) -> Rejected:
    """The outcome of an HTTP error status: 5xx, 408 and 429 transient, other 4xx final."""
    return Rejected("http_5xx" if status >= 500 else "http_4xx", f"HTTP {status} from {target}",
                    status=status, transient=status >= 500 or status in RETRY_STATUSES,
                    retry_after=retry_after_seconds(retry_after))
