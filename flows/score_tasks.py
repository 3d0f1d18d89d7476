"""Prefect tasks of the `score` flow: resolve the model, score a part, publish, report.

Each part is its own task on the configured task runner (threads or Dask workers); each
loads the SavedModel from the registry (a verified local copy on object stores) and writes
its own Parquet part, which a rerun keeps (`tasks.score.score_part`), so a killed run
resumes with the parts it lacks. The folder is marked complete last (`storage.scores`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from flows.artifacts import publish_score_summary, score_markdown

if TYPE_CHECKING:
    from tasks.score import ScoredPart


@dataclass(frozen=True)
class ScoringTarget:
    """What to score with and where to: the model version, the dataset, the output folder."""

    registry_root: str
    model: str
    version: int
    alias: str
    dataset_dir: str
    dataset_version: str
    splits: list[str]
    labels: list[str]
    out_dir: str
    facts: dict[str, Any] | None  # the folder's _scores.json when an earlier run finished it


@task(name="resolve-scoring-model")
def resolve_target(registry_root: str, model: str, alias: str, dataset_dir: str,
                   splits: list[str], scores_root: str) -> ScoringTarget:
    """The version `alias` names, the dataset's splits to score and the output folder."""
    from storage.datasets import load_dataset_info
    from storage.registry import Registry
    from storage.scores import read_facts, scores_dir

    registry = Registry(registry_root)
    version = registry.resolve(model, alias)
    info = load_dataset_info(dataset_dir)
    present = [s for s in splits if info.splits.get(s)]
    out = scores_dir(scores_root, info.version, model, version)
    labels = list(registry.info(model, version).metadata["metrics"].get("labels") or [])
    facts = read_facts(out)
    get_run_logger().info("scoring %s with %s v%d (%s) into %s%s", dataset_dir, model, version,
                          alias, out, ": already complete" if facts else "")
    return ScoringTarget(registry_root, model, version, alias, dataset_dir, info.version,
                         present, labels, out, facts)


@task(name="score-part")
def score_dataset_part(target: ScoringTarget, part: int, parts: int, embeddings_root: str,
                       batch_size: int) -> ScoredPart:
    """Score every `parts`-th poster of the target's splits (from `part`)."""
    from storage.registry import Registry
    from tasks.score import score_part

    model_dir = Registry(target.registry_root).local_path(target.model, target.version)
    return score_part(model_dir, target.dataset_dir, target.splits, part, parts,
                      embeddings_root, target.out_dir, batch_size)


@task(name="publish-scores")
def publish_scored(target: ScoringTarget, parts: list[ScoredPart]) -> dict[str, Any]:
    """Mark the scores folder complete with its facts (another run may have done it first)."""
    from storage.registry import Registry
    from storage.scores import publish_scores, read_facts

    facts = {
        "model": target.model, "version": target.version, "alias": target.alias,
        "dataset_dir": target.dataset_dir, "dataset_version": target.dataset_version,
        "splits": target.splits, "labels": target.labels, "parts": len(parts),
        "rows": sum(p.rows for p in parts),
        "from_features": sum(p.from_features for p in parts),
        "from_images": sum(p.from_images for p in parts),
        "lineage": Registry(target.registry_root).info(target.model, target.version).lineage,
        "flow_run_id": str(flow_run.id), "scored_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if not publish_scores(target.out_dir, facts):
        get_run_logger().info("%s was completed by another run: kept", target.out_dir)
        facts = read_facts(target.out_dir) or facts
    return facts


@task(name="publish-score-summary")
def publish_summary(out_dir: str, facts: dict[str, Any], sample_size: int = 10) -> str:
    """The counts and the first posters' predictions as the run's `scores` artifact."""
    from storage.scores import read_scores

    sample = read_scores(out_dir).slice(0, sample_size).to_pylist()
    markdown = score_markdown(out_dir, facts, sample)
    publish_score_summary(markdown)
    return markdown
