"""Prefect tasks around the plain stage functions: retries, caching, logs and artifacts.

Each task calls one stage function from `tasks/` and passes only paths, content hashes
and small result dataclasses across task boundaries. Retries live on the IO tasks only
(fetch, registry writes); validation and training failures are deterministic and fail
at once. Cached tasks key on their inputs' content (`flows.caching.StageCache`) and
persist their small results, so a rerun after a crash skips every finished stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import get_run_context

from flows.caching import StageCache, file_digest, missing_outputs
from storage.fs import atomic_write_text, exists, join, read_json

if TYPE_CHECKING:
    from storage.registry import Registration
    from tasks.catalog import CatalogConfig, CatalogResult
    from tasks.embed import EmbedResult
    from tasks.fetch import FetchConfig, FetchResult
    from tasks.shards import DatasetPlan, DatasetResult, ShardConfig, ShardPart
    from tasks.train import TrainConfig, TrainResult

IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [5, 30, 120],
                              "retry_jitter_factor": 0.5}
TRANSIENT_FETCH_OUTCOMES = ("http_5xx", "timeout", "connection_error", "truncated")
PROGRESS_EVERY_S = 2.0


def flow_run_id() -> str | None:
    """The id of the flow run we are in (recorded in lineage and registry metadata)."""
    run = getattr(get_run_context(), "task_run", None)
    return str(run.flow_run_id) if run is not None and run.flow_run_id else None


# --- ingest ------------------------------------------------------------------------------


@task(name="validate-catalog", persist_result=True,
      cache_policy=StageCache(content={"csv_path": file_digest},
                              stale=missing_outputs(lambda r: [r.out_dir])))
def validate_catalog(csv_path: str, catalogs_root: str, config: CatalogConfig) -> CatalogResult:
    """Validate the catalog CSV into `catalogs/<catalog-hash>/` and publish the results table.

    A catalog that fails a check (reject rate over tolerance, no label kept) fails the task
    after its table and Data Docs are published: deterministic, so never retried.
    """
    from tasks.catalog import catalog_dir
    from tasks.catalog import validate_catalog as run_validation

    result = run_validation(csv_path, catalog_dir(catalogs_root, csv_path, config), config)
    get_run_logger().info("catalog %s: %s", result.out_dir, _short(result.summary))
    create_table_artifact(
        key="catalog-validation", table=validation_rows(result.summary),
        description=f"Catalog validation of {csv_path}: "
        f"{'passed' if result.passed else '; '.join(result.summary['problems'])}",
    )
    create_link_artifact(key="catalog-data-docs", link=_file_link(result.data_docs_index),
                         link_text="Great Expectations Data Docs")
    return result.check()


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


def _fetch_stale(result: FetchResult) -> str | None:
    """A fetch chunk is redone when its report is gone or some posters failed transiently."""
    outcomes = result.summary.get("outcomes", {})
    transient = sum(outcomes.get(o, 0) for o in TRANSIENT_FETCH_OUTCOMES)
    if transient:
        return f"{transient} posters failed transiently last time"
    return missing_outputs(lambda r: [r.report_path])(result)


@task(name="prepare-store", **IO_RETRIES)
def prepare_store(store_root: str) -> str:
    """Remove temp files of killed fetch runs before the chunks start."""
    from storage.posters import PosterStore

    removed = PosterStore(store_root).remove_stale_temps()
    get_run_logger().info("poster store %s: %d stale temp files removed", store_root, removed)
    return store_root


@task(name="fetch-posters", task_run_name="fetch-posters-{chunk[0]}-of-{chunk[1]}",
      persist_result=True, cache_policy=StageCache(stale=_fetch_stale), **IO_RETRIES)
def fetch_chunk(catalog_dir: str, store_root: str, config: FetchConfig,
                chunk: tuple[int, int]) -> FetchResult:
    """Fetch one chunk of the catalog's posters, publishing a progress artifact."""
    from tasks.fetch import fetch_posters

    result = fetch_posters(catalog_dir, store_root, config, chunk=chunk,
                           on_progress=progress_publisher(f"Posters fetched, chunk {chunk[0]}"))
    get_run_logger().info("fetch chunk %s: %s", chunk, result.summary.get("outcomes"))
    return result


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


@task(name="compact-index", **IO_RETRIES)
def compact_index(store_root: str, fetched: list[FetchResult]) -> dict[str, Any]:
    """Fold the chunks' index parts into index.parquet and sum their outcomes."""
    from storage.posters import PosterStore

    PosterStore(store_root).compact_index()
    totals: dict[str, int] = {}
    for result in fetched:
        for outcome, n in result.summary.get("outcomes", {}).items():
            totals[outcome] = totals.get(outcome, 0) + n
    get_run_logger().info("fetch outcomes over %d chunks: %s", len(fetched), totals)
    create_table_artifact(key="fetch-outcomes", table=[{"outcome": k, "posters": v}
                          for k, v in sorted(totals.items()) if v],
                          description="Poster fetch outcomes over all chunks")
    return totals


@task(name="plan-dataset")
def plan_dataset(catalog_dir: str, store_root: str, datasets_root: str,
                 config: ShardConfig) -> DatasetPlan:
    """Name the dataset version of these inputs (uncached: it says whether it still exists)."""
    from tasks.shards import plan_dataset as run_plan

    plan = run_plan(catalog_dir, store_root, datasets_root, config)
    get_run_logger().info("dataset %s: %d shards, %s", plan.version, plan.shards,
                          "already there" if plan.exists else f"staging in {plan.staging}")
    return plan


def _part_stale(part: ShardPart) -> str | None:
    """A cached part is redone when it staged nothing or a shard it staged is gone.

    Parts run only while the version is unpublished, so their shards must still be staged.
    """
    if not part.rows:
        return "no shards staged"
    return missing_outputs(lambda p: [join(p.staging, r["shard"]) for r in p.rows])(part)


def _dataset_path(plan: DatasetPlan) -> str:
    """The cache key of a planned version: its folder (the version id hashes its content)."""
    return plan.path


@task(name="build-dataset-part", task_run_name="build-dataset-part-{part[0]}-of-{part[1]}",
      persist_result=True, cache_policy=StageCache(content={"plan": _dataset_path},
                                                   stale=_part_stale))
def build_dataset_part(plan: DatasetPlan, store_root: str, part: tuple[int, int]) -> ShardPart:
    """Stage one part of the planned version's shards (shards already staged are kept)."""
    from tasks.shards import write_shard_part

    result = write_shard_part(plan, store_root, part=part)
    get_run_logger().info("dataset part %s: %d shards staged", part, len(result.rows))
    return result


@task(name="build-dataset", persist_result=True,
      cache_policy=StageCache(content={"plan": _dataset_path},
                              stale=missing_outputs(lambda r: [r.path]), ignore=("parts",)))
def build_dataset(plan: DatasetPlan, parts: list[ShardPart]) -> DatasetResult:
    """Publish (or find) the immutable dataset version from its staged parts."""
    from tasks.shards import finalize_dataset

    result = finalize_dataset(plan, [row for part in parts for row in part.rows])
    get_run_logger().info("dataset %s (%s): splits %s, left out %s", result.version,
                          "written" if result.created else "already there", result.splits,
                          result.left_out)
    return result


# --- train -------------------------------------------------------------------------------


@task(name="embed-posters", persist_result=True,
      cache_policy=StageCache(stale=missing_outputs(lambda r: [r.cache_dir])))
def embed_posters(dataset_dir: str, embeddings_root: str, backbone: str, batch_size: int,
                  image_size: int) -> EmbedResult:
    """Compute backbone features for the dataset's posters the cache lacks (once per poster)."""
    from tasks.embed import embed_dataset

    result = embed_dataset(dataset_dir, embeddings_root, backbone, batch_size=batch_size,
                           image_size=image_size)
    get_run_logger().info("embeddings: %d new, %d reused (%s)", result.embedded, result.reused,
                          result.cache_dir)
    return result


def new_run_id(dataset_dir: str) -> str:
    """A fresh, sortable run folder name: UTC time + the dataset version it trains on."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{dataset_dir.rstrip('/').rsplit('/', 1)[-1][:16]}"


@task(name="train-model", persist_result=True,
      cache_policy=StageCache(stale=missing_outputs(lambda r: [r.model_dir, r.report_dir])))
def train_model(dataset_dir: str, runs_root: str, config: TrainConfig) -> TrainResult:
    """Fit the head on cached features, evaluate, and export the SavedModel to a new run."""
    from tasks.train import train

    out_dir = join(runs_root, new_run_id(dataset_dir))
    result = train(dataset_dir, out_dir, config, flow_run_id=flow_run_id())
    get_run_logger().info("trained %s: val macro F1 %s", result.model_dir,
                          result.metrics.get("val", {}).get("macro_f1"))
    return result


@task(name="score-champion")
def score_champion(registry_root: str, model_name: str, dataset_dir: str) -> float | None:
    """The champion's test macro F1 on the candidate's test split (None without a champion)."""
    from storage.registry import NotFoundError, Registry
    from tasks.evaluate import evaluate_saved_model

    try:
        champion = Registry(registry_root).path(model_name)
    except NotFoundError:
        get_run_logger().info("no champion for %s yet", model_name)
        return None
    score = float(evaluate_saved_model(champion, dataset_dir, split="test")["macro_f1"])
    get_run_logger().info("champion %s scores test macro F1 %.4f on %s", champion, score,
                          dataset_dir)
    return score


@task(name="register-model", persist_result=True, **IO_RETRIES,
      cache_policy=StageCache(stale=missing_outputs(lambda r: [r.path]),
                              ignore=("margin", "force", "champion_score")))
def register_model(model_dir: str, registry_root: str, model_name: str, margin: float,
                   force: bool, champion_score: float | None) -> Registration:
    """Add the exported model as a new registry version and apply the promotion gate.

    Cached on the model folder alone: a rerun never registers the same trained model twice.
    """
    from storage.registry import Registry

    reg = Registry(registry_root).register(
        model_dir, model_name, margin=margin, champion_score=champion_score, force=force,
        flow_run_id=flow_run_id(),
    )
    get_run_logger().info("registered %s v%d as %s: %s", model_name, reg.version, reg.alias,
                          reg.decision.reason)
    return reg


@dataclass(frozen=True)
class ReportLinks:
    """Where a run's outputs are, for the markdown report and the CLI."""

    model_dir: str
    report_dir: str
    data_docs: str | None


def report_links(trained: TrainResult, registration: Registration, dataset_dir: str,
                 catalogs_root: str) -> ReportLinks:
    """The run's folders and the Data Docs of the catalog its dataset was built from."""
    catalog_hash = read_json(join(dataset_dir, "dataset.json")).get("catalog_hash")
    docs = join(catalogs_root, str(catalog_hash), "data_docs", "index.html")
    return ReportLinks(trained.model_dir, trained.report_dir, docs if exists(docs) else None)


@task(name="publish-report")
def publish_report(metrics: dict[str, Any], registration: Registration, links: ReportLinks,
                   notes: list[str]) -> str:
    """The run report as a markdown artifact and as `report/summary.md` beside the plots."""
    markdown = report_markdown(metrics, registration, links, notes)
    atomic_write_text(join(links.report_dir, "summary.md"), markdown)
    create_markdown_artifact(key="model-report", markdown=markdown,
                             description=f"posterflow model {registration.model} "
                             f"v{registration.version}")
    create_link_artifact(key="registered-model", link=_file_link(registration.path),
                         link_text=f"{registration.model} v{registration.version}")
    return markdown


def report_markdown(metrics: dict[str, Any], registration: Registration, links: ReportLinks,
                    notes: list[str]) -> str:
    """Render the run report: headline metrics, the gate decision, per-label F1, links."""
    val, test = metrics.get("val", {}), metrics.get("test", {})
    lines = [f"# {registration.model} v{registration.version} ({registration.alias})", ""]
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])
    lines += ["| split | macro F1 @0.5 | macro F1 tuned | micro F1 |", "|---|---|---|---|"]
    for name, split in (("val", val), ("test", test)):
        lines.append(f"| {name} | {_f(split.get('macro_f1'))} | "
                     f"{_f(split.get('macro_f1_tuned'))} | {_f(split.get('micro_f1'))} |")
    lines += ["", f"**Gate:** {registration.decision.reason}", "",
              "| label | precision | recall | F1 (test, tuned) | support |",
              "|---|---|---|---|---|"]
    per_label = test.get("per_label_tuned") or test.get("per_label") or {}
    for label, s in per_label.items():
        lines.append(f"| {label} | {_f(s.get('precision'))} | {_f(s.get('recall'))} | "
                     f"{_f(s.get('f1'))} | {s.get('support', '')} |")
    lines += ["", f"- Registered model: `{registration.path}`", f"- Run model: `{links.model_dir}`",
              f"- Report (plots, metrics.json): `{links.report_dir}`"]
    if links.data_docs:
        lines.append(f"- Data Docs: `{links.data_docs}`")
    return "\n".join(lines) + "\n"


def _f(value: Any) -> str:
    """A metric with 4 decimals, or a dash."""
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _short(summary: dict[str, Any]) -> str:
    """The headline numbers of a catalog summary."""
    keys = ("rows_read", "accepted", "rejected", "labels", "split_sizes")
    return ", ".join(f"{k}={summary[k]}" for k in keys if k in summary)


def _file_link(path: str) -> str:
    """A clickable URL for a local path or fsspec URL."""
    return path if "://" in path else f"file://{path}"
