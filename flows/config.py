"""One validated pydantic model per flow, composed of the stage configs.

The Prefect UI renders each model as a typed form (the field descriptions become help
text); `posterflow run --config FILE --param a.b=c` builds the same model from YAML/JSON
plus dotted overrides. Flows never read environment variables: everything they need
arrives here. Only `deployments/` knows environments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.aliases import CHAMPION
from storage.fs import join, read_json
from storage.layout import (
    DEFAULT_DATA_ROOT,
    DEFAULT_MODEL_NAME,
    EMBEDDINGS,
    REGISTRY,
    root_under,
)
from tasks.catalog import CatalogConfig
from tasks.fetch import FetchConfig
from tasks.promotion import Guardrails
from tasks.shards import ShardConfig
from tasks.train_config import TrainConfig


class StorageConfig(BaseModel):
    """Where every stage writes: one root, local or any fsspec URL."""

    model_config = ConfigDict(extra="forbid")

    data_root: str = Field(
        DEFAULT_DATA_ROOT,
        description="Root of all outputs: a local folder or an fsspec URL (s3://bucket/data). "
        "catalogs/, posters/, datasets/, embeddings/, runs/ and registry/ live under it.",
    )

    def path(self, *parts: str) -> str:
        """A location under the data root."""
        return join(self.data_root, *parts)


class ScaleOutConfig(BaseModel):
    """How the fan-out stages run: threads by default, Dask as an option."""

    model_config = ConfigDict(extra="forbid")

    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="Task runner for the fan-out stages: 'threads' (one process) or 'dask' "
        "(needs the `dask` extra; a local cluster unless dask_address is set).",
    )
    max_workers: int = Field(4, ge=1, le=256, description="Threads or Dask workers.")
    fetch_chunks: int = Field(
        4, ge=1, le=4096, description="The catalog is fetched as this many disjoint chunks, "
        "one Prefect task each (each with its own event loop and HTTP session).",
    )
    shard_parts: int = Field(
        2, ge=1, le=4096, description="The dataset's shards are written as this many parts "
        "(shard index % parts), one Prefect task each, then published together.",
    )
    embed_parts: int = Field(
        1, ge=1, le=4096, description="The train flow embeds the posters as this many "
        "disjoint parts (by content hash), one Prefect task each: one per GPU worker on a "
        "Dask cluster; 1 on a single machine (the backbone already uses every core).",
    )
    score_parts: int = Field(
        2, ge=1, le=4096, description="The `score` flow scores the dataset as this many "
        "disjoint parts (every Nth record), one Prefect task each.",
    )
    dask_address: str | None = Field(
        None, description="Address of an existing Dask scheduler (tcp://host:8786); "
        "None starts a local cluster.",
    )


class RegistryConfig(BaseModel):
    """Registration of the trained model through the promotion gate."""

    model_config = ConfigDict(extra="forbid")

    root: str | None = Field(
        None, description="Model registry root (TF Serving watches ROOT/MODEL_NAME/); "
        "default DATA_ROOT/registry.",
    )
    model_name: str = Field(
        DEFAULT_MODEL_NAME, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Registry model name: versions go to ROOT/MODEL_NAME/VERSION/.",
    )
    margin: float = Field(
        0.0, ge=0.0, le=1.0,
        description="A candidate becomes champion only if its test macro F1 beats the "
        "champion's on the same split by at least this much (0: strictly better).",
    )
    force: bool = Field(False, description="Promote the candidate even if the gate or the "
                        "guardrails refuse (recorded as forced).")
    guardrails: Guardrails = Field(
        default_factory=Guardrails,
        description="Absolute checks every candidate must pass, the first version too "
        "(failing: it is held as challenger).")
    approval: Literal["none", "required"] = Field(
        "none", description="'required': register the candidate as challenger, then pause the "
        "run for a reviewer's approve/reject in the Prefect UI (approval goes through the gate).",
    )
    approval_timeout_s: int = Field(
        86400, ge=1, le=30 * 86400,
        description="How long a run waits for the review; then the version stays challenger.",
    )


class IngestSections(BaseModel):
    """What ingesting a catalog needs: its CSV, the output roots, the ingest stages' settings."""

    model_config = ConfigDict(extra="forbid")

    catalog_csv: str = Field(
        description="MovieGenre.csv to ingest: a local path or fsspec URL.",
    )
    storage: StorageConfig = Field(default_factory=StorageConfig,
                                   description="Output roots.")
    catalog: CatalogConfig = Field(default_factory=CatalogConfig,
                                   description="Validation, label and split rules.")
    fetch: FetchConfig = Field(default_factory=FetchConfig,
                               description="Poster download settings.")
    shards: ShardConfig = Field(default_factory=ShardConfig,
                                description="TFRecord shard settings.")
    scale: ScaleOutConfig = Field(default_factory=ScaleOutConfig,
                                  description="Fan-out and task runner.")


class TrainSections(BaseModel):
    """What training needs besides the dataset: output roots, training and registry settings."""

    model_config = ConfigDict(extra="forbid")

    storage: StorageConfig = Field(default_factory=StorageConfig,
                                   description="Output roots.")
    train: TrainConfig = Field(default_factory=TrainConfig,
                               description="Backbone, head and training settings.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig,
                                     description="Registry and promotion gate.")
    scale: ScaleOutConfig = Field(default_factory=ScaleOutConfig,
                                  description="Fan-out and task runner.")
    notes: list[str] = Field(
        default_factory=list,
        description="Lines shown at the top of the model report (e.g. why a stand-in backbone "
        "was used).",
    )

    def registry_root(self) -> str:
        """The registry's root: configured, else DATA_ROOT/registry."""
        return root_under(self.storage.data_root, REGISTRY, self.registry.root)

    def resolved_train(self) -> TrainConfig:
        """The training settings with the embedding cache's root resolved on the data root."""
        return self.train.resolved(self.storage.data_root)


class IngestConfig(IngestSections):
    """The `ingest` flow: catalog -> validate -> fetch -> shards."""


class DatasetSection(BaseModel):
    """The dataset version to train on (its own base so the UI form shows it first)."""

    model_config = ConfigDict(extra="forbid")

    dataset_dir: str = Field(
        description="Dataset version folder to train on (DATA_ROOT/datasets/VERSION).",
    )


# Pydantic lists the fields of the last base first: the order is the order of the UI form.
class TrainFlowConfig(TrainSections, DatasetSection):
    """The `train` flow: embed -> train -> evaluate -> export -> register."""


class RetrainConfig(TrainSections, IngestSections):
    """The `retrain` flow: ingest, then train on the dataset it produced."""

    def ingest_config(self) -> IngestConfig:
        """The ingest half of this run."""
        return IngestConfig(**{k: getattr(self, k) for k in IngestConfig.model_fields})

    def train_config(self, dataset_dir: str) -> TrainFlowConfig:
        """The train half of this run, on the dataset ingest produced."""
        sections = {k: getattr(self, k) for k in TrainFlowConfig.model_fields if k != "dataset_dir"}
        return TrainFlowConfig(dataset_dir=dataset_dir, **sections)


class ScoredModel(BaseModel):
    """Which registered model version scores: a model name and an alias (or a number)."""

    model_config = ConfigDict(extra="forbid")

    registry_root: str | None = Field(
        None, description="Model registry root; default DATA_ROOT/registry.")
    model_name: str = Field(DEFAULT_MODEL_NAME, pattern=r"^[A-Za-z0-9_.-]+$",
                            description="Registry model name.")
    alias: str = Field(CHAMPION, description="Alias (champion, challenger, ...) or version "
                       "number to score with.")


class ScoreConfig(BaseModel):
    """The `score` flow: a catalog (ingested first) or a dataset version -> predictions."""

    model_config = ConfigDict(extra="forbid")

    catalog_csv: str | None = Field(
        None, description="MovieGenre.csv to score: ingested first (validated, posters "
        "fetched, shards built; cached when unchanged). Give this or dataset_dir.")
    dataset_dir: str | None = Field(
        None, description="Dataset version folder to score (DATA_ROOT/datasets/VERSION). Give "
        "this or catalog_csv.")
    splits: list[str] = Field(
        default_factory=lambda: ["train", "val", "test"],
        description="Splits of the dataset to score (a split the dataset lacks is skipped).")
    model: ScoredModel = Field(default_factory=ScoredModel, description="The scoring model.")
    batch_size: int = Field(64, ge=1, le=4096, description="Posters per model call.")
    embeddings_root: str | None = Field(
        None, description="Embedding cache whose features score without a backbone pass; "
        "default DATA_ROOT/embeddings (where training put them).")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Output roots "
                                   "(scores go to DATA_ROOT/scores/).")
    catalog: CatalogConfig = Field(
        default_factory=lambda: CatalogConfig(unlabelled="keep"),
        description="Validation rules (with catalog_csv); movies without genres are kept "
        "(new movies to label).")
    fetch: FetchConfig = Field(default_factory=FetchConfig,
                               description="Poster download settings (with catalog_csv).")
    shards: ShardConfig = Field(default_factory=ShardConfig,
                                description="TFRecord shard settings (with catalog_csv).")
    scale: ScaleOutConfig = Field(default_factory=ScaleOutConfig,
                                  description="Fan-out and task runner.")

    @field_validator("catalog", mode="before")
    @classmethod
    def _keep_unlabelled(cls, value: Any) -> Any:
        """Catalog settings given without `unlabelled` still keep movies with no genre."""
        if isinstance(value, dict) and "unlabelled" not in value:
            return {**value, "unlabelled": "keep"}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ScoreConfig:
        if (self.catalog_csv is None) == (self.dataset_dir is None):
            raise ValueError("give exactly one of catalog_csv and dataset_dir")
        return self

    def ingest_config(self) -> IngestConfig:
        """The ingest run that turns `catalog_csv` into a dataset version."""
        sections = {k: getattr(self, k) for k in IngestConfig.model_fields if k != "catalog_csv"}
        return IngestConfig(catalog_csv=str(self.catalog_csv), **sections)

    def registry_root(self) -> str:
        """The registry's root: configured, else DATA_ROOT/registry."""
        return root_under(self.storage.data_root, REGISTRY, self.model.registry_root)

    def cache_root(self) -> str:
        """The embedding cache's root: configured, else DATA_ROOT/embeddings."""
        return root_under(self.storage.data_root, EMBEDDINGS, self.embeddings_root)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `data["a"]["b"] = value` for `dotted="a.b"`, creating sections as needed."""
    *sections, leaf = dotted.split(".")
    node = data
    for name in sections:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {dotted!r}: {name!r} is a value, not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value parsed as a YAML scalar/list: 5, true, [1, 2], text)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE (e.g. train.epochs=5), got {text!r}")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config_data(path: str | os.PathLike[str] | None, overrides: list[str]) -> dict[str, Any]:
    """Read a YAML/JSON config file (or start empty) and apply `key=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        suffix = Path(path).suffix.lower()
        data = read_json(path) if suffix == ".json" else _read_yaml(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config sections, got "
                             f"{type(data).__name__}")
    for item in overrides:
        set_dotted(data, *parse_override(item))
    return data


def _read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file (empty file -> empty mapping)."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
