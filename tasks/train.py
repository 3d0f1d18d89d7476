"""Train the genre head on cached backbone features; select, fine-tune, evaluate and export.

The seed trained a frozen MobileNetV2 + head end to end on decoded images for 30 epochs, so
the backbone ran 30 times per poster. Here the backbone runs once per poster and view
(`tasks.embed`, cached by sha256 + backbone + view), and epochs run on 1280-d features: with
no augmentation this is the same computation (tests/unit/test_train.py proves equal losses).
The default recipe sees seven views of each poster (`tasks.images`), trains a faster,
regularised head on each view's features as an example of its own and predicts from the
views' averaged features; `recipe="seed"` is the tutorial's method. Model selection
uses the val split only: early stopping on whole-split val macro F1 (best weights restored),
an optional sweep over head hyperparameters and an optional ensemble of the best heads. The
test split is scored once, for the report.

Fine-tune mode (`fine_tune_blocks` > 0) follows the usual transfer-learning recipe: the head
is first trained on cached features as above, then the top N MobileNetV2 blocks and the head
are trained end to end from the shards at a low learning rate (the cache is bypassed). The
backbone is a `hub.KerasLayer`, which can only be trainable as a whole, so the model's
`train_step` applies gradients to the chosen variables only; BatchNorm runs in inference mode
(`training=False`) and its scale/offset stay frozen.

The stage is three pieces, each a Prefect task in the train flow (`flows/train_tasks.py`) and
called in turn by `train` (the CLI): `fit_model` trains on cached features and saves the
trained models to a fit folder on the storage root; `evaluate_fit` tunes thresholds on val,
scores test once and writes the report; `export_fit` writes the SavedModel. A failed export
therefore never redoes the fit.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.fs import atomic_write_bytes, atomic_write_json, exists, is_local, join, read_json
from tasks.backbone import DEFAULT_BACKBONE, backbone_layer, block_index
from tasks.images import CORNERS, View
from tasks.model import (
    Combine,
    LossName,
    build_head,
    combine_views,
    ensemble_head,
    get_loss,
    macro_f1,
    view_examples,
)

if TYPE_CHECKING:
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras

log = logging.getLogger(__name__)

TrainProgress = Callable[[str, int, int], None]  # (step: "embed" | "epochs" | ..., done, total)
Split = tuple[np.ndarray, np.ndarray]  # (features or images, labels)
Recipe = Literal["default", "seed"]
_BATCHNORM = re.compile(r"(?i)(^|[/_])(bn|batchnorm)([/_]|$)")
REPORT_SAMPLES = 16
FIT_JSON = "fit.json"  # written last: a fit folder without it holds no complete fit


class HeadParams(BaseModel):
    """The hyperparameters of one head training run (what the sweep varies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(1e-5, gt=0, description="Adam learning rate (seed: 1e-5).")
    epochs: int = Field(30, ge=1, description="Maximum epochs (seed: 30).")
    hidden: int = Field(1024, ge=0, description="Hidden Dense units; 0 = linear probe.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the features.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (AdamW); "
                                "0 = plain Adam (the seed).")
    loss: LossName = Field("soft_f1", description="'soft_f1' (seed), 'bce' or 'asl' "
                           "(asymmetric loss, Ridnik et al. 2021).")


# The default recipe's head (benchmarks/quality.py, chosen on val): a 100x higher learning
# rate than the seed's, dropout, and early stopping on val picking the epoch.
DEFAULT_HEAD = HeadParams(learning_rate=1e-3, epochs=100, hidden=1024, dropout=0.5)
# The seed tutorial's method: the squashed poster, one head, fixed hyperparameters, all 30
# epochs, no selection. `recipe="seed"` fills these in for every field not given explicitly.
SEED_RECIPE: dict[str, Any] = {
    "views": ["full"], "combine": "mean", "flip_augment": False, "view_examples": False,
    "ensemble": 1, "sweep": False, "early_stopping": False, "shuffle_buffer": 1024,
    "head": HeadParams(),
}


class TrainConfig(BaseModel):
    """Backbone, head, model selection and fine-tuning settings of one training run.

    The defaults are the `default` recipe, chosen on the dev posters' val split by
    `benchmarks/quality.py` (BENCHMARKS.md); `recipe="seed"` is the seed tutorial's.
    """

    model_config = ConfigDict(extra="forbid")

    recipe: Recipe = Field(
        "default", description="'default' (the measured best) or 'seed' (the tutorial's "
        "method: full view, lr 1e-5, 30 epochs, no selection); fields given explicitly win.")
    backbone: str = Field(
        DEFAULT_BACKBONE, description="TF Hub URL, Kaggle Models handle or local SavedModel "
        "folder of an image feature-vector model (float32 [b,224,224,3] in [0,1]).")
    embeddings_root: str | None = Field(
        None, description="Embedding cache root; default <data_root>/embeddings, i.e. "
        "two levels above the dataset folder.")
    image_size: int = Field(224, ge=32, description="Backbone input size.")
    views: list[View] = Field(
        ["full", "top", "bottom", *CORNERS], min_length=1,
        description="Views of each poster the model sees, each embedded once: 'full' (the "
        "whole poster squashed to a square, the seed), 'top'/'bottom' (its first/last "
        "square), 'top_left'/'top_right'/'bottom_left'/'bottom_right' (corner squares of "
        "2/3 the short side), 'pad' (letterboxed), 'flip' (mirrored full). The SavedModel "
        "cuts them too.")
    combine: Combine = Field("mean", description="How the views' features meet: 'mean' "
                             "(average) or 'concat'.")
    flip_augment: bool = Field(
        False, description="Feature-space augmentation: in training, each epoch replaces "
        "the 'full' view's features by the mirrored poster's with probability 1/2.")
    view_examples: bool = Field(
        True, description="Feature-space augmentation: in training, each view's features "
        "are an example of their own (`tasks.model.view_examples`); val, test and serving "
        "average the views' features as `combine: mean` does. Needs combine 'mean'.")
    ensemble: int = Field(1, ge=1, description="Average the probabilities of the N best "
                          "heads of the sweep (or N seeds of the configured head).")
    batch_size: int = Field(256, ge=1, description="Training batch size (seed: 256).")
    head: HeadParams = Field(DEFAULT_HEAD,
                             description="Head hyperparameters (used when sweep is off).")
    early_stopping: bool = Field(
        True, description="Stop when val macro F1 has not improved for `patience` epochs and "
        "restore the best epoch's weights; off = train all epochs, keep the last (the seed).")
    patience: int = Field(10, ge=1, description="Early-stopping patience in epochs.")
    shuffle_buffer: int = Field(4096, ge=1, description="Shuffle buffer of training "
                                "examples (seed: 1024).")
    seed: int = Field(0, description="Seed of weights and shuffling: same seed, same model.")
    sweep: bool = Field(False, description="Choose head hyperparameters by val macro F1 "
                        "over the grid below (on cached features); off = the `head` above "
                        "(epochs are still chosen on val by early stopping).")
    sweep_learning_rates: list[float] = Field([1e-4, 1e-3], min_length=1,
                                              description="Sweep grid: Adam learning rates.")
    sweep_hidden: list[int] = Field([256, 1024], min_length=1,
                                    description="Sweep grid: hidden units.")
    sweep_dropout: list[float] = Field([0.0, 0.5], min_length=1,
                                       description="Sweep grid: dropout rates.")
    sweep_weight_decays: list[float] = Field([0.0], min_length=1,
                                             description="Sweep grid: weight decays.")
    sweep_losses: list[LossName] = Field(["soft_f1", "bce"], min_length=1,
                                         description="Sweep grid: losses.")
    sweep_epochs: int = Field(100, ge=1, description="Maximum epochs of each sweep run.")
    compare_losses: bool = Field(
        False, description="Also train the head with the other loss (same hyperparameters) "
        "for the report's soft-F1 vs BCE probability histograms.")
    fine_tune_blocks: int = Field(0, ge=0, description="After the head, train the top N "
                                  "backbone blocks end to end from the shards (0 = off; "
                                  "needs views ['full'] and ensemble 1).")
    fine_tune_learning_rate: float = Field(1e-5, gt=0, description="Fine-tune Adam rate.")
    fine_tune_epochs: int = Field(3, ge=1, description="Fine-tune epochs.")
    embed_batch_size: int = Field(64, ge=1, description="Backbone batch size when embedding.")
    distribution: Literal["default", "mirrored", "multi_worker_mirrored"] = Field(
        "default", description="tf.distribute strategy for training: 'default' (one device: "
        "the GPU when there is one), 'mirrored' (every local GPU), 'multi_worker_mirrored' "
        "(several machines; reads TF_CONFIG).")

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        """`recipe="seed"`: the seed's values for every field not given explicitly."""
        if isinstance(data, dict) and data.get("recipe") == "seed":
            return {**SEED_RECIPE, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if len(set(self.views)) != len(self.views):
            raise ValueError(f"views repeat: {self.views}")
        if self.view_examples and (self.combine != "mean" or self.flip_augment):
            raise ValueError("view_examples trains on single views averaged at prediction: "
                             "needs combine 'mean' and no flip_augment")
        if self.flip_augment and "full" not in self.views:
            raise ValueError("flip_augment replaces the 'full' view: add 'full' to views")
        if self.fine_tune_blocks and (self.views != ["full"] or self.ensemble != 1):
            raise ValueError("fine-tuning trains one head on the full view: set views "
                             "['full'] and ensemble 1 (or recipe 'seed')")
        return self

    def embedded_views(self) -> list[View]:
        """The views to embed: the model's, plus the mirrored poster when augmenting."""
        extra: list[View] = ["flip"] if self.flip_augment and "flip" not in self.views else []
        return [*self.views, *extra]


@dataclass
class FitResult:
    """A trained model and how it got there."""

    model: Any  # tf_keras.Model
    params: HeadParams
    history: dict[str, list[float]]
    best_epoch: int
    val_macro_f1: float


@dataclass(frozen=True)
class SavedFit:
    """A finished `fit_model`: its folder on the storage root and what the lineage records.

    The folder holds each trained model's weights (`<name>.npz`) and `fit.json` (their
    architectures, the training histories, the sweep), from which `evaluate_fit` and
    `export_fit` rebuild them.
    """

    fit_dir: str
    dataset_version: str
    backbone_id: str
    params: dict[str, Any]  # the recipe, with the chosen head and its best epoch
    val_macro_f1: float
    sweep: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    """The report's folder and its metrics (thresholds tuned on val, test scored once)."""

    report_dir: str
    metrics: dict[str, Any]

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.metrics["thresholds"])


@dataclass(frozen=True)
class TrainResult:
    """What the train stage wrote and the headline numbers."""

    model_dir: str
    report_dir: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    backbone_id: str
    sweep: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, model_dir: str, fit: SavedFit, evaluation: Evaluation) -> TrainResult:
        """The stage's result from its pieces' results."""
        return cls(model_dir, evaluation.report_dir, evaluation.metrics, fit.params,
                   fit.backbone_id, fit.sweep)


def _val_callback(inputs: Any, y_true: np.ndarray, loss: LossName, batch_size: int,
                  on_epoch: Callable[[int], None]) -> tf_keras.callbacks.Callback:
    """A callback adding whole-split `val_loss` and `val_macro_f1` to each epoch's logs.

    Whole split, not batch-averaged: soft F1 and F1 over batches are biased estimates.
    """
    import tf_keras

    class WholeSplitValidation(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs if logs is not None else {}
            probs = self.model.predict(inputs, batch_size=batch_size, verbose=0)
            logs["val_loss"] = float(get_loss(loss)(y_true, probs))
            logs["val_macro_f1"] = macro_f1(y_true, probs)
            log.info("epoch %d: loss %.4f, val loss %.4f, val macro F1 %.4f", epoch + 1,
                     logs.get("loss", np.nan), logs["val_loss"], logs["val_macro_f1"])
            on_epoch(epoch + 1)

    return WholeSplitValidation()


def features_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_buffer: int,
                     seed: int, alternate: np.ndarray | None = None) -> tf.data.Dataset:
    """Shuffled training batches of (features, labels), the seed's shuffle(1024) then batch.

    With `alternate` (the same posters' features from an augmented view, e.g. mirrored),
    each example takes its alternate features with probability 1/2, drawn anew each epoch.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y) if alternate is None else (x, alternate, y))
    data = data.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if alternate is not None:
        data = data.map(lambda a, b, labels: (
            tf.where(tf.random.uniform([]) < 0.5, b, a), labels))
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fit(model: tf_keras.Model, train_data: tf.data.Dataset, val: tuple[Any, np.ndarray],
        loss: LossName, *, epochs: int, config: TrainConfig,
        on_epoch: Callable[[int], None] = lambda _: None,
        ) -> tuple[dict[str, list[float]], int, float]:
    """Fit a compiled model, scoring the whole val split each epoch; early stop if asked.

    `val` is (inputs, labels): inputs as `model.predict` takes them (array or dataset).
    Returns (history, best epoch (1-based), its val macro F1); with early stopping the model
    ends with the best epoch's weights, else with the last epoch's (as the seed).
    """
    import tf_keras

    callbacks = [_val_callback(*val, loss, config.batch_size, on_epoch)]
    if config.early_stopping:
        callbacks.append(tf_keras.callbacks.EarlyStopping(
            monitor="val_macro_f1", mode="max", patience=config.patience,
            restore_best_weights=True))
    history = model.fit(train_data, epochs=epochs, verbose=0, callbacks=callbacks).history
    scores = history["val_macro_f1"]
    best = int(np.argmax(scores)) if config.early_stopping else len(scores) - 1
    return {k: [float(v) for v in vs] for k, vs in history.items()}, best + 1, scores[best]


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy named by `TrainConfig.distribution`."""
    import tensorflow as tf

    strategies = {
        "default": tf.distribute.get_strategy,
        "mirrored": tf.distribute.MirroredStrategy,
        "multi_worker_mirrored": tf.distribute.MultiWorkerMirroredStrategy,
    }
    return strategies[name]()


def optimizer(params: HeadParams) -> tf_keras.optimizers.Optimizer:
    """Adam (the seed), or AdamW when the head has weight decay."""
    import tf_keras

    if params.weight_decay > 0:
        return tf_keras.optimizers.AdamW(params.learning_rate, weight_decay=params.weight_decay)
    return tf_keras.optimizers.Adam(params.learning_rate)


def fit_head(train_split: Split, val_split: Split, params: HeadParams, config: TrainConfig,
             on_epoch: Callable[[int], None] = lambda _: None, *, seed: int | None = None,
             alternate: np.ndarray | None = None, name: str = "head") -> FitResult:
    """Train one head on cached features (deterministic given the seed, default config.seed).

    `alternate`: augmented features of the training posters (see `features_dataset`).
    """
    import tf_keras

    seed = config.seed if seed is None else seed
    tf_keras.utils.set_random_seed(seed)
    x, y = train_split
    with distribution_strategy(config.distribution).scope():
        head = build_head(y.shape[1], params.hidden, params.dropout, input_dim=x.shape[1],
                          name=name)
        head.compile(optimizer=optimizer(params), loss=get_loss(params.loss))
    data = features_dataset(x, y, config.batch_size, config.shuffle_buffer, seed, alternate)
    history, best, score = fit(head, data, val_split, params.loss, epochs=params.epochs,
                               config=config, on_epoch=on_epoch)
    log.info("head %s: best epoch %d of %d, val macro F1 %.4f", params.model_dump(), best,
             len(history["loss"]), score)
    return FitResult(head, params, history, best, score)


def sweep_grid(config: TrainConfig) -> list[HeadParams]:
    """Every combination of the sweep's hyperparameter lists."""
    return [HeadParams(learning_rate=lr, epochs=config.sweep_epochs, hidden=h, dropout=d,
                       weight_decay=wd, loss=loss)
            for lr, h, d, wd, loss in itertools.product(
                config.sweep_learning_rates, config.sweep_hidden, config.sweep_dropout,
                config.sweep_weight_decays, config.sweep_losses)]


def select_head(train_split: Split, val_split: Split, config: TrainConfig,
                progress: TrainProgress | None = None, alternate: np.ndarray | None = None,
                ) -> tuple[FitResult, list[dict[str, Any]]]:
    """The configured head or the sweep's best by val macro F1, ensembled if asked.

    Ensemble: the `config.ensemble` best sweep heads (they are trained anyway), or without a
    sweep the configured head under that many seeds; probabilities are averaged.
    """
    if not config.sweep:
        epochs = config.head.epochs
        fits = [fit_head(train_split, val_split, config.head, config,
                         (lambda e: progress and progress("epochs", e, epochs)) if i == 0
                         else (lambda _: None), seed=config.seed + i, alternate=alternate,
                         name=f"head_{i}")
                for i in range(config.ensemble)]
        return _ensemble(fits, val_split), []
    candidates = sweep_grid(config)
    fits, rows = [], []
    for i, params in enumerate(candidates, start=1):
        result = fit_head(train_split, val_split, params, config, alternate=alternate,
                          name=f"head_{i}")
        fits.append(result)
        rows.append({**params.model_dump(), "best_epoch": result.best_epoch,
                     "val_macro_f1": result.val_macro_f1})
        if progress:
            progress("sweep", i, len(candidates))
    ranked = sorted(fits, key=lambda f: -f.val_macro_f1)  # stable: first wins ties
    log.info("sweep chose %s (val macro F1 %.4f) among %d", ranked[0].params.model_dump(),
             ranked[0].val_macro_f1, len(candidates))
    return _ensemble(ranked[:config.ensemble], val_split), rows


def _ensemble(fits: list[FitResult], val_split: Split) -> FitResult:
    """One FitResult for heads averaged (the first head's params and history)."""
    if len(fits) == 1:
        return fits[0]
    model = ensemble_head([f.model for f in fits])
    score = macro_f1(val_split[1], model.predict(val_split[0], verbose=0))
    log.info("ensemble of %d heads: val macro F1 %.4f", len(fits), score)
    return FitResult(model, fits[0].params, fits[0].history, fits[0].best_epoch, score)


def view_features(cache_root: str, backbone: str, shas: Sequence[str], views: Sequence[View]
                  ) -> np.ndarray:
    """Cached features of the posters, float32 [n, views, dim], in the order asked."""
    from storage.embeddings import EmbeddingCache

    return np.stack([EmbeddingCache(cache_root, backbone, view).read(shas) for view in views],
                    axis=1)


def model_inputs(stacked: np.ndarray, combine: Combine) -> np.ndarray:
    """The head's input from per-view features [n, views, dim] (`tasks.model.combine_views`)."""
    return combine_views(stacked, combine).numpy()


def head_inputs(dataset_dir: str, cache_root: str, backbone: str, config: TrainConfig,
                splits: Sequence[str] = ("train", "val", "test"),
                ) -> tuple[dict[str, Split], np.ndarray | None]:
    """Each split's (head inputs, labels) from the cache, and the flipped training inputs.

    With `view_examples` the training split has one row per poster and view.
    """
    inputs: dict[str, Split] = {}
    alternate = None
    for split in splits:
        shas, y = split_labels(dataset_dir, split)
        stacked = view_features(cache_root, backbone, shas, config.views)
        inputs[split] = (model_inputs(stacked, config.combine), y)
        if split == "train" and config.view_examples:
            inputs[split] = view_examples(stacked, y)
        if split == "train" and config.flip_augment:
            flip = view_features(cache_root, backbone, shas, ["flip"])[:, 0]
            alternate = flipped_inputs(stacked, flip, config.views, config.combine)
    return inputs, alternate


def flipped_inputs(stacked: np.ndarray, flip: np.ndarray, views: Sequence[View],
                   combine: Combine) -> np.ndarray:
    """The head's input with the mirrored poster's features in the 'full' view's place."""
    swapped = stacked.copy()
    swapped[:, list(views).index("full")] = flip
    return model_inputs(swapped, combine)


def split_labels(dataset_dir: str, split: str) -> tuple[list[str], np.ndarray]:
    """(sha256 list, labels float32 [n, labels]) of a split, in the records' order."""
    from storage.shard_reader import read_records

    shas, labels = [], []
    for record in read_records(dataset_dir, split).map(
            lambda r: (r["sha256"], r["labels"])).as_numpy_iterator():
        shas.append(record[0].decode())
        labels.append(record[1])
    return shas, np.asarray(labels, np.float32).reshape(len(labels), -1)


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


def _partly_trainable_model(inputs: Any, outputs: Any, update: Sequence[tf.Variable]
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

    return PartlyTrainable(inputs, outputs, name="fine_tuned")


def _backbone_under(head: tf_keras.Model, config: TrainConfig
                    ) -> tuple[tf.Tensor, tf.Tensor, hub.KerasLayer]:
    """(images input, probabilities, backbone layer): the trainable backbone feeding `head`."""
    import tf_keras

    layer = backbone_layer(config.backbone, trainable=True)
    images = tf_keras.Input((config.image_size, config.image_size, 3), name="images")
    return images, head(layer(images, training=False)), layer  # BatchNorm in inference mode


def fine_tune(dataset_dir: str, head_fit: FitResult, val_y: np.ndarray, config: TrainConfig,
              progress: TrainProgress | None = None, *,
              train_data: tf.data.Dataset | None = None) -> FitResult:
    """Train the top backbone blocks and the head end to end on decoded images from the shards.

    `train_data`: (images, labels) batches to train on instead of the whole train split.
    """
    import tf_keras

    from tasks.images import make_dataset

    with distribution_strategy(config.distribution).scope():
        head = head_fit.model
        images, outputs, layer = _backbone_under(head, config)
        update = top_block_variables(layer.trainable_weights, config.fine_tune_blocks)
        model = _partly_trainable_model(images, outputs, [*update, *head.trainable_weights])
        model.compile(optimizer=tf_keras.optimizers.Adam(config.fine_tune_learning_rate),
                      loss=get_loss(head_fit.params.loss))
    log.info("fine-tuning %d backbone variables (top %d blocks) and the head",
             len(update), config.fine_tune_blocks)
    tf_keras.utils.set_random_seed(config.seed)
    if train_data is None:
        train_data = make_dataset(dataset_dir, "train", batch_size=config.batch_size,
                                  shuffle_seed=config.seed, shuffle=True)
    val_images = make_dataset(dataset_dir, "val", batch_size=config.batch_size).map(
        lambda x, _: x)
    epochs = config.fine_tune_epochs
    history, best, score = fit(model, train_data, (val_images, val_y), head_fit.params.loss,
                               epochs=epochs, config=config,
                               on_epoch=lambda e: progress and progress("fine-tune", e, epochs))
    plain = tf_keras.Model(images, outputs, name="poster_genres")  # same layers, no train_step
    return FitResult(plain, head_fit.params, history, best, score)


def embeddings_root(dataset_dir: str, config: TrainConfig) -> str:
    """The cache root: configured, else `<data_root>/embeddings` beside `datasets/`."""
    if config.embeddings_root:
        return config.embeddings_root
    if is_local(dataset_dir) and "://" not in str(dataset_dir):
        return str(Path(dataset_dir).resolve().parents[1] / "embeddings")
    return join(str(dataset_dir).rstrip("/").rsplit("/", 2)[0], "embeddings")


def _report_samples(dataset_dir: str, probs: np.ndarray, labels: list[str],
                    thresholds: dict[str, float], count: int = REPORT_SAMPLES
                    ) -> list[tuple[bytes, list[str], list[str]]]:
    """(poster bytes, true genres, predicted genres) of the first test posters."""
    from storage.shard_reader import read_records

    cutoffs = np.array([thresholds[name] for name in labels])
    samples = []
    for record, p in zip(read_records(dataset_dir, "test").take(count).as_numpy_iterator(),
                         probs, strict=False):
        true = [n for n, t in zip(labels, record["labels"], strict=True) if t > 0.5]
        pred = [n for n, q, c in zip(labels, p, cutoffs, strict=True) if q > c]
        samples.append((bytes(record["image"]), true, pred))
    return samples


# --- the stage's pieces: fit, evaluate, export --------------------------------------------


def _save_weights(fit_dir: str, name: str, model: tf_keras.Model) -> dict[str, str]:
    """Store a model's weights as `<fit_dir>/<name>.npz` (exact values, any storage root)."""
    buffer = io.BytesIO()
    np.savez(buffer, *model.get_weights())
    atomic_write_bytes(join(fit_dir, f"{name}.npz"), buffer.getvalue())
    return {"weights": f"{name}.npz"}


def _save_head(fit_dir: str, name: str, head: tf_keras.Model) -> dict[str, str]:
    """A head's (or ensemble's) weights and Keras architecture, for `_load_head`."""
    return {**_save_weights(fit_dir, name, head), "architecture": head.to_json()}


def _load_weights(fit_dir: str, saved: dict[str, str], model: tf_keras.Model
                  ) -> tf_keras.Model:
    """`model` with the weights `_save_weights` stored."""
    from storage.fs import read_bytes

    with np.load(io.BytesIO(read_bytes(join(fit_dir, saved["weights"])))) as weights:
        model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
    return model


def _load_head(fit_dir: str, saved: dict[str, str]) -> tf_keras.Model:
    """A head (or ensemble of heads) saved by `_save_head`, rebuilt from its architecture."""
    import tf_keras

    return _load_weights(fit_dir, saved, tf_keras.models.model_from_json(saved["architecture"]))


def _final_model(fit: SavedFit, spec: dict[str, Any], selected: tf_keras.Model,
                 config: TrainConfig) -> tf_keras.Model:
    """The model the fit ended with: the selected head(s), or the fine-tuned backbone + head.

    Fine-tuned, `selected` becomes part of the model and takes its fine-tuned weights.
    """
    import tf_keras

    if "fine_tuned" not in spec["models"]:
        return selected
    images, outputs, _ = _backbone_under(selected, config)  # the backbone from its handle
    return _load_weights(fit.fit_dir, spec["models"]["fine_tuned"],
                         tf_keras.Model(images, outputs, name="poster_genres"))


def fit_model(dataset_dir: str, fit_dir: str, config: TrainConfig, *, backbone_id: str,
              progress: TrainProgress | None = None) -> SavedFit:
    """Select and train the head(s) on cached features (fine-tune if asked); save to `fit_dir`.

    Reads the train and val splits (labels from the shards, features from the embedding
    cache, which must hold them: `tasks.embed`). `fit_dir` may be on any storage root; its
    `fit.json` is written last. Deterministic given `config.seed`.
    """
    from storage.datasets import load_dataset_info
    from storage.shard_reader import verify_once

    if exists(join(fit_dir, FIT_JSON)):
        raise FileExistsError(f"{fit_dir} already holds a fit: fit into a new folder")
    version = load_dataset_info(dataset_dir).version
    with verify_once():
        splits, alternate = head_inputs(dataset_dir, embeddings_root(dataset_dir, config),
                                        backbone_id, config, splits=("train", "val"))
        chosen, sweep_rows = select_head(splits["train"], splits["val"], config, progress,
                                         alternate)
        # Saved before fine-tuning trains it further: the report compares the losses on it.
        models = {"selected": _save_head(fit_dir, "selected", chosen.model)}
        histories: list[tuple[str, dict[str, list[float]]]] = [(chosen.params.loss,
                                                                 chosen.history)]
        if config.compare_losses:
            other = chosen.params.model_copy(
                update={"loss": "bce" if chosen.params.loss != "bce" else "soft_f1"})
            rival = fit_head(splits["train"], splits["val"], other, config, alternate=alternate)
            models["rival"] = {**_save_head(fit_dir, "rival", rival.model), "loss": other.loss}
            histories.append((other.loss, rival.history))
        final = chosen
        if config.fine_tune_blocks > 0:
            final = fine_tune(dataset_dir, chosen, splits["val"][1], config, progress)
            models["fine_tuned"] = _save_weights(fit_dir, "fine_tuned", final.model)
            histories.append(("fine_tune", final.history))
    params = {**config.model_dump(), "head": final.params.model_dump(),
              "best_epoch": final.best_epoch}
    atomic_write_json(join(fit_dir, FIT_JSON), {
        "models": models, "loss": chosen.params.loss, "histories": histories,
        "params": params, "val_macro_f1": final.val_macro_f1, "sweep": sweep_rows})
    return SavedFit(fit_dir, version, backbone_id, params, final.val_macro_f1, sweep_rows)


def evaluate_fit(dataset_dir: str, fit: SavedFit, report_dir: str, config: TrainConfig
                 ) -> Evaluation:
    """Tune per-label thresholds on val, score test once, write the report to `report_dir`.

    `report_dir` (any storage root) receives metrics.json, the val threshold grid, the
    figures and sweep.json.
    """
    from storage.datasets import load_dataset_info
    from storage.shard_reader import verify_once
    from tasks.evaluate import best_thresholds, threshold_grid, write_report
    from tasks.images import make_dataset

    spec = read_json(join(fit.fit_dir, FIT_JSON))
    labels = list(load_dataset_info(dataset_dir).labels)
    with verify_once():
        splits, _ = head_inputs(dataset_dir, embeddings_root(dataset_dir, config),
                                fit.backbone_id, config, splits=("val", "test"))
        (val_x, val_y), (test_x, test_y) = splits["val"], splits["test"]
        selected = _load_head(fit.fit_dir, spec["models"]["selected"])
        compare: dict[str, np.ndarray] = {}
        if "rival" in spec["models"]:  # the selected head's test probabilities, and its rival's
            rival = spec["models"]["rival"]
            compare = {spec["loss"]: selected.predict(test_x, verbose=0),
                       rival["loss"]: _load_head(fit.fit_dir, rival).predict(test_x, verbose=0)}
        final, val_inputs, test_inputs = _final_model(fit, spec, selected, config), val_x, test_x
        if "fine_tuned" in spec["models"]:
            val_inputs, test_inputs = (make_dataset(dataset_dir, s, batch_size=config.batch_size)
                                       .map(lambda x, _: x) for s in ("val", "test"))
        val_probs = final.predict(val_inputs, batch_size=config.batch_size, verbose=0)
        thresholds = best_thresholds(threshold_grid(val_y, val_probs, labels), labels)
        test_probs = final.predict(test_inputs, batch_size=config.batch_size, verbose=0)
        metrics = write_report(
            report_dir, labels=labels, histories=dict(spec["histories"]), val=(val_y, val_probs),
            test=(test_y, test_probs), thresholds=thresholds,
            samples=_report_samples(dataset_dir, test_probs, labels, thresholds),
            compare_probs=compare or None)
    atomic_write_json(join(report_dir, "sweep.json"), spec["sweep"])
    return Evaluation(report_dir, metrics)


def export_fit(fit: SavedFit, evaluation: Evaluation, model_dir: str, config: TrainConfig, *,
               flow_run_id: str | None = None) -> str:
    """Export the fit's final model with the evaluation's thresholds and metrics as a SavedModel.

    Staged locally, then renamed into place or uploaded (`tasks.export.export_model`).
    """
    from tasks.export import export_model

    spec = read_json(join(fit.fit_dir, FIT_JSON))
    head = _final_model(fit, spec, _load_head(fit.fit_dir, spec["models"]["selected"]), config)
    lineage = {"dataset_version": fit.dataset_version, "backbone_id": fit.backbone_id,
               "params": fit.params, "flow_run_id": flow_run_id}
    return export_model(model_dir, backbone_handle=config.backbone, head=head,
                        labels=list(evaluation.metrics["labels"]),
                        thresholds=evaluation.thresholds, metrics=evaluation.metrics,
                        lineage=lineage, image_size=config.image_size, views=config.views,
                        combine=config.combine)


def train(dataset_dir: str, out_dir: str, config: TrainConfig, *,
          flow_run_id: str | None = None, progress: TrainProgress | None = None) -> TrainResult:
    """The whole stage in one call (the CLI's): embed (cached), fit, evaluate, export.

    Writes `<out_dir>/fit/` (the trained weights), `<out_dir>/report/` (metrics.json, PNGs,
    sweep.json) and `<out_dir>/model/` (the SavedModel, which cuts the same views from raw
    posters). Each shard is verified once. Deterministic given `config.seed`.
    """
    from storage.shard_reader import verify_once
    from tasks.embed import embed_dataset

    model_dir = join(out_dir, "model")
    if exists(model_dir):
        raise FileExistsError(f"{model_dir} already exists: train into a new --out folder")
    with verify_once():
        embedded = embed_dataset(
            dataset_dir, embeddings_root(dataset_dir, config), config.backbone,
            views=config.embedded_views(), batch_size=config.embed_batch_size,
            image_size=config.image_size,
            progress=(lambda d, t: progress("embed", d, t)) if progress else None)
        fit = fit_model(dataset_dir, join(out_dir, "fit"), config,
                        backbone_id=embedded.backbone_id, progress=progress)
        evaluation = evaluate_fit(dataset_dir, fit, join(out_dir, "report"), config)
    export_fit(fit, evaluation, model_dir, config, flow_run_id=flow_run_id)
    return TrainResult.of(model_dir, fit, evaluation)
