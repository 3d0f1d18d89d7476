"""tasks.progress_log: percent and rate for a log reader, at most every 10 s and at the end."""

from __future__ import annotations

import logging

import pytest

from tasks.progress_log import ProgressLog


def test_logs_percent_and_rate_every_10_s_and_at_the_end(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    now = [0.0]
    report = ProgressLog(logging.getLogger("t"), "embedding", 400, "poster-views",
                         clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for done, at in ((50, 4.0), (100, 10.0), (150, 15.0), (300, 20.5), (400, 21.0)):
            now[0] = at
            report(done)
    assert [r.getMessage() for r in caplog.records] == [
        "embedding: 25% (100 of 400 poster-views), 10.0 poster-views/s",
        "embedding: 75% (300 of 400 poster-views), 14.6 poster-views/s",
        "embedding: 100% (400 of 400 poster-views), 19.0 poster-views/s",
    ]
