"""Image preprocessing shared by training, embedding and the exported serving signature.

One function so that training and serving can never disagree: decode, resize to the
backbone's size with bilinear interpolation, scale to [0, 1] (as the seed tutorial does).
`make_dataset` applies it to a dataset version's shards: the training input pipeline.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from storage.records import IMAGE, LABELS, parse
from storage.shard_reader import read_examples

if TYPE_CHECKING:
    import tensorflow as tf

IMAGE_SIZE = 224


def decode_image(encoded: tf.Tensor, image_size: int = IMAGE_SIZE) -> tf.Tensor:
    """Encoded JPEG/PNG/WebP bytes -> float32 [image_size, image_size, 3] in [0, 1]."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def make_dataset(
    dataset_dir: str | os.PathLike[str],
    split: str,
    batch_size: int = 256,
    shuffle_seed: int | None = None,
    shuffle: bool = False,
    verify: bool = True,
) -> tf.data.Dataset:
    """Batches of (images float32[b,224,224,3] in [0,1], labels float32[b,n]) for training.

    Shuffles when `shuffle` is true or a `shuffle_seed` is given; with a seed the order of
    every epoch is reproducible.
    """
    import tensorflow as tf

    examples, info = read_examples(dataset_dir, split, shuffle_seed,
                                   shuffle or shuffle_seed is not None, verify)
    n_labels = len(info.labels)

    def decode(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = parse(serialized, n_labels)
        return decode_image(example[IMAGE]), example[LABELS]

    examples = examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)
