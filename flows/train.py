"""The train flow: embed -> train (+ evaluate, export) -> score champion -> register -> report."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows.artifacts import report_links
from flows.config import TrainFlowConfig
from flows.train_tasks import (
    embed_posters,
    publish_report,
    register_model,
    score_champion,
    train_model,
)


@dataclass(frozen=True)
class TrainFlowResult:
    """Where the trained model, its report and its registry version are."""

    model_dir: str
    report_dir: str
    registry_path: str
    version: int
    alias: str
    metrics: dict


@flow(name="train")
def train_flow(config: TrainFlowConfig) -> TrainFlowResult:
    """Train on a dataset version, export, and register through the promotion gate."""
    storage, reg = config.storage, config.registry
    registry_root = reg.root or storage.path("registry")
    embeddings_root = config.train.embeddings_root or storage.path("embeddings")
    train_config = config.train.model_copy(update={"embeddings_root": embeddings_root})
    embed_posters(config.dataset_dir, embeddings_root, train_config.backbone,
                  train_config.embed_batch_size, train_config.image_size,
                  train_config.embedded_views())
    trained = train_model(config.dataset_dir, storage.path("runs"), train_config)
    champion = score_champion(registry_root, reg.model_name, config.dataset_dir)
    registration = register_model(trained.model_dir, registry_root, reg.model_name,
                                  reg.margin, reg.force, champion)
    links = report_links(trained, config.dataset_dir, storage.path("catalogs"))
    publish_report(trained.metrics, registration, links, config.notes)
    return TrainFlowResult(trained.model_dir, trained.report_dir, registration.path,
                           registration.version, registration.alias, trained.metrics)
