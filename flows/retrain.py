"""The retrain flow: ingest, then train on the dataset it produced."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

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
    return RetrainResult(ingested, trained)
