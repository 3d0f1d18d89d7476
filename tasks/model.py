"""The head, the losses and the whole-split metrics of the genre model.

Losses are TensorFlow functions (they train the model); metrics are NumPy functions over a
whole split (the seed averaged F1 over batches, which is biased for rare labels).

Conventions, everywhere in posterflow:
- a label is predicted when its probability is strictly greater than its threshold (as the
  seed's `tf.greater(y_hat, thresh)`);
- precision, recall and F1 with a zero denominator are 0 (scikit-learn's ``zero_division=0``):
  a label with no positives and no predictions scores F1 = 0 and still counts in the macro
  mean, so a model cannot look better by never predicting a rare label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tasks.train_config import Combine, LossName

if TYPE_CHECKING:
    import tensorflow as tf
    import tf_keras

Thresholds = float | Sequence[float] | np.ndarray | Mapping[str, float]
SOFT_F1_EPS = 1e-16  # the seed's epsilon
# Asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV
# 2021), the paper's defaults: easy negatives are down-weighted (gamma_neg) and very easy
# ones (p < margin) discarded, which suits multi-label sets where most labels are negative.
ASL_GAMMA_POS, ASL_GAMMA_NEG, ASL_MARGIN = 0.0, 4.0, 0.05
PROB_EPS = 1e-7  # Keras' clip of probabilities in cross-entropies


def macro_soft_f1(y_true: tf.Tensor, y_prob: tf.Tensor) -> tf.Tensor:
    """1 - mean over labels of soft F1 = 2tp / (2tp + fn + fp + eps), probabilities as counts."""
    import tensorflow as tf

    y = tf.cast(y_true, tf.float32)
    p = tf.cast(y_prob, tf.float32)
    tp = tf.reduce_sum(p * y, axis=0)
    fp = tf.reduce_sum(p * (1.0 - y), axis=0)
    fn = tf.reduce_sum((1.0 - p) * y, axis=0)
    soft_f1 = 2.0 * tp / (2.0 * tp + fn + fp + SOFT_F1_EPS)
    return tf.reduce_mean(1.0 - soft_f1)


def bce_loss(y_true: tf.Tensor, y_prob: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy averaged over labels and examples (Keras' clipped formula)."""
    import tensorflow as tf
    import tf_keras

    return tf.reduce_mean(tf_keras.losses.binary_crossentropy(y_true, y_prob, axis=-1))


def asymmetric_loss(y_true: tf.Tensor, y_prob: tf.Tensor) -> tf.Tensor:
    """ASL: -(y (1-p)^g+ log p + (1-y) p_m^g- log(1-p_m)), p_m = max(p - margin, 0); mean."""
    import tensorflow as tf

    y = tf.cast(y_true, tf.float32)
    p = tf.clip_by_value(tf.cast(y_prob, tf.float32), PROB_EPS, 1.0 - PROB_EPS)
    p_neg = tf.maximum(p - ASL_MARGIN, 0.0)
    positive = y * tf.pow(1.0 - p, ASL_GAMMA_POS) * tf.math.log(p)
    negative = (1.0 - y) * tf.pow(p_neg, ASL_GAMMA_NEG) * tf.math.log(1.0 - p_neg)
    return -tf.reduce_mean(positive + negative)


def get_loss(name: LossName) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The loss function called `name`."""
    losses = {"soft_f1": macro_soft_f1, "bce": bce_loss, "asl": asymmetric_loss}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}: expected one of {sorted(losses)}")
    return losses[name]


def build_head(
    n_labels: int, hidden: int = 1024, dropout: float = 0.0, input_dim: int = 1280,
    name: str = "head",
) -> tf_keras.Model:
    """The seed's head on backbone features: Dense(hidden, relu) -> Dense(n_labels, sigmoid).

    `hidden=0` drops the hidden layer (a linear probe); `dropout` > 0 adds Dropout before it.
    """
    import tf_keras

    layers: list[tf_keras.layers.Layer] = [tf_keras.Input(shape=(input_dim,), name="features")]
    if dropout > 0:
        layers.append(tf_keras.layers.Dropout(dropout, name="dropout"))
    if hidden > 0:
        layers.append(tf_keras.layers.Dense(hidden, activation="relu", name="hidden_layer"))
    layers.append(tf_keras.layers.Dense(n_labels, activation="sigmoid", name="output"))
    return tf_keras.Sequential(layers, name=name)


def combine_views(stacked: tf.Tensor | np.ndarray, combine: Combine) -> tf.Tensor:
    """Per-view features [b, views, dim] -> the head's input: [b, views*dim] or [b, dim].

    The one definition of how views meet, used on cached features in training and on the
    backbone's outputs inside the exported SavedModel.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(stacked, tf.float32)
    if combine == "mean":
        return tf.reduce_mean(x, axis=1)
    if combine == "concat":
        return tf.reshape(x, [-1, x.shape[1] * x.shape[2]])
    raise ValueError(f"unknown view combination {combine!r}: expected 'concat' or 'mean'")


def view_examples(stacked: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-view features [n, views, dim] -> one training example per view: [n*views, dim].

    Feature-space augmentation for `combine: mean`: the head learns from every view alone
    (3x the examples for three views), and at prediction sees their mean. Rows stay grouped
    by poster (a poster's views are adjacent); labels repeat accordingly.
    """
    n, views, dim = stacked.shape
    return stacked.reshape(n * views, dim), np.repeat(labels, views, axis=0)


def ensemble_head(heads: Sequence[tf_keras.Model]) -> tf_keras.Model:
    """One model averaging the probabilities of heads that share an input (one head: itself)."""
    import tf_keras

    if len(heads) == 1:
        return heads[0]
    features = tf_keras.Input(shape=heads[0].inputs[0].shape[1:], name="features")
    probs = tf_keras.layers.Average(name="mean_probability")(
        [head(features, training=False) for head in heads])
    return tf_keras.Model(features, probs, name="head_ensemble")


def threshold_vector(
    thresholds: Thresholds, n_labels: int, labels: Sequence[str] | None = None
) -> np.ndarray:
    """Thresholds as a float array [n_labels]: from a scalar, a sequence or {label: t}."""
    if isinstance(thresholds, Mapping):
        if labels is None:
            raise ValueError("per-label thresholds given by name need the label list")
        missing = [name for name in labels if name not in thresholds]
        if missing:
            raise ValueError(f"thresholds are missing labels {missing}")
        return np.array([thresholds[name] for name in labels], np.float64)
    vec = np.broadcast_to(np.asarray(thresholds, np.float64), (n_labels,))
    return np.array(vec)


def confusion_counts(
    y_true: np.ndarray, y_prob: np.ndarray, thresholds: Thresholds = 0.5,
    labels: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label (tp, fp, fn) counts over a whole split."""
    y = np.asarray(y_true) > 0.5
    prob = np.asarray(y_prob)
    if y.shape != prob.shape or y.ndim != 2:
        raise ValueError(f"expected y_true and y_prob of one shape [n, labels], got "
                         f"{y.shape} and {prob.shape}")
    pred = prob > threshold_vector(thresholds, prob.shape[1], labels)
    tp = np.sum(pred & y, axis=0)
    fp = np.sum(pred & ~y, axis=0)
    fn = np.sum(~pred & y, axis=0)
    return tp, fp, fn


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (zero_division=0)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def macro_f1(y_true: np.ndarray, y_prob: np.ndarray, thresholds: Thresholds = 0.5,
             labels: Sequence[str] | None = None) -> float:
    """Unweighted mean over labels of F1 over the whole split."""
    tp, fp, fn = confusion_counts(y_true, y_prob, thresholds, labels)
    return float(np.mean(_safe_div(2 * tp, 2 * tp + fp + fn)))


def micro_f1(y_true: np.ndarray, y_prob: np.ndarray, thresholds: Thresholds = 0.5,
             labels: Sequence[str] | None = None) -> float:
    """F1 of the counts pooled over all labels of the whole split."""
    tp, fp, fn = (c.sum() for c in confusion_counts(y_true, y_prob, thresholds, labels))
    return float(_safe_div(2 * tp, 2 * tp + fp + fn))


def per_label_scores(
    y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str], thresholds: Thresholds = 0.5
) -> dict[str, dict[str, float]]:
    """{label: {precision, recall, f1, support}} over the whole split."""
    tp, fp, fn = confusion_counts(y_true, y_prob, thresholds, labels)
    if len(labels) != len(tp):
        raise ValueError(f"expected {len(tp)} label names, got {len(labels)}")
    precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]),
               "f1": float(f1[i]), "support": int(tp[i] + fn[i]), "predicted": int(tp[i] + fp[i])}
        for i, name in enumerate(labels)
    }


def bootstrap_f1_intervals(
    y_true: np.ndarray, y_prob: np.ndarray, thresholds: Thresholds = 0.5,
    labels: Sequence[str] | None = None, *, rounds: int = 1000, seed: int = 0,
) -> tuple[list[float], np.ndarray]:
    """95% percentile-bootstrap intervals over posters: ([lo, hi] of macro F1, [labels, 2]
    of each label's F1). Deterministic for a seed."""
    y = np.asarray(y_true) > 0.5
    prob = np.asarray(y_prob)
    pred = prob > threshold_vector(thresholds, prob.shape[1], labels)
    rng = np.random.default_rng(seed)
    # Each round's multiplicity of every poster: the counts are then one matrix product.
    weights = rng.multinomial(len(y), np.full(len(y), 1 / max(len(y), 1)), size=rounds)
    weights = weights.astype(np.float64)  # a BLAS product, not numpy's integer loop
    tp = weights @ (pred & y)
    fp, fn = weights @ (pred & ~y), weights @ (~pred & y)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)  # [rounds, labels]
    macro = np.percentile(f1.mean(axis=1), [2.5, 97.5])
    return [float(v) for v in macro], np.percentile(f1, [2.5, 97.5], axis=0).T
