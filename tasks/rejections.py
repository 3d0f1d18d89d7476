"""`Rejected`: one attempt at one poster failed, with the report's outcome for it.

Raised by the URL guard, the HTTP policy and the poster checks; the fetcher records the
outcome (`storage.fetch_reports.OUTCOMES`) and retries only the transient ones.
"""

from __future__ import annotations


class Rejected(Exception):
    """A poster attempt that failed with one of OUTCOMES."""

    def __init__(
        self,
        outcome: str,
        detail: str,
        *,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome = outcome
        self.detail = detail
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
