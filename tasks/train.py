"""Train the genre head on cached backbone features: the fit loop, model selection, the stage.

The tutorial trained a frozen MobileNetV2 + head end to end on decoded images for 30 epochs,
so the backbone ran 30 times per poster. Here the backbone runs once per poster and view
(`tasks.embed`, cached by sha256 + backbone + view), and epochs run on 1280-d features: with
no augmentation this is the same computation (tests/unit/test_train.py proves equal losses).
The default recipe (`tasks.train_config`) sees seven views of each poster (`tasks.images`),
trains a faster, regularised head on each view's features as an example of its own and
predicts from the views' averaged features; `recipe="tutorial"` is the tutorial's method.
Model selection uses the val split only: early stopping on whole-split val macro F1 (best
weights restored), an optional sweep over head hyperparameters and an optional ensemble of
the best heads. The test split is scored once, for the report. Fine-tuning's model is built
by `tasks.fine_tune`.

The stage is three pieces, each a Prefect task in the train flow (`flows/train_tasks.py`) and
called in turn by `train` (the CLI): `fit_model` trains on cached features and saves the
trained models to a fit folder (`storage.fits`); `tasks.evaluate.evaluate_fit` tunes
thresholds on val, scores test once and writes the report; `tasks.export.export_fit` writes
the SavedModel. A failed export therefore never redoes the fit.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from storage.fits import SavedFit, has_fit, save_head, save_weights, write_fit_spec
from storage.fs import exists
from storage.layout import RunFolder, data_root_of
from tasks.head_inputs import Split, TrainingRows, head_inputs, training_inputs
from tasks.model import build_head, ensemble_head, get_loss, macro_f1
from tasks.progress_log import EVERY_S
from tasks.train_config import HeadParams, LossName, TrainConfig

if TYPE_CHECKING:
    import tensorflow as tf
    import tf_keras

    from tasks.evaluate import Evaluation

log = logging.getLogger(__name__)

TrainProgress = Callable[[str, int, int], None]  # (step: "embed" | "epochs" | ..., done, total)


@dataclass
class FitResult:
    """A trained model and how it got there."""

    model: Any  # tf_keras.Model
    params: HeadParams
    history: dict[str, list[float]]
    best_epoch: int
    val_macro_f1: float


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
    def of(cls, model_dir: str, saved: SavedFit, evaluation: Evaluation) -> TrainResult:
        """The stage's result from its pieces' results."""
        return cls(model_dir, evaluation.report_dir, evaluation.metrics, saved.params,
                   saved.backbone_id, saved.sweep)


def _val_callback(inputs: Any, y_true: np.ndarray, loss: LossName, batch_size: int,
                  epochs: int, on_epoch: Callable[[int], None]) -> tf_keras.callbacks.Callback:
    """A callback adding whole-split `val_loss` and `val_macro_f1` to each epoch's logs.

    Whole split, not batch-averaged: soft F1 and F1 over batches are biased estimates.
    Each epoch's line is logged at INFO at most every `EVERY_S` (a log reader sees
    progress, not a wall of sub-second epochs), the others at DEBUG (`-v`).
    """
    import tf_keras

    last_info = [-float("inf")]

    class WholeSplitValidation(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs if logs is not None else {}
            probs = self.model.predict(inputs, batch_size=batch_size, verbose=0)
            logs["val_loss"] = float(get_loss(loss)(y_true, probs))
            logs["val_macro_f1"] = macro_f1(y_true, probs)
            now = time.monotonic()
            level = logging.INFO if now - last_info[0] >= EVERY_S else logging.DEBUG
            if level == logging.INFO:
                last_info[0] = now
            log.log(level, "epoch %d of %d (%d%%): loss %.4f, val loss %.4f, val macro F1 %.4f",
                     epoch + 1, epochs, 100 * (epoch + 1) // epochs, logs.get("loss", np.nan),
                     logs["val_loss"], logs["val_macro_f1"])
            on_epoch(epoch + 1)

    return WholeSplitValidation()


def features_dataset(train: TrainingRows, batch_size: int, shuffle_buffer: int, seed: int
                     ) -> tf.data.Dataset:
    """Shuffled training batches of (features, labels), the seed's shuffle(1024) then batch.

    The rows stream from `train.chunks` each epoch, in one order: the batches are those of
    the same rows held in memory. With an alternate (the same posters' features from an
    augmented view, e.g. mirrored), each example takes its alternate features with
    probability 1/2, drawn anew each epoch.
    """
    import tensorflow as tf

    inputs = tf.TensorSpec([None, train.input_dim], tf.float32)
    labels = tf.TensorSpec([None, train.n_labels], tf.float32)
    data = tf.data.Dataset.from_generator(
        train.chunks, output_signature=(inputs, inputs, labels) if train.has_alternate
        else (inputs, labels)).unbatch()
    # A known length, as an array's dataset has: Keras then reshuffles each epoch the same way.
    data = data.apply(tf.data.experimental.assert_cardinality(train.rows))
    data = data.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if train.has_alternate:
        data = data.map(lambda a, b, labels: (
            tf.where(tf.random.uniform([]) < 0.5, b, a), labels))
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fit_epochs(model: tf_keras.Model, train_data: tf.data.Dataset,
               val: tuple[Any, np.ndarray], loss: LossName, *, epochs: int, config: TrainConfig,
               on_epoch: Callable[[int], None] = lambda _: None,
               ) -> tuple[dict[str, list[float]], int, float]:
    """Fit a compiled model, scoring the whole val split each epoch; early stop if asked.

    `val` is (inputs, labels): inputs as `model.predict` takes them (array or dataset).
    Returns (history, best epoch (1-based), its val macro F1); with early stopping the model
    ends with the best epoch's weights, else with the last epoch's (as the seed).
    """
    import tf_keras

    callbacks = [_val_callback(*val, loss, config.batch_size, epochs, on_epoch)]
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


def fit_head(train: TrainingRows, val_split: Split, params: HeadParams, config: TrainConfig,
             on_epoch: Callable[[int], None] = lambda _: None, *, seed: int | None = None,
             name: str = "head") -> FitResult:
    """Train one head on cached features (deterministic given the seed, default config.seed)."""
    import tf_keras

    seed = config.seed if seed is None else seed
    tf_keras.utils.set_random_seed(seed)
    with distribution_strategy(config.distribution).scope():
        head = build_head(train.n_labels, params.hidden, params.dropout,
                          input_dim=train.input_dim, name=name)
        head.compile(optimizer=optimizer(params), loss=get_loss(params.loss))
    data = features_dataset(train, config.batch_size, config.shuffle_buffer, seed)
    history, best, score = fit_epochs(head, data, val_split, params.loss, epochs=params.epochs,
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


def select_head(train: TrainingRows, val_split: Split, config: TrainConfig,
                progress: TrainProgress | None = None) -> tuple[FitResult, list[dict[str, Any]]]:
    """The configured head or the sweep's best by val macro F1, ensembled if asked.

    Ensemble: the `config.ensemble` best sweep heads (they are trained anyway), or without a
    sweep the configured head under that many seeds; probabilities are averaged.
    """
    if not config.sweep:
        epochs = config.head.epochs
        fits = [fit_head(train, val_split, config.head, config,
                         (lambda e: progress and progress("epochs", e, epochs)) if i == 0
                         else (lambda _: None), seed=config.seed + i, name=f"head_{i}")
                for i in range(config.ensemble)]
        if progress:  # early stopping may end before `epochs`: the bar ends where it did
            stopped = len(fits[0].history["loss"])
            progress("epochs", stopped, stopped)
        return _ensemble(fits, val_split), []
    candidates = sweep_grid(config)
    fits, rows = [], []
    for i, params in enumerate(candidates, start=1):
        result = fit_head(train, val_split, params, config, name=f"head_{i}")
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


def fine_tune(dataset_dir: str, head_fit: FitResult, val_y: np.ndarray, config: TrainConfig,
              progress: TrainProgress | None = None, *,
              train_data: tf.data.Dataset | None = None) -> FitResult:
    """Train the top backbone blocks and the head end to end on decoded images from the shards.

    `train_data`: (images, labels) batches to train on instead of the whole train split.
    """
    import tf_keras

    from tasks.fine_tune import fine_tune_model
    from tasks.images import make_dataset

    with distribution_strategy(config.distribution).scope():
        model, plain, updated = fine_tune_model(head_fit.model, config)
        model.compile(optimizer=tf_keras.optimizers.Adam(config.fine_tune_learning_rate),
                      loss=get_loss(head_fit.params.loss))
    log.info("fine-tuning %d backbone variables (top %d blocks) and the head",
             updated, config.fine_tune_blocks)
    tf_keras.utils.set_random_seed(config.seed)
    if train_data is None:
        train_data = make_dataset(dataset_dir, "train", batch_size=config.batch_size,
                                  shuffle_seed=config.seed, shuffle=True,
                                  image_size=config.image_size)
    val_images = make_dataset(dataset_dir, "val", batch_size=config.batch_size,
                              image_size=config.image_size).map(lambda x, _: x)
    epochs = config.fine_tune_epochs
    history, best, score = fit_epochs(
        model, train_data, (val_images, val_y), head_fit.params.loss, epochs=epochs,
        config=config, on_epoch=lambda e: progress and progress("fine-tune", e, epochs))
    return FitResult(plain, head_fit.params, history, best, score)  # same layers, no train_step


# --- the stage's pieces: fit (here), evaluate (tasks.evaluate), export (tasks.export) ------


def fit_model(dataset_dir: str, fit_dir: str, config: TrainConfig, *, backbone_id: str,
              progress: TrainProgress | None = None) -> SavedFit:
    """Select and train the head(s) on cached features (fine-tune if asked); save to `fit_dir`.

    Reads the train and val splits (labels from the shards, features from the embedding
    cache of the `resolved` config, which must hold them: `tasks.embed`). `fit_dir` may be on
    any storage root; its `fit.json` is written last. Deterministic given `config.seed`.
    """
    from storage.datasets import load_dataset_info
    from storage.shard_reader import verify_once
    from tasks.fine_tune import FINE_TUNED

    if has_fit(fit_dir):
        raise FileExistsError(f"{fit_dir} already holds a fit: fit into a new folder")
    version = load_dataset_info(dataset_dir).version
    with verify_once(), training_inputs(dataset_dir, backbone_id, config) as train_rows:
        val = head_inputs(dataset_dir, backbone_id, config, splits=("val",))["val"]
        chosen, sweep_rows = select_head(train_rows, val, config, progress)
        # Saved before fine-tuning trains it further: the report compares the losses on it.
        models = {"selected": save_head(fit_dir, "selected", chosen.model)}
        histories: list[tuple[str, dict[str, list[float]]]] = [(chosen.params.loss,
                                                                 chosen.history)]
        if config.compare_losses:
            other = chosen.params.model_copy(
                update={"loss": "bce" if chosen.params.loss != "bce" else "soft_f1"})
            rival = fit_head(train_rows, val, other, config)
            models["rival"] = {**save_head(fit_dir, "rival", rival.model), "loss": other.loss}
            histories.append((other.loss, rival.history))
        final = chosen
        if config.fine_tune_blocks > 0:
            final = fine_tune(dataset_dir, chosen, val[1], config, progress)
            models[FINE_TUNED] = save_weights(fit_dir, FINE_TUNED, final.model)
            histories.append(("fine_tune", final.history))
    params = {**config.model_dump(), "head": final.params.model_dump(),
              "best_epoch": final.best_epoch}
    write_fit_spec(fit_dir, {
        "models": models, "loss": chosen.params.loss, "histories": histories,
        "params": params, "val_macro_f1": final.val_macro_f1, "sweep": sweep_rows})
    return SavedFit(fit_dir, version, backbone_id, params, final.val_macro_f1, sweep_rows)


def train(dataset_dir: str, out_dir: str, config: TrainConfig, *,
          flow_run_id: str | None = None, progress: TrainProgress | None = None) -> TrainResult:
    """The whole stage in one call (the CLI's): embed (cached), fit, evaluate, export.

    Writes the run folder `out_dir` (`storage.layout.RunFolder`): `fit/` (the trained
    weights), `report/` (metrics.json, PNGs, sweep.json) and `model/` (the SavedModel, which
    cuts the same views from raw posters). The embedding cache defaults to the dataset's data
    root's (`TrainConfig.resolved`). Each shard is verified once. Deterministic given
    `config.seed`.
    """
    from storage.shard_reader import verify_once
    from tasks.embed import embed_dataset
    from tasks.evaluate import evaluate_fit
    from tasks.export import export_fit

    run = RunFolder(out_dir)
    if exists(run.model_dir):
        raise FileExistsError(f"{run.model_dir} already exists: train into a new --out folder")
    config = config.resolved(data_root_of(dataset_dir))
    with verify_once():
        embedded = embed_dataset(
            dataset_dir, config.cache_root, config.backbone,
            views=config.embedded_views(), batch_size=config.embed_batch_size,
            image_size=config.image_size,
            progress=(lambda d, t: progress("embed", d, t)) if progress else None)
        saved = fit_model(dataset_dir, run.fit_dir, config, backbone_id=embedded.backbone_id,
                          progress=progress)
        evaluation = evaluate_fit(dataset_dir, saved, run.report_dir, config)
    export_fit(saved, evaluation, run.model_dir, config, flow_run_id=flow_run_id)
    return TrainResult.of(run.model_dir, saved, evaluation)
