"""The one reader of dataset shards: a version's records back through tf.data, verified first.

The shards are written by the shards stage (`tasks/shards.py`) with the feature spec of
`storage/records.py`. Each shard's size and sha256 are checked against the manifest before
a byte is parsed (`verify=False` skips), then a split's shards are read with a parallel,
ordered interleave. `read_records` gives parsed records in a fixed order, `split_labels` a
split's poster hashes and labels; `read_examples` gives the serialized ones, optionally
shuffled, for input pipelines that decode them.

A version on an object store (TensorFlow cannot open s3:// or memory://) is read from this
machine's copy in `storage.local_cache`, keyed by the manifest's sha256: its shards are
verified once, on arrival, and reused by every later reader and run.

A stage reads a split several times (labels, then features or images, then report samples):
inside `verify_once()`, which the train stage's functions open (so once per Prefect task,
once per `posterflow train`), a shard is hashed the first time it is read only.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from storage import fs
from storage.datasets import (
    DATASET_JSON,
    MANIFEST,
    DatasetInfo,
    load_dataset_info,
    parse_manifest,
    read_manifest,
    verify_shard,
)
from storage.local_cache import Expected, local_copy, needs_local_copy
from storage.records import parse

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

SHUFFLE_BUFFER = 4096  # records (encoded posters, ~15 kB each) held for shuffling
VERIFY_THREADS = 4
# (folder, shard, sha256) of the shards verified in the current `verify_once` block
_VERIFIED: contextvars.ContextVar[set[tuple[str, str, str]] | None] = contextvars.ContextVar(
    "posterflow_verified_shards", default=None)


@contextlib.contextmanager
def verify_once() -> Iterator[None]:
    """Within the block, each shard is verified the first time it is read, not on every read.

    Nested blocks share the outermost one's record. Outside any block every read verifies.
    """
    if _VERIFIED.get() is not None:
        yield
        return
    token = _VERIFIED.set(set())
    try:
        yield
    finally:
        _VERIFIED.reset(token)


def _verify_shards(dataset_dir: str, manifest: pd.DataFrame) -> None:
    """Check the shards in these manifest rows not yet verified in this `verify_once` block.

    Each check runs in a copy of the caller's context (its Prefect run, for logs); the error
    names the first bad shard.
    """
    verified = _VERIFIED.get()
    rows = [r for r in manifest.itertuples(index=False)
            if verified is None or (dataset_dir, r.shard, r.sha256) not in verified]
    with ThreadPoolExecutor(VERIFY_THREADS) as pool:
        checks = [pool.submit(contextvars.copy_context().run, verify_shard, dataset_dir,
                              r.shard, r.bytes, r.sha256) for r in rows]
        for check in checks:
            check.result()
    if verified is not None:
        verified.update((dataset_dir, r.shard, r.sha256) for r in rows)


def readable_copy(dataset_dir: str) -> tuple[str, bool]:
    """(a folder TensorFlow can read holding the version, whether its shards are verified).

    A local version is itself (not yet verified); a remote one is this machine's cached copy,
    downloaded and verified once per manifest sha256.
    """
    if not needs_local_copy(dataset_dir):
        return dataset_dir, False
    listing = {name: fs.read_bytes(fs.join(dataset_dir, name)) for name in (MANIFEST, DATASET_JSON)}
    manifest = parse_manifest(listing[MANIFEST])
    files = {r.shard: Expected(int(r.bytes), str(r.sha256))
             for r in manifest.itertuples(index=False)}
    key = fs.sha256_bytes(listing[MANIFEST])
    return str(local_copy("datasets", key, dataset_dir, files, listing)), True


def _shard_files(dataset_dir: str, split: str, verify: bool) -> tuple[list[str], DatasetInfo]:
    """The shard paths of a split, in index order, verified first when asked."""
    info = load_dataset_info(dataset_dir)
    if split not in info.splits:
        raise ValueError(f"dataset {dataset_dir} has splits {sorted(info.splits)}, not {split!r}")
    folder, verified = readable_copy(dataset_dir)
    manifest = read_manifest(folder)
    manifest = manifest[manifest["split"] == split]
    if verify and not verified:
        _verify_shards(folder, manifest)
    return [fs.join(folder, s) for s in manifest["shard"]], info


def _serialized(paths: list[str], compression: str, shuffle_seed: int | None,
                shuffle: bool) -> tf.data.Dataset:
    """Serialized examples from the shards, read with a parallel, ordered interleave."""
    import tensorflow as tf

    files = tf.data.Dataset.from_tensor_slices(tf.constant(paths, dtype=tf.string))
    if shuffle:
        files = files.shuffle(max(1, len(paths)), seed=shuffle_seed)
    return files.interleave(
        lambda p: tf.data.TFRecordDataset(p, compression),
        cycle_length=max(1, min(len(paths), 8)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def read_examples(dataset_dir: str | os.PathLike[str], split: str,
                  shuffle_seed: int | None = None, shuffle: bool = False,
                  verify: bool = True) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Serialized examples of a split and the version's `dataset.json`.

    In shard order, or shuffled (shards, then records in a buffer) when `shuffle` is set;
    with a `shuffle_seed` the order of every epoch is reproducible.
    """
    paths, info = _shard_files(str(dataset_dir), split, verify)
    examples = _serialized(paths, info.compression, shuffle_seed, shuffle)
    if shuffle:
        examples = examples.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed)
    return examples, info


def read_records(dataset_dir: str | os.PathLike[str], split: str,
                 verify: bool = True) -> tf.data.Dataset:
    """Parsed records {imdb_id, image (encoded), sha256, labels} of a split, in fixed order."""
    import tensorflow as tf

    examples, info = read_examples(dataset_dir, split, verify=verify)
    n_labels = len(info.labels)
    return examples.map(lambda s: parse(s, n_labels), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)


def split_labels(dataset_dir: str, split: str) -> tuple[list[str], np.ndarray]:
    """(sha256 list, labels float32 [n, labels]) of a split, in the records' order."""
    shas, labels = [], []
    for sha256, row in read_records(dataset_dir, split).map(
            lambda r: (r["sha256"], r["labels"])).as_numpy_iterator():
        shas.append(sha256.decode())
        labels.append(row)
    return shas, np.asarray(labels, np.float32).reshape(len(labels), -1)
