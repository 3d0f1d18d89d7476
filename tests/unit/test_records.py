"""storage.records: the one feature spec round-trips; tasks.images decodes as the seed."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from storage.records import PosterRecord, deserialize, serialize
from tasks.images import decode_image


def _jpeg(color: tuple[int, int, int], size: tuple[int, int] = (182, 268)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_record_round_trip() -> None:
    rec = PosterRecord(imdb_id=114709, image=_jpeg((200, 10, 10)), sha256="ab" * 32,
                       labels=np.array([1, 0, 1], np.float32))
    back = deserialize(serialize(rec), n_labels=3)
    assert back.imdb_id == rec.imdb_id
    assert back.image == rec.image
    assert back.sha256 == rec.sha256
    np.testing.assert_array_equal(back.labels, rec.labels)


def test_decode_image_shape_and_range() -> None:
    import tensorflow as tf

    for encoded in (_jpeg((255, 255, 255)), _png((0, 0, 0))):
        image = decode_image(tf.constant(encoded)).numpy()
        assert image.shape == (224, 224, 3)
        assert image.dtype == np.float32
        assert 0.0 <= image.min() <= image.max() <= 1.0
    white = decode_image(tf.constant(_jpeg((255, 255, 255)))).numpy()
    assert white.mean() > 0.98


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (50, 70), color).save(buf, format="PNG")
    return buf.getvalue()
