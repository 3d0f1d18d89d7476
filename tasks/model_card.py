"""The model card: one self-contained HTML page per registered version, for a reviewer.

It shows the headline metrics beside the champion's on the same test split, per-genre
precision/recall/F1 with the chosen thresholds, the report's figures (learning curves,
probability histograms: matplotlib PNGs from `tasks.evaluate`), test posters with their true
and predicted genres (the best- and the worst-predicted), the gate's decision and the lineage.
Every image is embedded as a base64 data URI and a Content-Security-Policy forbids any
request, so the file opens offline and leaks nothing. `render_card_html` and `card_markdown`
are pure; `rank_posters`, `collect_posters` and `collect_lineage` gather their inputs.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from storage.fetch_reports import reports_of_catalog

if TYPE_CHECKING:
    from storage.registry import VersionInfo
    from tasks.promotion import Registration
from storage.fs import exists, join, read_json, url_to_fs

CARD_POSTERS = 8  # best and worst each
FIGURES = {"learning_curves.png": "Learning curves",
           "per_label_f1.png": "Per-genre F1 (val and test)",
           "probability_histograms.png": "Test probability histograms (dotted: threshold)"}
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.decision{padding:.6rem 1rem;border-left:.4rem solid #888;background:#f7f7f7}
.promoted{border-color:#2a7}.refused{border-color:#c52}figure{margin:0 0 1.5rem}
figure img{max-width:100%}.posters{display:flex;flex-wrap:wrap;gap:1rem}
.poster{width:160px;font-size:.8rem}.poster img{width:160px;height:auto;display:block}
.note{background:#fff4d6;padding:.4rem .8rem}
"""


@dataclass(frozen=True)
class PosterExample:
    """A test poster (encoded bytes as stored), its true and predicted genres, its F1."""

    image: bytes
    true: list[str]
    predicted: list[str]
    f1: float


@dataclass(frozen=True)
class CardData:
    """Everything the card shows; `champion_metrics` are scored on the candidate's test split."""

    model: str
    version: int
    alias: str
    decision: str
    promoted: bool
    forced: bool
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    champion_version: int | None = None
    champion_metrics: dict[str, Any] | None = None
    figures: dict[str, bytes] = field(default_factory=dict)  # caption -> PNG
    best: list[PosterExample] = field(default_factory=list)
    worst: list[PosterExample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: str = ""  # e.g. "awaiting approval"
    failed_checks: list[str] = field(default_factory=list)  # the guardrails it failed
    warnings: list[str] = field(default_factory=list)


def assemble_card(info: VersionInfo, registration: Registration, report_dir: str,
                  dataset_dir: str, catalogs_root: str, posters_root: str, *,
                  champion: tuple[int, dict[str, Any]] | None,
                  posters: tuple[list[PosterExample], list[PosterExample]],
                  notes: list[str], status: str = "") -> CardData:
    """What a registered version's card shows: the gate's decision, metrics, lineage,
    figures, the champion's scores on the same split (version, metrics) and posters."""
    lineage = collect_lineage(info.lineage, dataset_dir, catalogs_root, posters_root,
                              info.metadata.get("flow_run_id"))
    decision = registration.decision
    return CardData(
        registration.model, registration.version, registration.alias, decision.reason,
        decision.promoted, decision.forced, info.metadata["metrics"], lineage,
        champion[0] if champion else None, champion[1] if champion else None,
        read_figures(report_dir), posters[0], posters[1], list(notes), status,
        list(decision.failed_checks), list(decision.warnings))


# --- tables (shared by the HTML card, the markdown artifact and the approval form) --------


def headline_rows(data: CardData) -> list[list[str]]:
    """Header + rows: each headline metric on val and test, the champion's on test and the
    difference (candidate - champion), then the 95% bootstrap interval of macro F1 @0.5."""
    champ = f"champion v{data.champion_version} (test)" if data.champion_version else "champion"
    rows = [["metric", "val", "test", champ, "delta (test)"]]
    val, test = data.metrics.get("val", {}), data.metrics.get("test", {})
    other = data.champion_metrics or {}
    for key, name in (("macro_f1", "macro F1 @0.5"), ("macro_f1_tuned", "macro F1 tuned"),
                      ("micro_f1", "micro F1 @0.5"), ("micro_f1_tuned", "micro F1 tuned")):
        rows.append([name, format_score(val.get(key)), format_score(test.get(key)),
                     format_score(other.get(key)), _delta(test.get(key), other.get(key))])
    rows.append(["macro F1 @0.5, 95% CI", _interval(val.get("macro_f1_ci95")),
                 _interval(test.get("macro_f1_ci95")), _interval(other.get("macro_f1_ci95")),
                 "-"])
    rows.append(["records", str(val.get("records", "-")), str(test.get("records", "-")),
                 str(other.get("records", "-")), "-"])
    return rows


def genre_rows(data: CardData) -> list[list[str]]:
    """Header + one row per genre: threshold, test precision/recall/F1 (tuned) with F1's 95%
    bootstrap interval, support, how many posters it was predicted for, the champion's F1
    and the difference."""
    rows = [["genre", "threshold", "precision", "recall", "F1", "F1 95% CI", "support",
             "predicted", "champion F1", "delta F1"]]
    test = data.metrics.get("test", {})
    per_label = test.get("per_label_tuned") or test.get("per_label") or {}
    champion = (data.champion_metrics or {}).get("per_label_tuned") or {}
    thresholds = data.metrics.get("thresholds", {})
    for label, s in per_label.items():
        other = champion.get(label, {}).get("f1")
        rows.append([label, format_score(thresholds.get(label), 2),
                     format_score(s.get("precision")), format_score(s.get("recall")),
                     format_score(s.get("f1")), _interval(s.get("f1_ci95")),
                     str(s.get("support", "-")), str(s.get("predicted", "-")),
                     format_score(other), _delta(s.get("f1"), other)])
    return rows


def check_lines(data: CardData) -> list[str]:
    """The guardrails' verdict: each failed check, then each warning."""
    if not data.failed_checks and not data.warnings:
        return ["all guardrails passed"]
    return ([f"FAILED: {c}" for c in data.failed_checks]
            + [f"warning: {w}" for w in data.warnings])


LINEAGE_FIELDS = (("dataset_version", "dataset version"), ("dataset_dir", "dataset folder"),
                  ("catalog_hash", "catalog hash"), ("data_docs", "catalog Data Docs"),
                  ("fetch_reports", "fetch reports"), ("backbone_handle", "backbone"),
                  ("backbone_id", "backbone id"), ("code_revision", "code revision"),
                  ("flow_run_id", "flow run"), ("exported_at", "exported at"),
                  ("tensorflow_version", "TensorFlow"))


def lineage_rows(lineage: Mapping[str, Any]) -> list[list[str]]:
    """Header + one row per known lineage field that is set."""
    rows = [["lineage", "value"]]
    for key, name in LINEAGE_FIELDS:
        value = lineage.get(key)
        if value:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            rows.append([name, text])
    return rows


def params_rows(lineage: Mapping[str, Any]) -> list[list[str]]:
    """Header + the training parameters (head parameters flattened as head.*)."""
    params = dict(lineage.get("params") or {})
    head = params.pop("head", None) or {}
    flat = {**params, **{f"head.{k}": v for k, v in head.items()}}
    return [["parameter", "value"], *([k, str(v)] for k, v in sorted(flat.items()))]


def decision_line(data: CardData) -> str:
    """The gate's decision in one line."""
    state = data.status or data.alias
    forced = " (forced)" if data.forced else ""
    reason = "" if data.decision == state else f": {data.decision}"
    return f"{data.model} v{data.version} is {state}{forced}{reason}"


# --- renderers ----------------------------------------------------------------------------


def markdown_table(rows: list[list[str]]) -> str:
    """A markdown table from a header row and body rows."""
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def card_markdown(data: CardData, card_path: str | None = None, *,
                  figures: bool = False) -> str:
    """The card's tables as markdown (the run's artifact, the approval form); with `figures`
    the report's PNGs inline as data URIs (the Prefect UI renders them; a browser blocks
    `file://` links from an http page, so the card's path is printed, not linked)."""
    parts = [f"# {data.model} v{data.version} ({data.status or data.alias})", ""]
    parts += [f"> {note}" for note in data.notes] + ([""] if data.notes else [])
    parts += [f"**Decision:** {decision_line(data)}", "", "**Guardrails:**", ""]
    parts += [f"- {line}" for line in check_lines(data)] + [""]
    if card_path:
        parts += [f"**Model card** (HTML, every image inline): `{card_path}`", ""]
    parts += [markdown_table(headline_rows(data)), "", markdown_table(genre_rows(data)), ""]
    if figures:
        parts += [f"![{caption}]({_data_uri(png)})\n\n*{caption}*\n"
                  for caption, png in data.figures.items()]
    parts.append(markdown_table(lineage_rows(data.lineage)))
    return "\n".join(parts) + "\n"


def render_card_html(data: CardData) -> str:
    """The whole card as one HTML document with every image inline."""
    e = html.escape
    css = "promoted" if data.promoted else "refused"
    state = e(data.status or data.alias)
    body = [f"<h1>{e(data.model)} v{data.version} <small>({state})</small></h1>"]
    body += [f'<p class="note">{e(n)}</p>' for n in data.notes]
    body.append(f'<p class="decision {css}"><b>Decision:</b> {e(decision_line(data))}</p>')
    body += ["<h2>Guardrails</h2>", "<ul>", *(f"<li>{e(line)}</li>" for line in
                                                check_lines(data)), "</ul>"]
    body += ["<h2>Headline metrics</h2>", _html_table(headline_rows(data)),
             "<h2>Per genre (test, tuned thresholds)</h2>", _html_table(genre_rows(data))]
    for caption, png in data.figures.items():
        body.append(f'<figure><img alt="{e(caption)}" src="{_data_uri(png)}">'
                    f"<figcaption>{e(caption)}</figcaption></figure>")
    for title, examples in (("Best-predicted test posters", data.best),
                            ("Worst-predicted test posters", data.worst)):
        if examples:
            body += [f"<h2>{title}</h2>", '<div class="posters">',
                     *(_poster_html(p) for p in examples), "</div>"]
    body += ["<h2>Lineage</h2>", _html_table(lineage_rows(data.lineage)),
             "<h2>Parameters</h2>", _html_table(params_rows(data.lineage))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{e(data.model)} v{data.version} model card</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _html_table(rows: list[list[str]]) -> str:
    head, *body = rows
    e = html.escape
    out = ["<table><thead><tr>", *(f"<th>{e(c)}</th>" for c in head), "</tr></thead><tbody>"]
    for row in body:
        out += ["<tr>", *(f"<td>{e(c)}</td>" for c in row), "</tr>"]
    return "".join([*out, "</tbody></table>"])


def _poster_html(poster: PosterExample) -> str:
    e = html.escape
    return (f'<div class="poster"><img alt="test poster" src="{_data_uri(poster.image)}">'
            f"<div>true: {e(', '.join(poster.true) or '-')}</div>"
            f"<div>pred: {e(', '.join(poster.predicted) or '-')}</div>"
            f"<div>F1 {poster.f1:.2f}</div></div>")


def _data_uri(image: bytes) -> str:
    """A base64 data URI with the MIME type read from the image's magic bytes."""
    mime = ("image/png" if image.startswith(b"\x89PNG") else
            "image/webp" if image[8:12] == b"WEBP" else "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def format_score(value: Any, digits: int = 4) -> str:
    """A score with `digits` decimals, or "-" when it is missing."""
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def _delta(value: Any, baseline: Any) -> str:
    """value - baseline with its sign, or "-" when either is missing."""
    if not isinstance(value, int | float) or not isinstance(baseline, int | float):
        return "-"
    return f"{value - baseline:+.4f}"


def _interval(bounds: Any) -> str:
    return f"{bounds[0]:.4f}-{bounds[1]:.4f}" if bounds else "-"


# --- inputs -------------------------------------------------------------------------------


def poster_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-poster F1 of the predicted genre set against the true one (1 when both are empty)."""
    tp = (y_true & y_pred).sum(axis=1)
    denom = y_true.sum(axis=1) + y_pred.sum(axis=1)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def rank_posters(y_true: np.ndarray, y_prob: np.ndarray, cutoffs: np.ndarray, count: int
                 ) -> tuple[list[int], list[int], np.ndarray]:
    """(best indices, worst indices, per-poster F1): ties broken by mean |truth - probability|."""
    truth, pred = np.asarray(y_true) > 0.5, np.asarray(y_prob) > np.asarray(cutoffs)
    f1 = poster_f1(truth, pred)
    error = np.abs(truth - np.asarray(y_prob)).mean(axis=1)
    order = np.lexsort((error, -f1))  # best first
    count = min(count, len(order) // 2)
    return ([int(i) for i in order[:count]], [int(i) for i in order[::-1][:count]], f1)


def collect_posters(report_dir: str, dataset_dir: str, count: int = CARD_POSTERS
                    ) -> tuple[list[PosterExample], list[PosterExample]]:
    """The best- and worst-predicted test posters, by the evaluation's test probabilities.

    Those equal the exported model's, poster by poster, to 1e-3 (`tests/model/` checks
    it), so the card needs no second pass of the backbone over the test split.
    """
    from storage.shard_reader import read_records, split_labels, verify_once
    from tasks.evaluate import read_test_probabilities

    metrics = read_json(join(report_dir, "metrics.json"))
    labels, thresholds = metrics["labels"], metrics["thresholds"]
    prob = read_test_probabilities(report_dir)
    with verify_once():  # the test split is read twice: labels, then the chosen images
        _, truth = split_labels(dataset_dir, "test")
        cutoffs = np.array([thresholds[name] for name in labels])
        best, worst, f1 = rank_posters(truth, prob, cutoffs, count)
        wanted = set(best) | set(worst)
        images = {i: bytes(r["image"]) for i, r in
                  enumerate(read_records(dataset_dir, "test").as_numpy_iterator())
                  if i in wanted}

    def example(i: int) -> PosterExample:
        true = [n for n, t in zip(labels, truth[i], strict=True) if t > 0.5]
        predicted = [n for n, p, c in zip(labels, prob[i], cutoffs, strict=True) if p > c]
        return PosterExample(images[i], true, predicted, float(f1[i]))

    return [example(i) for i in best], [example(i) for i in worst]


def read_figures(report_dir: str) -> dict[str, bytes]:
    """The report's PNG figures that exist, by caption."""
    figures = {}
    for name, caption in FIGURES.items():
        path = join(report_dir, name)
        if exists(path):
            fs, inner = url_to_fs(path)
            figures[caption] = fs.cat_file(inner)
    return figures


def collect_lineage(lineage: Mapping[str, Any], dataset_dir: str, catalogs_root: str,
                    posters_root: str, flow_run_id: str | None = None) -> dict[str, Any]:
    """The export's lineage plus the data it came from: catalog hash, Data Docs, fetch reports."""
    catalog_hash = read_json(join(dataset_dir, "dataset.json")).get("catalog_hash")
    catalog_dir = join(catalogs_root, str(catalog_hash))
    docs = join(catalog_dir, "data_docs", "index.html")
    return {**lineage, "dataset_dir": str(dataset_dir), "catalog_hash": catalog_hash,
            "catalog_dir": catalog_dir, "data_docs": docs if exists(docs) else None,
            "fetch_reports": reports_of_catalog(posters_root, catalog_dir),
            "flow_run_id": flow_run_id or lineage.get("flow_run_id")}
