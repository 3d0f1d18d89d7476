"""Image preprocessing shared by training, embedding and the exported serving signature.

One module so that training and serving can never disagree: decode, then cut the views the
recipe uses, each resized to the backbone's size with bilinear interpolation and scaled to
[0, 1] (the seed's preprocessing is the "full" view).

Posters are portrait (182x268 in the dev set); the seed squashes the whole poster to a
square, which distorts it. The other views keep the aspect: the poster's first and last
squares along its long side (its top and bottom for a portrait poster), its four corner
squares of two thirds of the short side (seen 1.5x closer: faces, titles, props), the whole
poster letterboxed, and the mirror image of the full view.
`make_dataset` applies the full view to a dataset version's shards: the input pipeline of
fine-tuning.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from storage.records import IMAGE, LABELS, parse
from storage.shard_reader import read_examples
from tasks.views import VIEWS, View

if TYPE_CHECKING:
    import tensorflow as tf

IMAGE_SIZE = 224
CORNER_SIDE = 2 / 3  # a corner view's side, as a fraction of the poster's short side
# The square crops: (side as a fraction of the short side, at the far end down, across).
# "top"/"bottom" are the first/last whole squares along the long side.
SQUARES: dict[View, tuple[float, bool, bool]] = {
    "top": (1.0, False, False), "bottom": (1.0, True, True),
    "top_left": (CORNER_SIDE, False, False), "top_right": (CORNER_SIDE, False, True),
    "bottom_left": (CORNER_SIDE, True, False), "bottom_right": (CORNER_SIDE, True, True),
}


def decode_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/WebP/GIF/BMP bytes -> float32 [h, w, 3] in [0, 255], as stored."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.cast(image, tf.float32)


def poster_view(pixels: tf.Tensor, view: View, image_size: int = IMAGE_SIZE) -> tf.Tensor:
    """One view of a decoded poster [h, w, 3] in [0, 255] -> float32 [size, size, 3] in [0, 1]."""
    import tensorflow as tf

    size = [image_size, image_size]
    if view in ("full", "flip"):
        image = tf.image.resize(pixels, size, method="bilinear")
        if view == "flip":
            image = tf.image.flip_left_right(image)
    elif view == "pad":
        image = tf.image.resize_with_pad(pixels, image_size, image_size, method="bilinear")
    elif view in SQUARES:
        fraction, far_down, far_across = SQUARES[view]
        height, width = tf.shape(pixels)[0], tf.shape(pixels)[1]
        short = tf.cast(tf.minimum(height, width), tf.float32)
        side = tf.maximum(tf.cast(short * fraction, tf.int32), 1)  # a 1-pixel poster too
        square = tf.image.crop_to_bounding_box(pixels, height - side if far_down else 0,
                                               width - side if far_across else 0, side, side)
        image = tf.image.resize(square, size, method="bilinear")
    else:
        raise ValueError(f"unknown view {view!r}: expected one of {list(VIEWS)}")
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def decode_image(encoded: tf.Tensor, image_size: int = IMAGE_SIZE) -> tf.Tensor:
    """Encoded image bytes -> the full view, float32 [image_size, image_size, 3] in [0, 1]."""
    return poster_view(decode_pixels(encoded), "full", image_size)


def make_dataset(
    dataset_dir: str | os.PathLike[str],
    split: str,
    batch_size: int = 256,
    shuffle_seed: int | None = None,
    shuffle: bool = False,
    verify: bool = True,
    image_size: int = IMAGE_SIZE,
) -> tf.data.Dataset:
    """Batches of (full views float32[b,size,size,3] in [0,1], labels float32[b,n]).

    Shuffles when `shuffle` is true or a `shuffle_seed` is given; with a seed the order of
    every epoch is reproducible.
    """
    import tensorflow as tf

    examples, info = read_examples(dataset_dir, split, shuffle_seed,
                                   shuffle or shuffle_seed is not None, verify)
    n_labels = len(info.labels)

    def decode(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = parse(serialized, n_labels)
        return decode_image(example[IMAGE], image_size), example[LABELS]

    examples = examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)
