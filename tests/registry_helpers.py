"""Test fixtures for the registry: a tiny real SavedModel in the exported-model layout.

The model follows the serving contract (`serving_default(images: string[batch]) ->
{probabilities: float32[batch, n], genres: string[batch, n] padded with ""}`) without the
training stage: it scores each image from its byte length, which is enough to load and
predict. Copies differ only in their assets (metrics, lineage), like real exports do.
The promotion gate never loads a model: its tests copy `model_files_without_tensorflow`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

LABELS = ["Action", "Comedy", "Drama"]


def save_tiny_savedmodel(path: Path) -> Path:
    """Save a variable-carrying tf.Module with a string-image `serving_default` signature."""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.linspace(-1.0, 1.0, len(LABELS)))
            self.b = tf.Variable(tf.zeros([len(LABELS)]))
            self.labels = tf.constant(LABELS)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            x = tf.cast(tf.strings.length(images), tf.float32)[:, None] / 10.0
            probs = tf.sigmoid(x * self.w + self.b)
            names = tf.broadcast_to(self.labels, tf.shape(probs))
            return {"probabilities": probs, "genres": tf.where(probs >= 0.5, names, "")}

    module = Tiny()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def model_files_without_tensorflow(path: Path) -> Path:
    """The model files the registry checks and copies, as opaque bytes (no TensorFlow)."""
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"a graph the gate never loads")
    (path / "variables" / "variables.index").write_bytes(b"an index")
    return path


def make_export(
    template: Path,
    out: Path,
    test_f1: float,
    dataset_version: str = "ds-1",
    padding_bytes: int = 0,
) -> Path:
    """Copy the SavedModel and write the export assets (metrics, lineage, labels, thresholds)."""
    shutil.copytree(template, out)
    assets = out / "assets"
    assets.mkdir(exist_ok=True)
    files = {
        "labels.json": {"labels": LABELS},
        "thresholds.json": {name: 0.5 for name in LABELS},
        "metrics.json": {"val": {"macro_f1": test_f1}, "test": {"macro_f1": test_f1}},
        "lineage.json": {
            "dataset_version": dataset_version,
            "backbone": "stand-in",
            "params": {"lr": 0.001},
            "code_revision": "abc123",
            "flow_run_id": "train-run",
        },
    }
    for name, obj in files.items():
        (assets / name).write_text(json.dumps(obj))
    if padding_bytes:
        (assets / "padding.bin").write_bytes(b"\0" * padding_bytes)
    return out
