"""Dataset versions on disk: shard names, `manifest.parquet`, `dataset.json`, version ids.

A dataset version is an immutable folder `<root>/<version>/` holding TFRecord shards, a
manifest (one row per shard: split, index, count, records, bytes, sha256, label counts) and
`dataset.json` (the version's identity card). The version id is a hash of everything that
defines the content, so the same inputs always name the same folder. `dataset.json` is
written last: a folder without it is not a dataset. While a version is being built, its
hidden staging folder also holds `plan.parquet` (what the parts write), never published.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storage import fs

MANIFEST = "manifest.parquet"
DATASET_JSON = "dataset.json"
PLAN = "plan.parquet"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
VERSION_CHARS = 16

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),  # file name inside the version folder
        pa.field("split", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),  # shards in this split
        pa.field("records", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("label_counts", pa.list_(pa.int64()), nullable=False),  # dataset.json label order
    ]
)


PLAN_SCHEMA = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),
        pa.field("shard", pa.int64(), nullable=False),  # index within the split
        pa.field("imdb_id", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # the poster's store object
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("label_idx", pa.list_(pa.int64()), nullable=False),  # positions in the labels
    ]
)
PLAN_METADATA = b"posterflow.plan"


class ShardIntegrityError(ValueError):
    """A shard listed in the manifest is missing or its bytes do not match its sha256."""


@dataclass(frozen=True)
class DatasetInfo:
    """The content of `dataset.json`, plus where the version lives."""

    path: str
    version: str
    labels: list[str]
    splits: dict[str, int]
    left_out: dict[str, int]
    catalog_hash: str
    created_at: str
    compression: str  # "" (none) or "GZIP", as tf.data expects it
    shard_config: dict[str, Any]
    format_version: int = FORMAT_VERSION


def version_id(identity: Mapping[str, Any]) -> str:
    """Content hash naming a dataset version: same identity, same id."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:VERSION_CHARS]


def shard_name(split: str, index: int, count: int, compression: str) -> str:
    """`train-00003-of-00012.tfrecord` (`.tfrecord.gz` when GZIP-compressed)."""
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    return f"{split}-{index:05d}-of-{count:05d}{suffix}"


def write_manifest(dataset_dir: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Write the one-row-per-shard manifest atomically."""
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    fs.atomic_write_parquet(fs.join(dataset_dir, MANIFEST), table)


def read_manifest(dataset_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The manifest, sorted by split and shard index."""
    return parse_manifest(fs.read_bytes(fs.join(dataset_dir, MANIFEST)))


def parse_manifest(data: bytes) -> pd.DataFrame:
    """A manifest's Parquet bytes as a frame sorted by split and shard index."""
    frame = pq.read_table(pa.BufferReader(data), schema=MANIFEST_SCHEMA).to_pandas()
    return frame.sort_values(["split", "index"], ignore_index=True)


def write_dataset_info(info: DatasetInfo) -> None:
    """Write `dataset.json` (last, it marks the version complete)."""
    body = {k: v for k, v in asdict(info).items() if k != "path"}
    fs.atomic_write_json(fs.join(info.path, DATASET_JSON), body)


def write_plan(staging: str | os.PathLike[str], rows: pd.DataFrame,
               about: Mapping[str, Any]) -> None:
    """Write a build's plan: its records in shard order, and `about` (JSON) as metadata."""
    table = pa.Table.from_pandas(rows[PLAN_SCHEMA.names], schema=PLAN_SCHEMA,
                                 preserve_index=False)
    metadata = {PLAN_METADATA: json.dumps(about, sort_keys=True).encode("utf-8")}
    fs.atomic_write_parquet(fs.join(staging, PLAN), table.replace_schema_metadata(metadata))


def read_plan(staging: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The records and `about` of a build's plan; the error says to plan first when absent."""
    url = fs.join(staging, PLAN)
    if not fs.exists(url):
        raise FileNotFoundError(f"{url} does not exist: plan the dataset (plan_dataset) "
                                f"before writing or publishing its shards")
    fsys, path = fs.url_to_fs(url)
    with fsys.open(path, "rb") as f:
        table = pq.read_table(f)
    about = json.loads((table.schema.metadata or {})[PLAN_METADATA])
    rows = table.select(PLAN_SCHEMA.names).cast(PLAN_SCHEMA).to_pandas()
    rows["label_idx"] = table.column("label_idx").to_pylist()  # lists, as the plan made them
    return rows, about


def load_dataset_info(dataset_dir: str | os.PathLike[str]) -> DatasetInfo:
    """Read `dataset.json`; the error names the folder when it is not a complete version."""
    url = fs.join(dataset_dir, DATASET_JSON)
    if not fs.exists(url):
        raise FileNotFoundError(f"{dataset_dir!s} is not a dataset version: {DATASET_JSON} missing")
    body = fs.read_json(url)
    if body.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{url}: expected format_version {FORMAT_VERSION}, found {body.get('format_version')!r}"
        )
    return DatasetInfo(path=str(dataset_dir).rstrip("/"), **body)


def verify_shard(dataset_dir: str | os.PathLike[str], shard: str, size: int, sha256: str) -> None:
    """Raise ShardIntegrityError naming the shard unless its size and sha256 match."""
    url = fs.join(dataset_dir, shard)
    fsys, path = fs.url_to_fs(url)
    if not fsys.exists(path):
        raise ShardIntegrityError(f"shard {shard} listed in {MANIFEST} is missing: {url}")
    found_size = fsys.size(path)
    if found_size != size:
        raise ShardIntegrityError(f"shard {url} is corrupted: {size} bytes expected, "
                                  f"{found_size} found")
    found = fs.sha256_file(url)
    if found != sha256:
        raise ShardIntegrityError(f"shard {url} is corrupted: sha256 {sha256} expected, "
                                  f"{found} found")
