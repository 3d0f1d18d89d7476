"""Scored predictions, versioned by dataset and model: `<root>/<dataset version>/<model>-v<N>/`.

The folder holds `part-<i>.parquet` (one per scoring task, each written atomically) and
`_scores.json`, created last and only if absent (`storage.fs.create_exclusive`): a folder
without it is a killed run's and is not read; one with it is complete and never rewritten.
Parts are deterministic, so two overlapping runs write the same bytes and one marker wins.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from storage.fs import atomic_write_parquet, create_exclusive, exists, join, read_json, url_to_fs

if TYPE_CHECKING:
    import pyarrow as pa

SCORES_JSON = "_scores.json"  # "_": pyarrow and Spark skip it when reading the folder


class IncompleteScoresError(FileNotFoundError):
    """A scores folder without its `_scores.json`: the run that wrote it did not finish."""


def scores_dir(scores_root: str, dataset_version: str, model: str, version: int) -> str:
    """Where one model version's scores of one dataset version go."""
    return join(scores_root, dataset_version, f"{model}-v{version}")


def part_path(out_dir: str, part: int) -> str:
    return join(out_dir, f"part-{part:05d}.parquet")


def write_part(out_dir: str, part: int, table: pa.Table) -> str:
    """Store one part atomically; return its path."""
    path = part_path(out_dir, part)
    atomic_write_parquet(path, table)
    return path


def publish_scores(out_dir: str, facts: dict[str, Any]) -> bool:
    """Mark the folder complete with its facts; False when another run marked it first."""
    return create_exclusive(join(out_dir, SCORES_JSON),
                            json.dumps(facts, indent=2, sort_keys=True).encode())


def read_facts(out_dir: str) -> dict[str, Any] | None:
    """The folder's `_scores.json`, or None while it is incomplete."""
    marker = join(out_dir, SCORES_JSON)
    return read_json(marker) if exists(marker) else None


def read_scores(out_dir: str) -> pa.Table:
    """Every part of a complete scores folder, in part order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    facts = read_facts(out_dir)
    if facts is None:
        raise IncompleteScoresError(f"{out_dir} has no {SCORES_JSON}: its run did not finish")
    fs, _ = url_to_fs(out_dir)
    tables = []
    for part in range(int(facts["parts"])):
        with fs.open(url_to_fs(part_path(out_dir, part))[1], "rb") as f:
            tables.append(pq.read_table(f))
    return pa.concat_tables(tables)
