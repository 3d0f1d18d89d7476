"""Image preprocessing shared by training, embedding and the exported serving signature.

One function so that training and serving can never disagree: decode, resize to the
backbone's size with bilinear interpolation, scale to [0, 1] (as the seed tutorial does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
