"""Progress a log reader sees: percent done and rate, at most every 10 s and at the end.

A Prefect run's log view (or a worker's log file) has no progress bar, so a long stage
(embedding, fitting) says how far it is on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

EVERY_S = 10.0


class ProgressLog:
    """Logs "<what>: P% (done of total <unit>), R <unit>/s" when called with a new count."""

    def __init__(self, log: logging.Logger, what: str, total: int, unit: str, *,
                 every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.what, self.total, self.unit = log, what, total, unit
        self.every_s, self.clock = every_s, clock
        self.start = self.last = clock()

    def __call__(self, done: int) -> None:
        now = self.clock()
        if done < self.total and now - self.last < self.every_s:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        self.log.info("%s: %d%% (%d of %d %s), %.1f %s/s", self.what,
                      100 * done // max(self.total, 1), done, self.total, self.unit, rate,
                      self.unit)
