"""Shards stage: catalog + poster store -> an immutable, checksummed TFRecord dataset version.

`build_dataset` joins the catalog with the poster index, leaves out (and counts, by reason)
posters that were never fetched or whose stored object is gone, names the version by a hash
of its content, and writes per-split shards into a staged folder that is renamed into place.
The build splits into `plan_dataset` (the one read of the catalog and listing of the store;
it persists the plan in the version's staging folder), `write_shard_part` (any number of
disjoint parts, each in its own task or process) and `finalize_dataset`, which both read
that plan; `build_dataset` runs all three.
Its reader is `storage/shard_reader.py`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from storage import fs
from storage.catalog import load_catalog, load_labels
from storage.datasets import (
    DATASET_JSON,
    PLAN,
    PLAN_SCHEMA,
    SPLITS,
    DatasetInfo,
    ShardIntegrityError,
    load_dataset_info,
    read_manifest,
    read_plan,
    shard_name,
    version_id,
    write_dataset_info,
    write_manifest,
    write_plan,
)
from storage.posters import PosterStore
from storage.shard_writer import CorruptedPosterError, ShardJob, write_shards

log = logging.getLogger(__name__)

RECORD_OVERHEAD_BYTES = 160  # Example framing, imdb_id, sha256 hex and TFRecord CRCs
# A writer process costs ~0.2 s of CPU to start (Python, fsspec, its job as JSON), what
# writing ~60 MB of posters costs in process (~46 us per 14 KB poster; BENCHMARKS.md, issue
# 15): with less to write per process, more processes are slower.
CHILD_MIN_BYTES = 64_000_000


class DatasetCheckError(ValueError):
    """The inputs were read but cannot make a dataset (unknown genre, corrupted poster, ...)."""


class ShardConfig(BaseModel):
    """How a dataset version is cut into TFRecord shards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_shard_bytes: int = Field(
        default=100_000_000, ge=1,
        description="Aim for shards of about this many bytes (ignored when records_per_shard "
        "is set). ~100 MB streams well from object storage.",
    )
    records_per_shard: int | None = Field(
        default=None, ge=1, description="Cut shards by record count instead of by size.",
    )
    gzip: bool = Field(
        default=False, description="GZIP-compress shards (.tfrecord.gz). Posters are already "
        "compressed JPEGs, so this mostly costs CPU.",
    )
    seed: int = Field(
        default=0,
        description="Seed of the deterministic spread of records across a split's shards.",
    )

    @property
    def compression(self) -> str:
        """The tf.data compression type: "GZIP" or "" (none)."""
        return "GZIP" if self.gzip else ""


@dataclass(frozen=True)
class DatasetResult:
    """Where a dataset version is and what it holds."""

    version: str
    path: str
    splits: dict[str, int]
    left_out: dict[str, int]
    shards: int
    bytes: int
    created: bool  # False when the version already existed and nothing was written


@dataclass(frozen=True)
class _Plan:
    """Everything that defines a version, computed before any shard is written."""

    rows: pd.DataFrame  # split, shard, imdb_id, sha256, bytes, label_idx (list[int])
    labels: list[str]
    shard_counts: dict[str, int]
    left_out: dict[str, int]
    catalog_hash: str
    config: ShardConfig

    def identity(self) -> dict[str, Any]:
        """The content the version id hashes: rows, labels, source, shard layout."""
        return {
            "labels": self.labels,
            "catalog_hash": self.catalog_hash,
            "left_out": self.left_out,
            "shard_counts": self.shard_counts,
            "seed": self.config.seed,
            "compression": self.config.compression,
            "rows": self.rows_digest(),
        }

    @cached_property
    def version(self) -> str:
        """The version id: a hash of `identity()`."""
        return version_id(self.identity())

    def shards(self) -> list[tuple[str, int, pd.DataFrame]]:
        """(split, shard index, records) of every shard, in global (split, index) order."""
        return [(str(split), int(shard), rows)
                for (split, shard), rows in self.rows.groupby(["split", "shard"], sort=True)]

    def save(self, staging: str) -> None:
        """Persist the plan in the version's staging folder, for the parts and finalize."""
        write_plan(staging, self.rows, {
            "labels": self.labels, "shard_counts": self.shard_counts, "left_out": self.left_out,
            "catalog_hash": self.catalog_hash, "config": self.config.model_dump()})

    @classmethod
    def load(cls, dataset: DatasetPlan) -> _Plan:
        """The plan `plan_dataset` persisted for this version; it must still name the version."""
        rows, about = read_plan(dataset.staging)
        plan = cls(rows, about["labels"], about["shard_counts"], about["left_out"],
                   about["catalog_hash"], ShardConfig(**about["config"]))
        if plan.version != dataset.version:
            raise ValueError(f"{dataset.staging}/{PLAN} plans version {plan.version}, not "
                             f"{dataset.version}: plan the dataset again (plan_dataset)")
        return plan

    def rows_digest(self) -> str:
        """sha256 of every record in shard order: split, imdb_id, poster sha256, labels."""
        columns = (self.rows[c].tolist() for c in ("split", "imdb_id", "sha256", "label_idx"))
        lines = (f"{split},{imdb_id},{sha},{idx}" for split, imdb_id, sha, idx in zip(
            *columns, strict=True))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class DatasetPlan:
    """What a build will write: the version id, its folders and its shard count."""

    version: str
    path: str  # the final version folder
    staging: str  # holds the plan and the staged shards until `finalize_dataset` publishes
    shards: int
    exists: bool  # the version is already complete: nothing to write


@dataclass(frozen=True)
class ShardPart:
    """The manifest rows of the shards one part staged (or found staged)."""

    staging: str
    rows: list[dict[str, Any]]


def build_dataset(
    catalog_dir: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    config: ShardConfig | None = None,
    processes: int | None = None,
) -> DatasetResult:
    """Write (or find) the dataset version of this catalog and store under `out_root`.

    `processes`: shard writer processes (default: one per core with at least
    CHILD_MIN_BYTES of posters each; 1 = in this process).
    """
    plan, planned = _plan_and_save(catalog_dir, store_root, out_root, config)
    if plan.exists:
        log.info("dataset %s already exists at %s: nothing to write", plan.version, plan.path)
        return _result(load_dataset_info(plan.path), created=False)
    try:  # the plan in memory, not read back from staging (~20 us per record)
        rows = _write_shards(plan.staging, planned, PosterStore(store_root), planned.shards(),
                             processes)
    except DatasetCheckError:
        _discard(plan.staging)  # bad inputs fail every rerun the same way: keep nothing
        raise
    return _publish(plan, planned, rows)


def plan_dataset(
    catalog_dir: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    config: ShardConfig | None = None,
) -> DatasetPlan:
    """Name the version these inputs make; unless it exists, persist its plan for the parts."""
    return _plan_and_save(catalog_dir, store_root, out_root, config)[0]


def _plan_and_save(
    catalog_dir: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    config: ShardConfig | None,
) -> tuple[DatasetPlan, _Plan]:
    """`plan_dataset`, also returning the plan it persisted."""
    if not fs.exists(store_root):
        raise FileNotFoundError(f"poster store {store_root!s} does not exist")
    plan = _plan(str(catalog_dir), PosterStore(store_root), config or ShardConfig())
    final = fs.join(out_root, plan.version)
    staging = fs.staging_name(final)
    exists = fs.exists(fs.join(final, DATASET_JSON))
    if not exists:
        plan.save(staging)
    return DatasetPlan(plan.version, final, staging, len(plan.shards()), exists), plan


def write_shard_part(plan: DatasetPlan, store_root: str | os.PathLike[str],
                     part: tuple[int, int] = (0, 1), processes: int | None = None) -> ShardPart:
    """Stage the planned shards whose global index % n == i (part (i, n)); staged ones are kept.

    The shards are written by `processes` child processes (default: one per core with at
    least CHILD_MIN_BYTES of posters each, none on one core; see `storage.shard_writer`),
    each a group of shards of about equal bytes.
    Remote stores or staging folders are written in this process (bound by the network, and
    an in-memory file system is not shared with children).
    """
    index, count = part
    if not 0 <= index < count:
        raise ValueError(f"part must be (i, n) with 0 <= i < n, got {part}")
    if fs.exists(fs.join(plan.path, DATASET_JSON)):
        log.info("dataset %s is already complete: part %s has nothing to write", plan.version, part)
        return ShardPart(plan.staging, [])
    planned, store = _Plan.load(plan), PosterStore(store_root)
    rows = _write_shards(plan.staging, planned, store, planned.shards()[index::count],
                         processes)
    log.info("dataset %s part %s: %d shards staged in %s", plan.version, part, len(rows),
             plan.staging)
    return ShardPart(plan.staging, rows)


def finalize_dataset(plan: DatasetPlan, rows: list[dict[str, Any]]) -> DatasetResult:
    """Publish the staged shards: manifest, then `dataset.json`, then the folder into place."""
    if fs.exists(fs.join(plan.path, DATASET_JSON)):
        return _result(load_dataset_info(plan.path), created=False)
    return _publish(plan, _Plan.load(plan), rows)


def _publish(plan: DatasetPlan, planned: _Plan, rows: list[dict[str, Any]]) -> DatasetResult:
    """`finalize_dataset` with its plan at hand."""
    final, staging = plan.path, plan.staging
    manifest = sorted(rows, key=lambda r: (r["split"], r["index"]))
    _check_staged(staging, planned, manifest)
    if fs.is_local(final):
        local_staging = fs.url_to_fs(staging)[1]
        fs.remove_stale_temps(local_staging)  # shard writes cut off by a kill
        os.unlink(os.path.join(local_staging, PLAN))  # the plan is not part of the version
        write_manifest(staging, manifest)
        write_dataset_info(_info(staging, planned))
        fs.rename_into_place(local_staging, fs.url_to_fs(final)[1], DATASET_JSON)
    else:
        _publish_remote(staging, final, manifest, planned)
    info = load_dataset_info(final)
    log.info("dataset %s written to %s: %s, left out %s", plan.version, final, info.splits,
             info.left_out)
    return _result(info, created=True)


def _plan(catalog_dir: str, store: PosterStore, config: ShardConfig) -> _Plan:
    """Join catalog and poster index, count what is left out, assign records to shards."""
    catalog, labels = _read_catalog(catalog_dir)
    index = store.read_index()[["imdb_id", "sha256", "bytes"]]
    rows = catalog.merge(index, on="imdb_id", how="left", validate="many_to_one")
    fetched = rows["sha256"].notna()
    stored = store.stored_hashes()
    present = fetched & rows["sha256"].map(stored.__contains__)  # isin: 0.2 s on 5k rows
    left_out = {"not_fetched": int((~fetched).sum()),
                "missing_object": int((fetched & ~present).sum())}
    for reason, n in left_out.items():
        if n:
            log.warning("left out %d catalog rows: %s", n, reason)
    rows = rows[present].copy()
    if rows.empty:
        raise DatasetCheckError(f"no catalog row of {catalog_dir} has a poster in {store.root}: "
                                f"left out {left_out}")
    rows["bytes"] = rows["bytes"].astype("int64")
    rows["label_idx"] = _label_indices(rows, labels, catalog_dir)
    rows["spread"] = [_spread_key(config.seed, i, s)  # lists: iterating Series costs more
                      for i, s in zip(rows["imdb_id"].tolist(), rows["sha256"].tolist(),
                                      strict=True)]
    rows = rows.sort_values(["split", "spread"], ignore_index=True)
    counts = {split: _shard_count(rows[rows["split"] == split], config) for split in SPLITS}
    rows["shard"] = rows.groupby("split").cumcount() % rows["split"].map(counts).clip(lower=1)
    return _Plan(rows[list(PLAN_SCHEMA.names)], labels, counts, left_out,
                 Path(catalog_dir.rstrip("/")).name, config)


def _read_catalog(catalog_dir: str) -> tuple[pd.DataFrame, list[str]]:
    """The catalog rows and the label order, through the catalog stage's own readers."""
    catalog = load_catalog(catalog_dir)
    unknown = sorted(set(catalog["split"]) - set(SPLITS))
    if unknown:
        raise DatasetCheckError(f"{catalog_dir}/catalog.parquet: split must be one of {SPLITS}, "
                                f"found {unknown}")
    return catalog, load_labels(catalog_dir)


def _label_indices(rows: pd.DataFrame, labels: list[str], catalog_dir: str) -> list[list[int]]:
    """Each row's genres as sorted positions in `labels`; unknown genres are an error."""
    position = {name: i for i, name in enumerate(labels)}
    out = []
    for row_number, genres in zip(rows["row_number"].tolist(), rows["genres"].tolist(),
                                  strict=True):
        try:
            idx = [position[g] for g in genres]
        except KeyError:
            missing = [g for g in genres if g not in position]
            raise DatasetCheckError(f"{catalog_dir}/catalog.parquet row {row_number}: genres "
                                    f"{missing} are not in labels.json {labels}") from None
        idx.sort()
        out.append(idx)
    return out


def _spread_key(seed: int, imdb_id: int, sha256: str) -> str:
    """A seeded pseudo-random sort key that mixes records across shards, reproducibly."""
    return hashlib.sha256(f"{seed}:{imdb_id}:{sha256}".encode()).hexdigest()


def _shard_count(rows: pd.DataFrame, config: ShardConfig) -> int:
    """Shards for one split: by records_per_shard, else by the target size (0 when empty)."""
    if rows.empty:
        return 0
    if config.records_per_shard:
        return math.ceil(len(rows) / config.records_per_shard)
    estimate = int(rows["bytes"].sum()) + RECORD_OVERHEAD_BYTES * len(rows)
    return max(1, math.ceil(estimate / config.target_shard_bytes))


def _write_shards(staging: str, plan: _Plan, store: PosterStore,
                  shards: list[tuple[str, int, pd.DataFrame]],
                  processes: int | None) -> list[dict[str, Any]]:
    """Stage the shards not staged yet (each atomically); return every shard's manifest row."""
    names = [shard_name(split, shard, plan.shard_counts[split], plan.config.compression)
             for split, shard, _ in shards]
    fsys, path = fs.url_to_fs(staging)
    staged = {p.rsplit("/", 1)[-1] for p in fsys.ls(path, detail=False)} \
        if fsys.isdir(path) else set()
    todo = [(name, rows) for name, (_, _, rows) in zip(names, shards, strict=True)
            if name not in staged]
    jobs = [_job(fs.join(staging, name), rows, store, plan) for name, rows in todo]
    try:
        local = fs.is_local(staging) and fs.is_local(store.root)
        weights = [int(rows["bytes"].sum()) for _, rows in todo]
        written = write_shards(jobs, _processes(processes, weights) if local else 1, weights)
    except CorruptedPosterError as err:
        raise DatasetCheckError(str(err)) from None
    files = {name: (shard.bytes, shard.sha256)
             for (name, _), shard in zip(todo, written, strict=True)}
    for name in set(names) - set(files):
        log.debug("%s already staged: kept", name)
        url = fs.join(staging, name)
        files[name] = (int(fsys.size(fs.url_to_fs(url)[1])), fs.sha256_file(url))
    return [{"shard": name, "split": split, "index": shard, "count": plan.shard_counts[split],
             "records": len(rows), "bytes": files[name][0], "sha256": files[name][1],
             "label_counts": _label_counts(rows["label_idx"], len(plan.labels))}
            for name, (split, shard, rows) in zip(names, shards, strict=True)]


def _job(url: str, rows: pd.DataFrame, store: PosterStore, plan: _Plan) -> ShardJob:
    """What the shard writer needs for one shard: its records' fields and store objects."""
    shas = rows["sha256"].tolist()
    return ShardJob(url=url, posters=[store.path(sha) for sha in shas],
                    imdb_ids=[int(i) for i in rows["imdb_id"]], sha256s=shas,
                    label_idx=[[int(i) for i in idx] for idx in rows["label_idx"]],
                    n_labels=len(plan.labels), compression=plan.config.compression)


def _processes(asked: int | None, weights: list[int]) -> int:
    """Writer processes: as asked, else one per core (none on one core) but at least
    CHILD_MIN_BYTES of posters each, and never more than there are shards to write."""
    by_size = sum(weights) // CHILD_MIN_BYTES
    wanted = asked if asked is not None else min(os.cpu_count() or 1, by_size)
    return max(1, min(wanted, len(weights)))


def _label_counts(label_idx: pd.Series, n_labels: int) -> list[int]:
    """Movies per label in one shard, in label order."""
    counts = [0] * n_labels  # plain ints: numpy's fancy indexing costs ~10 us per row
    for idx in label_idx:
        for i in set(idx):  # a genre listed twice counts once, as in the multi-hot vector
            counts[i] += 1
    return counts


def _check_staged(staging: str, plan: _Plan, manifest: list[dict[str, Any]]) -> None:
    """Refuse to publish unless every planned shard was written by some part and is staged."""
    fsys, path = fs.url_to_fs(staging)
    listing = fsys.ls(path, detail=False) if fsys.isdir(path) else []
    staged = {p.rsplit("/", 1)[-1] for p in listing}
    reported = {r["shard"] for r in manifest}
    planned = [shard_name(split, shard, plan.shard_counts[split], plan.config.compression)
               for split, shard, _ in plan.shards()]
    missing = [name for name in planned if name not in reported or name not in staged]
    if missing:
        raise ShardIntegrityError(
            f"cannot publish dataset {plan.version}: {len(missing)} of {len(planned)} shards "
            f"not staged in {staging} (first: {', '.join(missing[:5])}); run every part "
            f"(write_shard_part) before finalize_dataset")


def _discard(staging: str) -> None:
    """Delete a staging folder and everything staged in it."""
    fsys, path = fs.url_to_fs(staging)
    if fsys.exists(path):
        fsys.rm(path, recursive=True)


def _publish_remote(staging: str, final: str, manifest: list[dict[str, Any]],
                    plan: _Plan) -> None:
    """Copy staged shards to a remote version folder, `dataset.json` last, then drop staging."""
    fsys, remote = fs.url_to_fs(final)
    for row in manifest:
        fsys.copy(fs.url_to_fs(fs.join(staging, row["shard"]))[1], f"{remote}/{row['shard']}")
    write_manifest(final, manifest)
    write_dataset_info(_info(final, plan))
    _discard(staging)


def _info(path: str, plan: _Plan) -> DatasetInfo:
    """The dataset.json content of a freshly written version."""
    return DatasetInfo(
        path=path, version=plan.version, labels=plan.labels,
        splits={s: int((plan.rows["split"] == s).sum()) for s in SPLITS},
        left_out=plan.left_out, catalog_hash=plan.catalog_hash,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        compression=plan.config.compression,
        shard_config=plan.config.model_dump(),
    )


def _result(info: DatasetInfo, created: bool) -> DatasetResult:
    """Summarize a version for the caller (and the Prefect UI)."""
    manifest = read_manifest(info.path)
    return DatasetResult(
        version=info.version, path=info.path, splits=info.splits, left_out=info.left_out,
        shards=len(manifest), bytes=int(manifest["bytes"].sum()), created=created,
    )

