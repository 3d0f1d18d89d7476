"""tasks.model_card (the card's tables, HTML and poster ranking) and storage.cards."""

from __future__ import annotations

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
    "test": {"macro_f1": 0.4, "macro_f1_tuned": 0.45, "records": 12, "per_label_tuned": {
        "Drama": {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 3},
        "Horror": {"precision": 0.25, "recall": 0.5, "f1": 0.3333, "support": 2}}},
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
    assert rows[0] == ["metric", "val", "test", "champion v2 (test)"]
    assert rows[1] == ["macro F1 @0.5", "0.5000", "0.4000", "0.4200"]
    assert headline_rows(card(champion_version=None, champion_metrics=None))[1][3] == "-"


def test_markdown_has_the_decision_tables_lineage_and_link() -> None:
    md = card_markdown(card(), "file:///r/posterflow/cards/3.html")
    assert md.startswith("# posterflow v3 (challenger)")
    assert "> STAND-IN <backbone>" in md
    assert "**Decision:** posterflow v3 is challenger: test macro F1 0.4000 <" in md
    assert "| Drama | 0.30 | 0.5000 | 1.0000 | 0.6667 | 3 | 0.7000 |" in md
    assert "| catalog hash | c0ffee |" in md and "(file:///r/posterflow/cards/3.html)" in md


def test_html_is_self_contained_and_escaped() -> None:
    page = render_card_html(card(forced=True, promoted=True, alias="champion"))
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
                           for s in sources)
    assert "default-src 'none'" in page  # the CSP forbids any request
    assert "STAND-IN &lt;backbone&gt;" in page and "<backbone>" not in page
    assert "Worst-predicted test posters" in page and "(forced)" in page
    assert "head.hidden" in page and "ds-abc" in page


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
