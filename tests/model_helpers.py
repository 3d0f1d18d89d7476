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
    out = root / version
    out.mkdir(parents=True)
    rows = []
    for split, n in sizes.items():
        name = datasets.shard_name(split, 0, 1, "")
        records = tiny_split(seed, split, n)
        with tf.io.TFRecordWriter(str(out / name)) as writer:
            for record in records:
                writer.write(serialize(record))
        payload = (out / name).read_bytes()
        counts = np.sum([r.labels for r in records], axis=0).astype(int).tolist()
        rows.append({"shard": name, "split": split, "index": 0, "count": 1, "records": n,
                     "bytes": len(payload), "sha256": fs.sha256_bytes(payload),
                     "label_counts": counts})
    datasets.write_manifest(out, rows)
    datasets.write_dataset_info(datasets.DatasetInfo(
        path=str(out), version=version, labels=list(LABELS), splits=dict(sizes), left_out={},
        catalog_hash="test", created_at="2026-01-01T00:00:00+00:00", compression="",
        shard_config={}))
    return out
