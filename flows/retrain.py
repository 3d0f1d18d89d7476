"""The retrain flow: ingest, then train on the dataset it produced."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, task

from flows.artifacts import publish_retrain_summary, retrain_markdown
from flows.config import RetrainConfig
from flows.ingest import IngestResult, ingest_flow
from flows.train import TrainFlowResult, train_flow


@dataclass(frozen=True)
class RetrainResult:
    """Both halves' results."""

    ingest: IngestResult
    train: TrainFlowResult


@flow(name="retrain")
def retrain_flow(config: RetrainConfig) -> RetrainResult:
    """Catalog -> fetch -> shards -> embed -> train -> evaluate -> export -> register."""
    ingested = ingest_flow(config.ingest_config())
    trained = train_flow(config.train_config(ingested.dataset_dir))
    publish_headline(config.registry.model_name, trained)
    return RetrainResult(ingested, trained)


@task(name="publish-headline")
def publish_headline(model: str, trained: TrainFlowResult) -> str:
    """The registered version, its alias and scores as the retrain run's own artifact."""
    markdown = retrain_markdown(model, trained.version, trained.alias, trained.decision,
                                trained.metrics, trained.card_path, trained.reused)
    publish_retrain_summary(markdown)
    return markdown


if __name__ == "__main__":
    # `python -m flows.retrain`: serve the flow (runs from the UI or `prefect deployment run
    # retrain/retrain-local`) in this process, as Prefect's quickstart does.
    retrain_flow.serve(name="retrain-local")
