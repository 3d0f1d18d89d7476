"""Prefect tasks of the ingest stages: validate the catalog, fetch posters, build shards.

Each task calls one stage function from `tasks/` and passes only paths, content hashes
and small result dataclasses across task boundaries. Cached tasks key on their inputs'
content (`flows.caching.StageCache`) and persist their small results, so a rerun after a
crash skips every finished stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from flows.artifacts import progress_publisher, publish_fetch_outcomes, publish_validation
from flows.caching import IO_RETRIES, StageCache, file_digest, missing_outputs
from storage.fs import join

if TYPE_CHECKING:
    from storage.leases import Lease
    from tasks.catalog import CatalogConfig, CatalogResult
    from tasks.fetch import FetchConfig, FetchResult
    from tasks.shards import DatasetPlan, DatasetResult, ShardConfig, ShardPart

TRANSIENT_FETCH_OUTCOMES = ("http_5xx", "timeout", "connection_error", "truncated")


# --- catalog -----------------------------------------------------------------------------


@task(name="validate-catalog", persist_result=True,
      cache_policy=StageCache(content={"csv_path": file_digest},
                              stale=missing_outputs(lambda r: [r.out_dir])))
def validate_catalog_csv(csv_path: str, catalogs_root: str,
                         config: CatalogConfig) -> CatalogResult:
    """Validate the catalog CSV into `catalogs/<catalog-hash>/` and publish the results table.

    A catalog that fails a check (reject rate over tolerance, no label kept) fails the task
    after its table and Data Docs are published: deterministic, so never retried.
    """
    from tasks import catalog

    result = catalog.validate_catalog(
        csv_path, catalog.catalog_dir(catalogs_root, csv_path, config), config)
    get_run_logger().info("catalog %s: %s", result.out_dir, _headline(result.summary))
    publish_validation(csv_path, result)
    return result.check()


def _headline(summary: dict[str, Any]) -> str:
    """The headline numbers of a catalog summary (one short log line)."""
    keys = ("rows_read", "accepted", "rejected", "split_sizes")
    numbers = [f"{k}={summary[k]}" for k in keys if k in summary]
    return ", ".join([*numbers, f"{len(summary.get('labels', []))} labels"])


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    """Outcome counts without the zeros (a log line a person can read)."""
    return {outcome: n for outcome, n in counts.items() if n}


# --- fetch -------------------------------------------------------------------------------


def _fetch_stale(result: FetchResult) -> str | None:
    """A fetch chunk is redone when its report is gone or some posters failed transiently."""
    outcomes = result.summary.get("outcomes", {})
    transient = sum(outcomes.get(o, 0) for o in TRANSIENT_FETCH_OUTCOMES)
    if transient:
        return f"{transient} posters failed transiently last time"
    return missing_outputs(lambda r: [r.report_path])(result)


@task(name="prepare-store", **IO_RETRIES)
def prepare_store(store_root: str, config: FetchConfig) -> Lease:
    """Take the store's lease for this flow run, then remove temp files of killed runs.

    Another run holding the store fails this task (StoreBusy) after `config.lease_wait_s`;
    the retries wait for it longer. The chunks renew the lease, `compact_index` releases it.
    """
    from storage import leases
    from storage.posters import PosterStore

    lease = leases.acquire(store_root, "fetch", wait_s=config.lease_wait_s,
                           flow_run_id=flow_run.id)
    removed = PosterStore(store_root).remove_stale_temps(lease)
    get_run_logger().info("poster store %s: %d stale temp files removed", store_root, removed)
    return lease


@task(name="fetch-posters", task_run_name="fetch-posters-{chunk[0]}-of-{chunk[1]}",
      persist_result=True, cache_policy=StageCache(stale=_fetch_stale, ignore=("lease",)),
      **IO_RETRIES)
def fetch_chunk(catalog_dir: str, store_root: str, config: FetchConfig,
                chunk: tuple[int, int], lease: Lease) -> FetchResult:
    """Fetch one chunk of the catalog's posters under the flow's lease, publishing progress."""
    from tasks.fetch import fetch_posters

    result = fetch_posters(catalog_dir, store_root, config, chunk=chunk, lease=lease,
                           on_progress=progress_publisher(f"Posters fetched, chunk {chunk[0]}"))
    get_run_logger().info("fetch chunk %s: %s", chunk, _nonzero(result.summary.get("outcomes", {})))
    return result


@task(name="compact-index", **IO_RETRIES)
def compact_index(store_root: str, fetched: list[FetchResult], lease: Lease) -> dict[str, Any]:
    """Fold the chunks' index parts into index.parquet under the lease, release it, and sum."""
    from storage import leases
    from storage.posters import PosterStore

    PosterStore(store_root).compact_index(lease)
    leases.release(lease)
    totals: dict[str, int] = {}
    for result in fetched:
        for outcome, n in result.summary.get("outcomes", {}).items():
            totals[outcome] = totals.get(outcome, 0) + n
    get_run_logger().info("fetch outcomes over %d chunks: %s", len(fetched), _nonzero(totals))
    publish_fetch_outcomes(totals)
    return totals


# --- shards ------------------------------------------------------------------------------


@task(name="plan-dataset")
def plan_dataset_version(catalog_dir: str, store_root: str, datasets_root: str,
                         config: ShardConfig) -> DatasetPlan:
    """Name the dataset version of these inputs (uncached: it says whether it still exists)."""
    from tasks import shards

    plan = shards.plan_dataset(catalog_dir, store_root, datasets_root, config)
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


@task(name="publish-dataset", persist_result=True,
      cache_policy=StageCache(content={"plan": _dataset_path},
                              stale=missing_outputs(lambda r: [r.path]), ignore=("parts",)))
def publish_dataset(plan: DatasetPlan, parts: list[ShardPart]) -> DatasetResult:
    """Publish (or find) the immutable dataset version from its staged parts."""
    from tasks.shards import finalize_dataset

    result = finalize_dataset(plan, [row for part in parts for row in part.rows])
    get_run_logger().info("dataset %s (%s): splits %s, left out %s", result.version,
                          "written" if result.created else "already there", result.splits,
                          result.left_out)
    return result
