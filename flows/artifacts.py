"""What a run shows in the Prefect UI: the validation table, progress bars, the run report, links.

The renderers are plain functions of the stage results (unit-tested without Prefect); the
`publish_*` helpers are the only code that creates artifacts, and run inside a task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from storage.fs import exists, join, read_json
from tasks.model_card import card_markdown

if TYPE_CHECKING:
    from tasks.catalog import CatalogResult
    from tasks.model_card import CardData
    from tasks.promotion import Registration
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
    """The validation table and a link to the catalog's Data Docs."""
    create_table_artifact(
        key="catalog-validation", table=validation_rows(result.summary),
        description=f"Catalog validation of {csv_path}: "
        f"{'passed' if result.passed else '; '.join(result.summary['problems'])}",
    )
    create_link_artifact(key="catalog-data-docs", link=file_link(result.data_docs_index),
                         link_text="Great Expectations Data Docs")


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
    """The run report: the model card's tables (`tasks.model_card`), then where things are."""
    lines = [card_markdown(card, file_link(card_path)),
             f"- Registered model: `{registered_path}`", f"- Run model: `{links.model_dir}`",
             f"- Report (plots, metrics.json): `{links.report_dir}`"]
    if links.data_docs:
        lines.append(f"- Data Docs: `{links.data_docs}`")
    return "\n".join(lines) + "\n"


def publish_report_artifacts(markdown: str, registration: Registration, card_path: str) -> None:
    """The run report as a markdown artifact, and links to the model card and the model."""
    name = f"{registration.model} v{registration.version}"
    create_markdown_artifact(key="model-report", markdown=markdown,
                             description=f"posterflow model {name}")
    create_link_artifact(key="model-card", link=file_link(card_path),
                         link_text=f"model card of {name}")
    create_link_artifact(key="registered-model", link=file_link(registration.path),
                         link_text=name)


def file_link(path: str) -> str:
    """A clickable URL for a local path or fsspec URL."""
    return path if "://" in path else f"file://{path}"
