"""The score flow: (ingest a catalog, or take a dataset version) -> predictions by an alias."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, unmapped

from flows.config import ScoreConfig
from flows.ingest import ingest_flow
from flows.runners import task_runner
from flows.score_tasks import (
    ScoringTarget,
    publish_scored,
    publish_summary,
    resolve_target,
    score_dataset_part,
)
from storage.layout import SCORES


@dataclass(frozen=True)
class ScoreResult:
    """Where the predictions are, which model made them and how they were computed."""

    scores_dir: str
    model: str
    version: int
    rows: int
    from_features: int
    from_images: int
    reused: bool  # an earlier run had scored this dataset with this version


@flow(name="score-parts")
def score_parts_flow(target: ScoringTarget, config: ScoreConfig) -> dict:
    """Score the dataset as `scale.score_parts` concurrent parts, then mark it complete."""
    n = config.scale.score_parts
    parts = score_dataset_part.map(unmapped(target), list(range(n)), unmapped(n),
                                   unmapped(config.cache_root()), unmapped(config.batch_size))
    return publish_scored(target, parts.result())


@flow(name="score")
def score_flow(config: ScoreConfig) -> ScoreResult:
    """Predict the genres of a dataset's (or a freshly ingested catalog's) posters."""
    dataset_dir = config.dataset_dir or ingest_flow(config.ingest_config()).dataset_dir
    target = resolve_target(config.registry_root(), config.model.model_name, config.model.alias,
                            dataset_dir, config.splits, config.storage.path(SCORES))
    facts = target.facts or score_parts_flow.with_options(
        task_runner=task_runner(config.scale))(target, config)
    publish_summary(target.out_dir, facts)
    return ScoreResult(target.out_dir, target.model, target.version, int(facts["rows"]),
                       int(facts["from_features"]), int(facts["from_images"]),
                       reused=target.facts is not None)


if __name__ == "__main__":
    # `python -m flows.score`: serve the flow in this process (runs from the UI).
    score_flow.serve(name="score-local")
