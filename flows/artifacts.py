"""What a run shows in the Prefect UI: the validation table, progress bars, the run report
and the retrain's headline.

Everything a reviewer needs is inside the artifacts (tables, the report's figures as data
URIs): a browser on the UI's http page blocks `file://` links and the Prefect server serves
no files, so paths are printed as text, never linked. The renderers are plain functions of
the stage results (unit-tested without Prefect); the `publish_*` helpers are the only code
that creates artifacts, and run inside a task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from storage.fs import exists, join, read_json
from tasks.model_card import card_markdown, format_score

if TYPE_CHECKING:
    from tasks.catalog import CatalogResult
    from tasks.model_card import CardData
    from tasks.promotion import GateDecision, Registration
    from tasks.train import TrainResult

PROGRESS_EVERY_S = 2.0


# --- catalog validation ------------------------------------------------------------------


def validation_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the validation table artifact: one per check and one per reject reason."""
    rows = [{"check": e["expectation"], "column": e.get("column") or "",
             "success": e["success"], "rows": e["unexpected_count"],
             "reject reason": e.get("reject_reason", "")}
            for e in summary.get("expectations", [])]
    rows += [{"check": "rows rejected", "column": "", "success": None, "rows": n,
              "reject reason": reason} for reason, n in summary.get("by_reason", {}).items()]
    rows.append({"check": "rows accepted", "column": "", "success": summary.get("passed"),
                 "rows": summary.get("accepted"), "reject reason": ""})
    return rows


def publish_validation(csv_path: str, result: CatalogResult) -> None:
    """The validation table; its description names the catalog's Data Docs (a path)."""
    create_table_artifact(
        key="catalog-validation", table=validation_rows(result.summary),
        description=f"Catalog validation of {csv_path}: "
        f"{'passed' if result.passed else '; '.join(result.summary['problems'])}. "
        f"Great Expectations Data Docs: {result.data_docs_index}",
    )


# --- fetch -------------------------------------------------------------------------------


def progress_publisher(description: str) -> Callable[[int, int], None]:
    """An `on_progress(done, total)` that updates one progress artifact, at most every 2 s."""
    artifact_id = create_progress_artifact(progress=0.0, description=description, _sync=True)
    assert isinstance(artifact_id, UUID)  # _sync=True: the id, not a coroutine
    last = [0.0]

    def publish(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        update_progress_artifact(artifact_id=artifact_id,
                                 progress=100.0 * done / max(total, 1), _sync=True)

    return publish


def publish_fetch_outcomes(totals: dict[str, int]) -> None:
    """The table of poster fetch outcomes summed over all chunks."""
    create_table_artifact(key="fetch-outcomes", table=[{"outcome": k, "posters": v}
                          for k, v in sorted(totals.items()) if v],
                          description="Poster fetch outcomes over all chunks")


# --- run report --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportLinks:
    """Where a run's outputs are, for the markdown report and the CLI."""

    model_dir: str
    report_dir: str
    data_docs: str | None


def report_links(trained: TrainResult, dataset_dir: str, catalogs_root: str) -> ReportLinks:
    """The run's folders and the Data Docs of the catalog its dataset was built from."""
    catalog_hash = read_json(join(dataset_dir, "dataset.json")).get("catalog_hash")
    docs = join(catalogs_root, str(catalog_hash), "data_docs", "index.html")
    return ReportLinks(trained.model_dir, trained.report_dir, docs if exists(docs) else None)


def report_markdown(card: CardData, card_path: str, registered_path: str,
                    links: ReportLinks) -> str:
    """The run report: the model card's tables and figures (`tasks.model_card`), then where
    things are."""
    lines = [card_markdown(card, card_path, figures=True),
             f"- Registered model: `{registered_path}`", f"- Run model: `{links.model_dir}`",
             f"- Report (plots, metrics.json): `{links.report_dir}`"]
    if links.data_docs:
        lines.append(f"- Data Docs: `{links.data_docs}`")
    return "\n".join(lines) + "\n"


def publish_report_artifact(markdown: str, registration: Registration) -> None:
    """The run report as the run's `model-report` markdown artifact."""
    create_markdown_artifact(key="model-report", markdown=markdown,
                             description=f"posterflow model {registration.model} "
                             f"v{registration.version} ({registration.alias})")


# --- retrain headline --------------------------------------------------------------------


def retrain_markdown(model: str, version: int, alias: str, decision: GateDecision,
                     metrics: dict[str, Any], card_path: str, reused: bool) -> str:
    """The parent retrain run's headline: the version, its alias and why, the test scores."""
    head = (f"nothing new registered: {model} v{version} ({alias or 'no alias'}) already holds "
            "this model" if reused else f"{model} v{version}: {alias}")
    val, test = metrics.get("val", {}), metrics.get("test", {})
    rows = [f"# {head}", "", f"**Decision:** {decision.reason}", ""]
    rows += [f"- FAILED: {c}" for c in decision.failed_checks]
    rows += [f"- warning: {w}" for w in decision.warnings]
    rows += ["", "| metric | val | test |", "|---|---|---|"]
    for key, name in (("macro_f1", "macro F1 @0.5"), ("macro_f1_tuned", "macro F1 tuned")):
        rows.append(f"| {name} | {format_score(val.get(key))} | {format_score(test.get(key))} |")
    rows += ["", f"Model card: `{card_path}` (the train run's `model-report` artifact shows it)"]
    return "\n".join(rows) + "\n"


def publish_retrain_summary(markdown: str) -> None:
    """The retrain run's headline as its `retrain-summary` markdown artifact."""
    create_markdown_artifact(key="retrain-summary", markdown=markdown,
                             description="posterflow retrain: the registered version")


# --- scores ------------------------------------------------------------------------------


def score_markdown(out_dir: str, facts: dict[str, Any], sample: list[dict[str, Any]]) -> str:
    """The score run's summary: model, counts by how each poster was scored, a sample."""
    rows = [f"# {facts['rows']} posters scored by {facts['model']} v{facts['version']} "
            f"({facts['alias']})", "",
            f"Dataset `{facts['dataset_version']}` ({', '.join(facts['splits'])}); "
            f"predictions in `{out_dir}`", "",
            "| scored from | posters |", "|---|---|",
            f"| cached features (head only) | {facts['from_features']} |",
            f"| poster images (backbone + head) | {facts['from_images']} |", ""]
    if sample:
        labels = facts.get("labels") or []
        rows += ["| imdb id | split | genres | top probabilities |", "|---|---|---|---|"]
        for row in sample:
            probs = sorted(zip(labels, row["probabilities"], strict=False),
                           key=lambda kv: -kv[1])[:3]
            top = ", ".join(f"{name} {p:.2f}" for name, p in probs)
            rows.append(f"| {row['imdb_id']} | {row['split']} | "
                        f"{', '.join(row['genres']) or '-'} | {top} |")
    return "\n".join(rows) + "\n"


def publish_score_summary(markdown: str) -> None:
    """The score run's summary as its `scores` markdown artifact."""
    create_markdown_artifact(key="scores", markdown=markdown,
                             description="posterflow batch scoring")
