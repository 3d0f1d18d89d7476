"""Prefect tasks of the train stages: embed, train (+ evaluate, export), gate, register, report.

Each task calls one stage function from `tasks/` (or the registry) and passes only paths and
small result dataclasses across task boundaries. Only the registry write retries; training
and evaluation fail deterministically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.context import get_run_context

from flows.artifacts import ReportLinks, publish_report_artifacts, report_markdown
from flows.caching import IO_RETRIES, StageCache, missing_outputs
from storage.fs import atomic_write_text, join
from storage.runs import new_run_id

if TYPE_CHECKING:
    from tasks.embed import EmbedResult
    from tasks.promotion import Registration
    from tasks.train import TrainConfig, TrainResult


def flow_run_id() -> str | None:
    """The id of the flow run we are in (recorded in lineage and registry metadata)."""
    run = getattr(get_run_context(), "task_run", None)
    return str(run.flow_run_id) if run is not None and run.flow_run_id else None


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


@task(name="train-model", persist_result=True,
      cache_policy=StageCache(stale=missing_outputs(lambda r: [r.model_dir, r.report_dir])))
def train_model(dataset_dir: str, runs_root: str, config: TrainConfig) -> TrainResult:
    """Fit the head on cached features, evaluate, and export the SavedModel to a new run."""
    from tasks.train import train

    out_dir = join(runs_root, new_run_id(dataset_dir.rstrip("/").rsplit("/", 1)[-1][:16]))
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
        champion = Registry(registry_root).local_path(model_name)  # TF loads local folders
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
    from tasks.promotion import register_candidate

    reg = register_candidate(
        Registry(registry_root), model_dir, model_name, margin=margin,
        champion_score=champion_score, force=force, flow_run_id=flow_run_id(),
    )
    get_run_logger().info("registered %s v%d as %s: %s", model_name, reg.version, reg.alias,
                          reg.decision.reason)
    return reg


@task(name="publish-report")
def publish_report(metrics: dict[str, Any], registration: Registration, links: ReportLinks,
                   notes: list[str]) -> str:
    """The run report as a markdown artifact and as `report/summary.md` beside the plots."""
    markdown = report_markdown(metrics, registration, links, notes)
    atomic_write_text(join(links.report_dir, "summary.md"), markdown)
    publish_report_artifacts(markdown, registration)
    return markdown
