"""The ingest flows: validate the catalog -> fetch posters (over chunks) -> shards (over parts)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, unmapped

from flows.config import IngestConfig
from flows.ingest_tasks import (
    build_dataset_part,
    compact_index,
    fetch_chunk,
    plan_dataset_version,
    prepare_store,
    publish_dataset,
    validate_catalog_csv,
)
from flows.runners import task_runner
from storage.layout import CATALOGS, DATASETS, POSTERS
from tasks.shards import DatasetResult


@dataclass(frozen=True)
class IngestResult:
    """What ingest produced: the catalog folder, the poster store and the dataset version."""

    catalog_dir: str
    data_docs: str
    store_root: str
    dataset_dir: str
    fetch_outcomes: dict[str, int]


@flow(name="fetch")
def fetch_flow(catalog_dir: str, store_root: str, config: IngestConfig) -> dict[str, int]:
    """Fetch the catalog's posters as `scale.fetch_chunks` concurrent chunks under one store
    lease, then compact."""
    lease = prepare_store(store_root, config.fetch)
    chunks = [(i, config.scale.fetch_chunks) for i in range(config.scale.fetch_chunks)]
    fetched = fetch_chunk.map(unmapped(catalog_dir), unmapped(store_root),
                              unmapped(config.fetch), chunks, unmapped(lease))
    return compact_index(store_root, fetched.result(), lease)


@flow(name="shards")
def shards_flow(catalog_dir: str, store_root: str, datasets_root: str,
                config: IngestConfig) -> DatasetResult:
    """Plan the version, stage its shards as `scale.shard_parts` concurrent parts, publish."""
    plan = plan_dataset_version(catalog_dir, store_root, datasets_root, config.shards)
    n = config.scale.shard_parts
    parts = [] if plan.exists else build_dataset_part.map(
        unmapped(plan), unmapped(store_root), [(i, n) for i in range(n)]).result()
    return publish_dataset(plan, parts)


@flow(name="ingest")
def ingest_flow(config: IngestConfig) -> IngestResult:
    """Validate the catalog, fetch its posters and build an immutable dataset version."""
    storage = config.storage
    catalog = validate_catalog_csv(config.catalog_csv, storage.path(CATALOGS), config.catalog)
    store = storage.path(POSTERS)
    outcomes = fetch_flow.with_options(task_runner=task_runner(config.scale))(
        catalog.out_dir, store, config)
    dataset = shards_flow.with_options(task_runner=task_runner(config.scale))(
        catalog.out_dir, store, storage.path(DATASETS), config)
    return IngestResult(catalog.out_dir, catalog.data_docs_index, store, dataset.path, outcomes)
