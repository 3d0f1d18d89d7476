"""What the flow tasks render and decide without Prefect: the validation table, the run
report, and when a cached fetch chunk is redone."""

from __future__ import annotations

import base64

from flows.artifacts import ReportLinks, report_markdown, retrain_markdown, validation_rows
from flows.ingest_tasks import _fetch_stale
from tasks.fetch import FetchResult
from tasks.model_card import CardData
from tasks.promotion import GateDecision

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGA"
                       "hKmMIQAAAABJRU5ErkJggg==")  # a 1x1 PNG


def _fetch_result(tmp_path, outcomes) -> FetchResult:
    report = tmp_path / "report.parquet"
    report.write_bytes(b"x")
    return FetchResult(run_id="r", report_path=str(report),
                       summary_path=str(tmp_path / "report.json"),
                       summary={"outcomes": outcomes})


def test_fetch_chunk_with_transient_failures_is_redone(tmp_path):
    assert _fetch_stale(_fetch_result(tmp_path, {"ok": 5, "http_4xx": 1})) is None
    assert "transiently" in _fetch_stale(_fetch_result(tmp_path, {"ok": 5, "timeout": 2}))
    gone = _fetch_result(tmp_path, {"ok": 5})
    (tmp_path / "report.parquet").unlink()
    assert "outputs missing" in _fetch_stale(gone)


def test_validation_rows_list_checks_reasons_and_accepted():
    summary = {
        "expectations": [{"expectation": "expect_column_values_to_not_be_null",
                          "column": "poster_url", "success": False, "unexpected_count": 2,
                          "reject_reason": "missing_poster"}],
        "by_reason": {"missing_poster": 2, "dropped_genre": 1},
        "accepted": 97, "passed": True,
    }
    rows = validation_rows(summary)
    assert rows[0] == {"check": "expect_column_values_to_not_be_null", "column": "poster_url",
                       "success": False, "rows": 2, "reject reason": "missing_poster"}
    assert {r["reject reason"]: r["rows"] for r in rows[1:3]} == {"missing_poster": 2,
                                                                  "dropped_genre": 1}
    assert rows[-1]["rows"] == 97


def test_report_markdown_is_the_card_tables_then_links() -> None:
    metrics = {"val": {"macro_f1": 0.5, "macro_f1_tuned": 0.6, "micro_f1": 0.55},
               "test": {"macro_f1": 0.4, "per_label_tuned": {
                   "Drama": {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 3}}}}
    card = CardData("posterflow", 3, "challenger", "test macro F1 0.4 < 0.5", False, False,
                    metrics, {"dataset_version": "ds-1"}, figures={"Learning curves": PNG},
                    notes=["STAND-IN BACKBONE"])
    links = ReportLinks(model_dir="/runs/a/model", report_dir="/runs/a/report",
                        data_docs="/c/data_docs/index.html")
    md = report_markdown(card, "/r/posterflow/cards/3.html", "/r/posterflow/3", links)
    assert md.startswith("# posterflow v3 (challenger)")
    assert "> STAND-IN BACKBONE" in md
    assert "| macro F1 @0.5 | 0.5000 | 0.4000 | - | - |" in md
    assert "| Drama | - | 0.5000 | 1.0000 | 0.6667 | - | 3 | - | - | - |" in md
    assert "**Decision:** posterflow v3 is challenger: test macro F1 0.4 < 0.5" in md
    assert f"![Learning curves](data:image/png;base64,{base64.b64encode(PNG).decode()})" in md
    assert "file://" not in md and "`/r/posterflow/cards/3.html`" in md
    assert "`/c/data_docs/index.html`" in md and "`/r/posterflow/3`" in md
    assert "`/runs/a/model`" in md and "`/runs/a/report`" in md


def test_retrain_headline_names_the_version_decision_and_scores() -> None:
    metrics = {"val": {"macro_f1": 0.5, "macro_f1_tuned": 0.6},
               "test": {"macro_f1": 0.4, "macro_f1_tuned": 0.45}}
    held = GateDecision(False, "failed guardrails: test macro F1 0.4000 < minimum 0.5", 0.4,
                        failed_checks=("test macro F1 0.4000 < minimum 0.5",))
    md = retrain_markdown("posterflow", 2, "challenger", held, metrics, "/r/cards/2.html", False)
    assert md.startswith("# posterflow v2: challenger\n")
    assert "**Decision:** failed guardrails: test macro F1 0.4000 < minimum 0.5" in md
    assert "- FAILED: test macro F1 0.4000 < minimum 0.5" in md
    assert "| macro F1 @0.5 | 0.5000 | 0.4000 |" in md and "`/r/cards/2.html`" in md
    same = retrain_markdown("posterflow", 2, "champion", held, metrics, "/r/cards/2.html", True)
    assert same.startswith("# nothing new registered: posterflow v2 (champion) already holds")
