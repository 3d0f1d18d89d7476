"""The one TFRecord feature spec and record format: shared by the shard writer and every reader.

A record holds the poster exactly as fetched (encoded JPEG/PNG/WebP bytes, not pixels),
its content hash, the IMDb id and the multi-hot label vector. Label *names* live in the
dataset's `dataset.json`, never in the records. Records are encoded and framed here without
TensorFlow (same bytes as `tf.train.Example` + `tf.io.TFRecordWriter`), so writing shards
needs neither TensorFlow nor protobuf objects.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import google_crc32c

if TYPE_CHECKING:
    import numpy as np
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
    """Encode a record as a serialized `tf.train.Example` (deterministic: sorted map keys)."""
    return encode_example(record.imdb_id, record.image, record.sha256,
                          label_values(record.labels))


def label_values(labels: Any) -> bytes:
    """A label vector as the packed little-endian float32 values a FloatList holds."""
    import numpy as np

    return np.asarray(labels, "<f4").tobytes()


def multi_hot(label_idx: Sequence[int], n_labels: int) -> bytes:
    """`label_values` of the multi-hot vector with ones at `label_idx`."""
    ones = set(label_idx)
    return b"".join(_ONE if i in ones else _ZERO for i in range(n_labels))


def encode_example(imdb_id: int, image: bytes, sha256: str, labels: bytes) -> bytes:
    """The bytes of `tf.train.Example(...).SerializeToString(deterministic=True)`, by hand.

    Protobuf's Python objects cost more per record than the rest of a shard write; this
    writes the same wire format directly (tests compare it with TensorFlow's bytes). Map
    entries come in key order: image, imdb_id, labels, sha256. `labels` = `label_values`.
    """
    features = b"".join((
        _entry(_KEY_IMAGE, _field(1, _field(1, image))),  # Feature.bytes_list
        _entry(_KEY_IMDB_ID, _field(3, _packed(_varint(imdb_id & _UINT64)))),  # int64_list
        _entry(_KEY_LABELS, _field(2, _packed(labels))),  # float_list
        _entry(_KEY_SHA256, _field(1, _field(1, sha256.encode()))),
    ))
    return _field(1, features)  # Example.features


def tfrecord_frame(data: bytes) -> tuple[bytes, bytes]:
    """The TFRecord header (length + its masked CRC32C) and footer (data's masked CRC32C)."""
    length = _U64.pack(len(data))
    return length + _U32.pack(_masked_crc(length)), _U32.pack(_masked_crc(data))


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C (rotate right by 15, add a constant)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _packed(values: bytes) -> bytes:
    """A packed repeated field 1 (protobuf omits it when empty)."""
    return _field(1, values) if values else b""


def _entry(key: bytes, feature: bytes) -> bytes:
    """One `Features.feature` map entry: key (field 1), Feature (field 2)."""
    return _field(1, key + _field(2, feature))


_KEY_IMAGE, _KEY_IMDB_ID, _KEY_LABELS, _KEY_SHA256 = (
    _field(1, name.encode()) for name in (IMAGE, IMDB_ID, LABELS, SHA256))
_ONE, _ZERO = struct.pack("<f", 1.0), struct.pack("<f", 0.0)
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_UINT64 = (1 << 64) - 1  # negative int64s are varints of their two's complement


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
