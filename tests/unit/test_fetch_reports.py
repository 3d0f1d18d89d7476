"""storage.fetch_reports: what the writer writes, the readers read back, on any root."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from storage.fetch_reports import (
    OUTCOMES,
    read_fetch_report,
    read_fetch_summary,
    report_path,
    report_row,
    reports_of_catalog,
    write_fetch_report,
)


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_a_report_and_its_summary_round_trip(tmp_path: Path, kind: str) -> None:
    store = str(tmp_path) if kind == "local" else f"memory://reports-{uuid.uuid4().hex[:8]}"
    rows = [report_row(1, "http://a/1.jpg", "ok", 200, 1, 1234, "ab" * 32),
            {**report_row(2, "http://a/2.jpg", "http_5xx", 503, 4), "elapsed": 1.5,
             "detail": "HTTP 503"}]
    report = report_path(store, "run-1")
    summary = {"run_id": "run-1", "catalog_dir": "/c/x", "report": report}
    assert write_fetch_report(report, rows, summary).endswith("fetch-reports/run-1.json")
    back = read_fetch_report(report)
    assert back["imdb_id"].tolist() == [1, 2]
    assert back["outcome"].tolist() == ["ok", "http_5xx"]
    assert back["status"].tolist() == [200, 503] and back["attempts"].tolist() == [1, 4]
    assert back["bytes"].iloc[0] == 1234 and pd.isna(back["bytes"].iloc[1])
    assert back["sha256"].iloc[0] == "ab" * 32 and pd.isna(back["sha256"].iloc[1])
    assert pd.isna(back["detail"].iloc[0]) and back["detail"].iloc[1] == "HTTP 503"
    assert back["elapsed"].tolist() == [0.0, 1.5]
    assert read_fetch_summary(report) == summary
    assert reports_of_catalog(store, "/c/x/") == [report]
    if kind == "memory":
        fsspec.filesystem("memory").rm(store.removeprefix("memory://"), recursive=True)


def test_an_unknown_outcome_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    report = report_path(str(tmp_path), "run-2")
    with pytest.raises(ValueError, match="unknown outcomes"):
        write_fetch_report(report, [report_row(1, "u", "lost", None, 1)], {})
    assert not (tmp_path / "fetch-reports").exists()
    assert "ok" in OUTCOMES and "cached" in OUTCOMES
