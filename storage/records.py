"""The one TFRecord feature spec and record format: shared by the shard writer and every reader.

A record holds the poster exactly as fetched (encoded JPEG/PNG/WebP bytes, not pixels),
its content hash, the IMDb id and the multi-hot label vector. Label *names* live in the
dataset's `dataset.json`, never in the records. Records are encoded and framed here without
TensorFlow (same bytes as `tf.train.Example` + `tf.io.TFRecordWriter`), so writing shards
needs neither TensorFlow nor protobuf objects.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google_crc32c import extend as _crc_extend
from google_crc32c import value as _crc_value

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
    writes the same wire format directly (tests compare it with TensorFlow's bytes).
    `labels` = `label_values`. See `example_around_image` for the parts.
    """
    before, after = example_around_image(imdb_id, len(image), sha256, labels)
    return before + image + after


def example_around_image(imdb_id: int, image_bytes: int, sha256: str,
                         labels: bytes) -> tuple[bytes, bytes]:
    """The serialized Example's bytes before and after the image, whose length is enough:
    writers put the image between them without copying it. Map entries come in key order
    (image, imdb_id, labels, sha256), as deterministic serialization sorts them."""
    bytes_list = _varint(image_bytes)  # BytesList.value[0] length; the image follows
    feature = b"\x0a" + _varint(1 + len(bytes_list) + image_bytes) + b"\x0a" + bytes_list
    value_len = len(feature) + image_bytes  # the image's Feature
    value_varint = _varint(value_len)
    entry_len = len(_KEY_IMAGE) + 1 + len(value_varint) + value_len
    entry_varint = _varint(entry_len)
    imdb_id_varint, sha256_bytes = _varint(imdb_id & _UINT64), sha256.encode()
    after = b"".join((
        _imdb_id_head(len(imdb_id_varint)), imdb_id_varint,
        _labels_entry(labels),
        _sha256_head(len(sha256_bytes)), sha256_bytes,
    ))
    features_len = 1 + len(entry_varint) + entry_len + len(after)
    before = b"".join((b"\x0a", _varint(features_len),  # Example.features
                       b"\x0a", entry_varint, _KEY_IMAGE,  # map entry, its key
                       b"\x12", value_varint, feature))  # its Feature
    return before, after


def record_around_image(imdb_id: int, image: bytes, sha256: str,
                        labels: bytes) -> tuple[bytes, bytes]:
    """The TFRecord file bytes of one record before and after its image: framing header +
    `example_around_image`'s parts + the data's CRC. One call per record (the writer's loop)."""
    before, after = example_around_image(imdb_id, len(image), sha256, labels)
    length = _U64.pack(len(before) + len(image) + len(after))
    crc = _crc_extend(_crc_extend(_crc_extend(0, before), image), after)
    return (b"".join((length, _U32.pack(_mask(_crc_value(length))), before)),
            after + _U32.pack(_mask(crc)))


def tfrecord_frame(data: bytes) -> tuple[bytes, bytes]:
    """The TFRecord header (length + its masked CRC32C) and footer (data's masked CRC32C)."""
    length = _U64.pack(len(data))
    return length + _U32.pack(_mask(_crc_value(length))), _U32.pack(_mask(_crc_value(data)))


def _mask(crc: int) -> int:
    """TFRecord's masked CRC32C (rotate right by 15, add a constant)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@functools.lru_cache(maxsize=16)
def _imdb_id_head(varint_bytes: int) -> bytes:
    """The imdb_id map entry (an int64_list) up to its varint, which has this length."""
    return _entry(_KEY_IMDB_ID, _field(3, _field(1, bytes(varint_bytes))))[:-varint_bytes]


@functools.lru_cache(maxsize=16)
def _sha256_head(hex_bytes: int) -> bytes:
    """The sha256 map entry (a bytes_list) up to its hex digest, which has this length."""
    return _entry(_KEY_SHA256, _field(1, _field(1, bytes(hex_bytes))))[:-hex_bytes]


@functools.lru_cache(maxsize=4096)
def _labels_entry(labels: bytes) -> bytes:
    """The labels map entry (a float_list); a dataset has few distinct genre sets."""
    return _entry(_KEY_LABELS, _field(2, _packed(labels)))


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if value < 0x80:
        return _BYTE[value]
    if value < 0x4000:  # most lengths here: unrolled, cheaper than the loop
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
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


_BYTE = [bytes((i,)) for i in range(0x80)]  # one-byte varints
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
