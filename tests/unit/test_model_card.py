"""tasks.model_card (the card's tables, HTML and poster ranking) and storage.cards."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from storage.cards import card_path, read_card_facts, write_card
from storage.fetch_reports import report_path, report_row, reports_of_catalog, write_fetch_report
from tasks.model_card import (
    CardData,
    PosterExample,
    card_markdown,
    collect_lineage,
    headline_rows,
    rank_posters,
    render_card_html,
)

METRICS = {
    "labels": ["Drama", "Horror"], "thresholds": {"Drama": 0.3, "Horror": 0.55},
    "val": {"macro_f1": 0.5, "macro_f1_tuned": 0.6, "records": 10},
    "test": {"macro_f1": 0.4, "macro_f1_tuned": 0.45, "records": 12,
             "macro_f1_ci95": [0.3, 0.5], "per_label_tuned": {
        "Drama": {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 3, "predicted": 6,
                  "f1_ci95": [0.4, 0.9]},
        "Horror": {"precision": 0.25, "recall": 0.5, "f1": 0.3333, "support": 2,
                   "predicted": 4}}},
}
CHAMPION = {"macro_f1": 0.42, "records": 12,
            "per_label_tuned": {"Drama": {"f1": 0.7}, "Horror": {"f1": 0.2}}}


def image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 36), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def card(**changes: object) -> CardData:
    poster = PosterExample(image("JPEG"), ["Drama"], ["Drama", "Horror"], 0.6667)
    fields: dict = dict(
        model="posterflow", version=3, alias="challenger",
        decision="test macro F1 0.4000 < champion v2 0.4200 + margin 0.0000", promoted=False,
        forced=False, metrics=METRICS,
        lineage={"dataset_version": "ds-abc", "catalog_hash": "c0ffee", "backbone_handle": "bb",
                 "fetch_reports": ["/p/fetch-reports/r1.parquet"],
                 "params": {"seed": 0, "head": {"hidden": 32}}},
        champion_version=2, champion_metrics=CHAMPION,
        figures={"Learning curves": image("PNG")}, best=[poster], worst=[poster],
        notes=["STAND-IN <backbone>"])
    fields.update(changes)
    return CardData(**fields)


def test_headline_puts_the_champion_on_the_same_split_beside_the_candidate() -> None:
    rows = headline_rows(card())
    assert rows[0] == ["metric", "val", "test", "champion v2 (test)", "delta (test)"]
    assert rows[1] == ["macro F1 @0.5", "0.5000", "0.4000", "0.4200", "-0.0200"]
    assert rows[5] == ["macro F1 @0.5, 95% CI", "-", "0.3000-0.5000", "-", "-"]
    alone = headline_rows(card(champion_version=None, champion_metrics=None))[1]
    assert alone[3:] == ["-", "-"]


def test_markdown_has_the_decision_checks_tables_lineage_and_card_path() -> None:
    md = card_markdown(card(failed_checks=["test macro F1 0.4000 < minimum 0.5"],
                            warnings=["the test split (12 posters) is too small"]),
                       "/r/posterflow/cards/3.html")
    assert md.startswith("# posterflow v3 (challenger)")
    assert "> STAND-IN <backbone>" in md
    assert "**Decision:** posterflow v3 is challenger: test macro F1 0.4000 <" in md
    assert "- FAILED: test macro F1 0.4000 < minimum 0.5" in md
    assert "- warning: the test split (12 posters) is too small" in md
    assert ("| Drama | 0.30 | 0.5000 | 1.0000 | 0.6667 | 0.4000-0.9000 | 3 | 6 | 0.7000 "
            "| -0.0333 |") in md
    assert "| catalog hash | c0ffee |" in md and "`/r/posterflow/cards/3.html`" in md
    assert "](" not in md  # no link: the UI's http page would block a file:// one
    assert "- all guardrails passed" in card_markdown(card())


def test_markdown_inlines_the_figures_only_when_asked() -> None:
    with_figures = card_markdown(card(), figures=True)
    [uri] = re.findall(r"!\[Learning curves\]\((data:image/png;base64,[^)]+)\)", with_figures)
    assert base64.b64decode(uri.split(",", 1)[1]) == image("PNG")
    assert "data:image" not in card_markdown(card())


def test_html_is_self_contained_and_escaped() -> None:
    page = render_card_html(card(forced=True, promoted=True, alias="champion"))
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
                           for s in sources)
    assert "default-src 'none'" in page  # the CSP forbids any request
    assert "STAND-IN &lt;backbone&gt;" in page and "<backbone>" not in page
    assert "Worst-predicted test posters" in page and "(forced)" in page
    assert "head.hidden" in page and "ds-abc" in page
    failed = render_card_html(card(failed_checks=["3 of 14 genres predicted for every poster"]))
    assert "<li>FAILED: 3 of 14 genres predicted for every poster</li>" in failed


def test_rank_posters_orders_by_poster_f1_then_probability_error() -> None:
    truth = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    prob = np.array([[0.9, 0.1], [0.6, 0.1], [0.9, 0.2], [0.8, 0.1]])
    best, worst, f1 = rank_posters(truth, prob, np.array([0.5, 0.5]), count=2)
    assert best == [0, 1]  # both exact; 0 is more confident
    assert worst == [2, 3]  # 2 gets nothing right
    assert f1.tolist() == [1.0, 1.0, 0.0, 2 / 3]


def test_card_is_stored_beside_the_version_with_its_facts(tmp_path: Path) -> None:
    facts = {"dataset_version": "ds-abc", "catalog_hash": "c0ffee"}
    for root in (str(tmp_path / "reg"), "memory://cards-test/reg"):
        path = write_card(root, "posterflow", 3, "<html></html>", facts)
        assert path == card_path(root, "posterflow", 3) == f"{root}/posterflow/cards/3.html"
        assert read_card_facts(root, "posterflow", 3) == facts
        assert read_card_facts(root, "posterflow", 4) == {}
    assert (tmp_path / "reg/posterflow/cards/3.html").read_text() == "<html></html>"


def test_the_cards_fetch_reports_are_those_of_its_catalog(tmp_path: Path) -> None:
    store = str(tmp_path / "posters")
    written = {}
    for run, catalog in (("a", "/c/one"), ("b", "/c/two"), ("c", "/c/one/")):
        written[run] = report_path(store, run)
        write_fetch_report(written[run], [report_row(1, "http://x/1.jpg", "ok", 200, 1)],
                           {"catalog_dir": catalog, "report": written[run]})
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "dataset.json").write_text(json.dumps({"catalog_hash": "one"}))
    lineage = collect_lineage({}, str(tmp_path / "v1"), "/c", store)
    assert lineage["fetch_reports"] == [written["a"], written["c"]]
    assert reports_of_catalog(str(tmp_path / "nowhere"), "/c/one") == []
