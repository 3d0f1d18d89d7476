"""The catalog stage's on-disk formats: one writer and one reader for each file it makes.

A catalog folder (`catalogs/<catalog-hash>/`) holds:

- `catalog.parquet`: the accepted movies, one row each (`row_number`, `imdb_id`, `genres`,
  `poster_url`, `split`, `title`, `score`, `imdb_link`, then any extra source columns);
- `rejects.parquet`: every other row read, with its `reasons`, a human `detail`, the
  `line_number` where it starts and the text of each field (stripped; empty -> null;
  surplus fields in `extra_fields`). `row_number` (1-based data record) ties both files
  back to the source;
- `labels.json`: the kept genre vocabulary (`labels`, sorted: the label order everywhere
  downstream), with per-genre movie counts and what was dropped;
- `summary.json`: the accounting (`rows_read = accepted + rejected`), written last, so its
  presence marks a complete folder;
- `data_docs/`: the Great Expectations HTML report (`data_docs/index.html`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from storage import fs

CATALOG = "catalog.parquet"
REJECTS = "rejects.parquet"
LABELS = "labels.json"
SUMMARY = "summary.json"
DATA_DOCS = "data_docs"

# Bump when the meaning of any file above changes: old catalog hashes then stop matching.
FORMAT_VERSION = 1

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("row_number", pa.int64(), nullable=False),
        pa.field("imdb_id", pa.int64(), nullable=False),
        pa.field("genres", pa.list_(pa.string()), nullable=False),
        pa.field("poster_url", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("imdb_link", pa.string()),
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        pa.field("row_number", pa.int64(), nullable=False),
        pa.field("line_number", pa.int64(), nullable=False),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("extra_fields", pa.list_(pa.string())),
    ]
)


@dataclass(frozen=True)
class LabelVocabulary:
    """The kept genres (sorted: the label order downstream) and how they were chosen."""

    labels: list[str]
    counts: dict[str, int]
    dropped: dict[str, int]
    min_count: int
    movies: int


def _with_extras(df: pd.DataFrame, fixed: pa.Schema) -> pa.Table:
    """Arrow table with `fixed` columns typed exactly, then any extra columns as strings."""
    extras = [c for c in df.columns if c not in fixed.names]
    schema = pa.schema([*fixed, *(pa.field(c, pa.string()) for c in extras)])
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)


def write_catalog(out_dir: str | os.PathLike[str], df: pd.DataFrame) -> str:
    """Write the accepted movies as `catalog.parquet` (fixed columns first, extras after)."""
    path = fs.join(out_dir, CATALOG)
    fs.atomic_write_parquet(path, _with_extras(df, CATALOG_SCHEMA))
    return path


def load_catalog(catalog_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read `catalog.parquet` (genres as lists of str)."""
    return _read_parquet(fs.join(catalog_dir, CATALOG))


def write_rejects(out_dir: str | os.PathLike[str], df: pd.DataFrame) -> str:
    """Write the rejected rows (reasons, detail, raw field text) as `rejects.parquet`."""
    path = fs.join(out_dir, REJECTS)
    fs.atomic_write_parquet(path, _with_extras(df, REJECTS_SCHEMA))
    return path


def load_rejects(catalog_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read `rejects.parquet`."""
    return _read_parquet(fs.join(catalog_dir, REJECTS))


def _read_parquet(url: str) -> pd.DataFrame:
    """Read one Parquet file from a local path or fsspec URL, list columns as Python lists."""
    import pyarrow.parquet as pq

    filesystem, path = fs.url_to_fs(url)
    with filesystem.open(path, "rb") as f:
        table = pq.read_table(f)
    df = table.to_pandas()
    for field in table.schema:
        if pa.types.is_list(field.type):
            df[field.name] = pd.Series(table.column(field.name).to_pylist(), dtype=object)
    return df


def write_labels(out_dir: str | os.PathLike[str], vocab: LabelVocabulary) -> str:
    """Write the kept vocabulary as `labels.json`."""
    path = fs.join(out_dir, LABELS)
    fs.atomic_write_json(
        path,
        {
            "labels": vocab.labels,
            "counts": vocab.counts,
            "dropped": vocab.dropped,
            "min_count": vocab.min_count,
            "movies": vocab.movies,
        },
    )
    return path


def load_vocabulary(catalog_dir: str | os.PathLike[str]) -> LabelVocabulary:
    """Read `labels.json`."""
    raw = fs.read_json(fs.join(catalog_dir, LABELS))
    return LabelVocabulary(
        labels=list(raw["labels"]),
        counts={k: int(v) for k, v in raw["counts"].items()},
        dropped={k: int(v) for k, v in raw["dropped"].items()},
        min_count=int(raw["min_count"]),
        movies=int(raw["movies"]),
    )


def load_labels(catalog_dir: str | os.PathLike[str]) -> list[str]:
    """The kept genre names in label order (the order of every multi-hot vector downstream)."""
    return load_vocabulary(catalog_dir).labels


def write_summary(out_dir: str | os.PathLike[str], summary: Mapping[str, Any]) -> str:
    """Write `summary.json`; callers write it last, as the folder's completion marker."""
    path = fs.join(out_dir, SUMMARY)
    fs.atomic_write_json(path, dict(summary))
    return path


def remove_summary(out_dir: str | os.PathLike[str]) -> None:
    """Unmark a folder as complete before rewriting it (a crash then leaves no stale marker)."""
    filesystem, path = fs.url_to_fs(fs.join(out_dir, SUMMARY))
    if filesystem.exists(path):
        filesystem.rm(path)


def load_summary(catalog_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read `summary.json`."""
    return dict(fs.read_json(fs.join(catalog_dir, SUMMARY)))


def catalog_hash(source_sha256: str, params: Mapping[str, Any]) -> str:
    """Content id of a catalog folder: the source bytes' hash, the stage parameters, the format."""
    key = json.dumps(
        {"source": source_sha256, "params": params, "format": FORMAT_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]
