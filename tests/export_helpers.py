"""Test helpers for evaluation and export: a crafted model with known outputs, tiny datasets.

The crafted head (zero kernel, bias = logit(PROBS)) gives every poster the probabilities
PROBS = [0.3, 0.6, 0.9]; exported with THRESHOLDS {a: 0.2, b: 0.7} (c untuned: 0.5), it
predicts genres ["c", "a"] for any poster.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from storage import datasets
from storage.fs import sha256_bytes, sha256_file
from storage.records import PosterRecord, serialize
from tasks.backbone import build_standin_backbone
from tasks.export import export_model
from tasks.model import build_head

LABELS = ["a", "b", "c"]
PROBS = [0.3, 0.6, 0.9]
THRESHOLDS = {"a": 0.2, "b": 0.7}
FEATURES = 16


def crafted_head() -> object:
    """A head whose output is PROBS for any input."""
    head = build_head(len(LABELS), hidden=0, input_dim=FEATURES)
    p = np.array(PROBS)
    head.get_layer("output").set_weights(
        [np.zeros((FEATURES, len(LABELS)), np.float32), np.log(p / (1 - p)).astype(np.float32)]
    )
    return head


def encoded(fmt: str, size: tuple[int, int] = (40, 60), seed: int = 0) -> bytes:
    """A small random RGB image (width, height) encoded as JPEG or PNG."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def export_crafted_model(root: Path, labels: list[str] = LABELS) -> Path:
    """Export the crafted head on a small stand-in backbone to `root/runs/model`."""
    backbone = build_standin_backbone(root / "backbone", output_dim=FEATURES)
    return Path(export_model(
        root / "runs" / "model", backbone_handle=str(backbone), head=crafted_head(),
        labels=labels, thresholds=THRESHOLDS,
        metrics={"val": {"macro_f1": 0.5}, "test": {"macro_f1": 0.4}},
        lineage={"dataset_version": "ds-123", "params": {"lr": 0.001}, "flow_run_id": "run-1"},
    ))


def write_dataset(root: Path, split: str, labels_rows: list[list[float]],
                  labels: list[str] = LABELS) -> Path:
    """A one-shard dataset version (records, manifest, dataset.json) laid out as shards writes."""
    records = [
        PosterRecord(imdb_id=i + 1, image=(img := encoded("JPEG", seed=i)),
                     sha256=sha256_bytes(img), labels=np.asarray(row, np.float32))
        for i, row in enumerate(labels_rows)
    ]
    import tensorflow as tf

    out = root / "datasets" / "v1"
    shard = datasets.shard_name(split, 0, 1, "")
    out.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(out / shard)) as writer:
        for record in records:
            writer.write(serialize(record))
    datasets.write_manifest(out, [{
        "shard": shard, "split": split, "index": 0, "count": 1, "records": len(records),
        "bytes": (out / shard).stat().st_size, "sha256": sha256_file(out / shard),
        "label_counts": np.asarray(labels_rows, np.int64).sum(axis=0).tolist(),
    }])
    datasets.write_dataset_info(datasets.DatasetInfo(
        path=str(out), version="v1", labels=list(labels), splits={split: len(records)},
        left_out={}, catalog_hash="c0ffee", created_at="2026-01-01T00:00:00+00:00",
        compression="", shard_config={},
    ))
    return out

