"""The `ingest` flow: validate -> fetch (fanned out over chunks) -> shards (over parts)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, unmapped

from flows import steps
from flows.config import IngestConfig
from flows.runners import task_runner
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
def fetch(catalog_dir: str, store_root: str, config: IngestConfig) -> dict[str, int]:
    """Fetch the catalog's posters as `scale.fetch_chunks` concurrent chunks, then compact."""
    store = steps.prepare_store(store_root)
    chunks = [(i, config.scale.fetch_chunks) for i in range(config.scale.fetch_chunks)]
    fetched = steps.fetch_chunk.map(unmapped(catalog_dir), unmapped(store),
                                    unmapped(config.fetch), chunks)
    return steps.compact_index(store, fetched.result())


@flow(name="shards")
def shards(catalog_dir: str, store_root: str, datasets_root: str,
           config: IngestConfig) -> DatasetResult:
    """Plan the version, stage its shards as `scale.shard_parts` concurrent parts, publish."""
    plan = steps.plan_dataset(catalog_dir, store_root, datasets_root, config.shards)
    n = config.scale.shard_parts
    parts = [] if plan.exists else steps.build_dataset_part.map(
        unmapped(plan), unmapped(store_root), [(i, n) for i in range(n)]).result()
    return steps.build_dataset(plan, parts)


@flow(name="ingest")
def ingest(config: IngestConfig) -> IngestResult:
    """Validate the catalog, fetch its posters and build an immutable dataset version."""
    storage = config.storage
    catalog = steps.validate_catalog(config.catalog_csv, storage.path("catalogs"), config.catalog)
    store = storage.path("posters")
    outcomes = fetch.with_options(task_runner=task_runner(config.scale))(
        catalog.out_dir, store, config)
    dataset = shards.with_options(task_runner=task_runner(config.scale))(
        catalog.out_dir, store, storage.path("datasets"), config)
    return IngestResult(catalog.out_dir, catalog.data_docs_index, store, dataset.path, outcomes)
