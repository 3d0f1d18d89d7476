"""The one TFRecord feature spec: shared by the shard writer and every reader.

A record holds the poster exactly as fetched (encoded JPEG/PNG/WebP bytes, not pixels),
its content hash, the IMDb id and the multi-hot label vector. Label *names* live in the
dataset's `dataset.json`, never in the records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

IMDB_ID = "imdb_id"
IMAGE = "image"
SHA256 = "sha256"
LABELS = "labels"


@dataclass(frozen=True)
class PosterRecord:
    """One training example as stored in a shard."""

    imdb_id: int
    image: bytes
    sha256: str
    labels: np.ndarray  # float32 [n_labels], multi-hot


def feature_spec(n_labels: int) -> dict[str, Any]:
    """The parse spec for `tf.io.parse_single_example` / `parse_example`."""
    import tensorflow as tf

    return {
        IMDB_ID: tf.io.FixedLenFeature([], tf.int64),
        IMAGE: tf.io.FixedLenFeature([], tf.string),
        SHA256: tf.io.FixedLenFeature([], tf.string),
        LABELS: tf.io.FixedLenFeature([n_labels], tf.float32),
    }


def serialize(record: PosterRecord) -> bytes:
    """Encode a record as a serialized `tf.train.Example`."""
    import tensorflow as tf

    feature = {
        IMDB_ID: tf.train.Feature(int64_list=tf.train.Int64List(value=[record.imdb_id])),
        IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.image])),
        SHA256: tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.sha256.encode()])),
        LABELS: tf.train.Feature(
            float_list=tf.train.FloatList(value=np.asarray(record.labels, np.float32).tolist())
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)  # map keys sorted: the same bytes in every process


def parse(serialized: tf.Tensor, n_labels: int) -> dict[str, tf.Tensor]:
    """Parse one serialized example (graph-friendly, for tf.data.map)."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, feature_spec(n_labels))


def deserialize(serialized: bytes, n_labels: int) -> PosterRecord:
    """Decode a serialized example eagerly (tests, tools)."""
    parsed = parse(serialized, n_labels)
    return PosterRecord(
        imdb_id=int(parsed[IMDB_ID].numpy()),
        image=bytes(parsed[IMAGE].numpy()),
        sha256=parsed[SHA256].numpy().decode(),
        labels=parsed[LABELS].numpy(),
    )
