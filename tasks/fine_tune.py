"""Fine-tuning's model: the top backbone blocks trainable under the head, BatchNorm frozen.

The usual transfer-learning recipe (`TrainConfig.fine_tune_blocks` > 0): the head is first
trained on cached features, then the top N MobileNetV2 blocks and the head are trained end
to end on decoded posters from the shards at a low learning rate (`tasks.train.fine_tune`
runs the fit). The backbone is a `hub.KerasLayer`, which can only be trainable as a whole,
so the model's `train_step` applies gradients to the chosen variables only; BatchNorm runs
in inference mode (`training=False`) and its scale/offset stay frozen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from storage.fits import load_weights
from tasks.backbone import backbone_layer, block_index
from tasks.train_config import TrainConfig

if TYPE_CHECKING:
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras

_BATCHNORM = re.compile(r"(?i)(^|[/_])(bn|batchnorm)([/_]|$)")
FINE_TUNED = "fine_tuned"  # the fit folder's name for the fine-tuned model's weights


def top_block_variables(variables: Sequence[tf.Variable], n_blocks: int) -> list[tf.Variable]:
    """Variables of the top `n_blocks` numbered blocks and the layers after them, minus BN."""
    indices = [block_index(v.name) for v in variables]
    numbered = sorted({i for i in indices if i is not None})
    if not numbered:
        raise ValueError("the backbone's variables carry no block numbers (block_<i> or "
                         "expanded_conv_<i>): cannot choose the top blocks to fine-tune")
    keep = set(numbered[-n_blocks:])
    last = max(pos for pos, i in enumerate(indices) if i is not None)
    return [v for pos, (v, i) in enumerate(zip(variables, indices, strict=True))
            if (i in keep or (i is None and pos > last)) and not _BATCHNORM.search(v.name)]


def partly_trainable_model(inputs: Any, outputs: Any, update: Sequence[tf.Variable]
                           ) -> tf_keras.Model:
    """A functional model whose `train_step` updates only the `update` variables."""
    import tensorflow as tf
    import tf_keras

    refs = frozenset(v.ref() for v in update)

    class PartlyTrainable(tf_keras.Model):
        def train_step(self, data: Any) -> dict[str, tf.Tensor]:
            x, y = data
            chosen = [v for v in self.trainable_variables if v.ref() in refs]
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x, y, y_pred)
            self.optimizer.apply_gradients(zip(tape.gradient(loss, chosen), chosen, strict=True))
            return self.compute_metrics(x, y, y_pred, None)

    return PartlyTrainable(inputs, outputs, name=FINE_TUNED)


def backbone_under(head: tf_keras.Model, config: TrainConfig
                   ) -> tuple[tf.Tensor, tf.Tensor, hub.KerasLayer]:
    """(images input, probabilities, backbone layer): the trainable backbone feeding `head`."""
    import tf_keras

    layer = backbone_layer(config.backbone, trainable=True)
    images = tf_keras.Input((config.image_size, config.image_size, 3), name="images")
    return images, head(layer(images, training=False)), layer  # BatchNorm in inference mode


def fine_tune_model(head: tf_keras.Model, config: TrainConfig
                    ) -> tuple[tf_keras.Model, tf_keras.Model, int]:
    """(model to train, the same layers as a plain model, variables updated) over `head`."""
    import tf_keras

    images, outputs, layer = backbone_under(head, config)
    update = top_block_variables(layer.trainable_weights, config.fine_tune_blocks)
    trainable = partly_trainable_model(images, outputs, [*update, *head.trainable_weights])
    return trainable, tf_keras.Model(images, outputs, name="poster_genres"), len(update)


def final_model(fit_dir: str, spec: dict[str, Any], selected: tf_keras.Model,
                config: TrainConfig) -> tf_keras.Model:
    """The model a fit ended with: the selected head(s), or the fine-tuned backbone + head.

    Fine-tuned, `selected` becomes part of the model and takes its fine-tuned weights.
    """
    import tf_keras

    if FINE_TUNED not in spec["models"]:
        return selected
    images, outputs, _ = backbone_under(selected, config)  # the backbone from its handle
    return load_weights(fit_dir, spec["models"][FINE_TUNED],
                        tf_keras.Model(images, outputs, name="poster_genres"))


def takes_images(spec: dict[str, Any]) -> bool:
    """True when the fit's final model reads decoded posters (fine-tuned), not features."""
    return FINE_TUNED in spec["models"]
