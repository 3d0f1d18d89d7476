"""Fixtures for the model stage: a tiny learnable dataset and the stand-in backbone.

The dataset is written with the real shard format (storage.records + storage.datasets), so
the model stage is tested against the contract without running the upstream stages.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from storage import datasets, fs
from storage.records import PosterRecord, serialize

LABELS = ["Action", "Comedy", "Drama"]
COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 40, 230]], np.float32)


def poster_bytes(labels: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (24, 36)
                 ) -> bytes:
    """A small JPEG whose colour carries its labels (learnable), with noise (unique bytes)."""
    base = 30 + labels @ COLOURS / max(1.0, labels.sum())
    pixels = base + rng.normal(0, 20, (size[1], size[0], 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tiny_split(seed: int, split: str, n: int) -> list[PosterRecord]:
    """`n` records of a split; the first k records are the same for any n >= k."""
    rng = np.random.default_rng([seed, ["train", "val", "test"].index(split)])
    records = []
    for i in range(n):
        y = (rng.random(len(LABELS)) < 0.4).astype(np.float32)
        if not y.any():
            y[rng.integers(0, len(LABELS))] = 1.0
        image = poster_bytes(y, rng)
        records.append(PosterRecord(10_000 * (seed + 1) + 1000 * len(split) + i, image,
                                    fs.sha256_bytes(image), y))
    return records


def write_tiny_dataset(root: Path, sizes: dict[str, int] | None = None, seed: int = 0,
                       version: str = "tiny0000") -> Path:
    """A complete dataset version folder (one shard per split) of learnable tiny posters."""
    sizes = sizes or {"train": 48, "val": 24, "test": 24}
    return write_records(root / version, LABELS,
                         {split: tiny_split(seed, split, n) for split, n in sizes.items()})


def write_painted_dataset(root: Path, sizes: dict[str, int], seed: int = 0,
                          version: str = "painted0") -> tuple[Path, list[str]]:
    """A dataset version of the demo's painted posters (`tasks.demo`), one shard per split."""
    import random

    from tasks.demo import GENRE_STYLES, render_poster

    labels = sorted(GENRE_STYLES)
    rng = random.Random(seed)
    splits: dict[str, list[PosterRecord]] = {}
    for s, (split, n) in enumerate(sizes.items()):
        splits[split] = []
        for i in range(n):
            genres = rng.sample(labels, k=rng.choice([1, 1, 2, 2, 3]))
            image = render_poster(genres, seed=rng.randrange(1 << 30))
            y = np.array([g in genres for g in labels], np.float32)
            splits[split].append(PosterRecord(100_000 * (s + 1) + i, image,
                                              fs.sha256_bytes(image), y))
    return write_records(root / version, labels, splits), labels


def write_records(out: Path, labels: list[str], splits: dict[str, list[PosterRecord]]) -> Path:
    """A dataset version folder holding these records, one shard per split."""
    out.mkdir(parents=True)
    rows = []
    for split, records in splits.items():
        name = datasets.shard_name(split, 0, 1, "")
        with tf.io.TFRecordWriter(str(out / name)) as writer:
            for record in records:
                writer.write(serialize(record))
        payload = (out / name).read_bytes()
        counts = np.sum([r.labels for r in records], axis=0).astype(int).tolist()
        rows.append({"shard": name, "split": split, "index": 0, "count": 1,
                     "records": len(records), "bytes": len(payload),
                     "sha256": fs.sha256_bytes(payload), "label_counts": counts})
    datasets.write_manifest(out, rows)
    datasets.write_dataset_info(datasets.DatasetInfo(
        path=str(out), version=out.name, labels=list(labels),
        splits={split: len(records) for split, records in splits.items()}, left_out={},
        catalog_hash="test", created_at="2026-01-01T00:00:00+00:00", compression="",
        shard_config={}))
    return out
