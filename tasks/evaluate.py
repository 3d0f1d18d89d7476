"""Honest evaluation: the seed's threshold grid, per-label thresholds tuned on val, the report.

Every score is computed over a whole split with the metrics of `tasks.model` (never averaged
over batches). Thresholds are chosen on val; the test split is scored once, with them. The
report is a folder of PNG figures plus `metrics.json`; `evaluate_saved_model` scores an
exported model (through its own serving signature) on any dataset split, so the registry can
compare a champion and a candidate on the same records.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from storage.fits import SavedFit, load_head, read_fit_spec
from storage.fs import atomic_write_bytes, atomic_write_json, join, url_to_fs
from tasks.model import (
    bootstrap_f1_intervals,
    confusion_counts,
    macro_f1,
    micro_f1,
    per_label_scores,
)

if TYPE_CHECKING:
    from tasks.train_config import TrainConfig

log = logging.getLogger(__name__)

GRID_STEPS = 100  # thresholds 0.00, 0.01, ..., 1.00 (the seed's grid)
DEFAULT_THRESHOLD = 0.5  # used for a label whose val split gives no signal to tune on
TOP_LABELS = 6  # labels shown in the probability histograms
EVAL_BATCH = 64  # encoded posters per call of the serving signature
REPORT_SAMPLES = 16  # test posters in the report's poster grid


@dataclass(frozen=True)
class Evaluation:
    """The report's folder and its metrics (thresholds tuned on val, test scored once)."""

    report_dir: str
    metrics: dict[str, Any]

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.metrics["thresholds"])


class LabelMismatchError(ValueError):
    """A model's labels differ from a dataset's labels, so its scores would be meaningless."""


def threshold_grid(y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """Per label and threshold 0..1 (step 0.01): support, tp, fn, fp, precision, recall, f1."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    if y_prob.ndim != 2 or y_prob.shape[1] != len(labels):
        raise ValueError(f"expected probabilities [n, {len(labels)}], got {y_prob.shape}")
    thresholds = np.round(np.linspace(0.0, 1.0, GRID_STEPS + 1), 2)
    counts = [confusion_counts(y_true, y_prob, float(t)) for t in thresholds]
    tp, fp, fn = (np.stack([c[i] for c in counts], axis=1).ravel() for i in range(3))
    grid = pd.DataFrame({
        "label": np.repeat(list(labels), len(thresholds)),
        "threshold": np.tile(thresholds, len(labels)),
        "support": (tp + fn).astype(np.int64),
        "tp": tp.astype(np.int64),
        "fn": fn.astype(np.int64),
        "fp": fp.astype(np.int64),
    })
    grid["precision"] = _ratio(grid.tp, grid.tp + grid.fp)
    grid["recall"] = _ratio(grid.tp, grid.tp + grid.fn)
    grid["f1"] = _ratio(2 * grid.tp, 2 * grid.tp + grid.fp + grid.fn)
    return grid


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    """num / den with 0 where den is 0 (the zero_division=0 convention of tasks.model)."""
    return (num / den.where(den > 0)).fillna(0.0)


def best_thresholds(grid: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    """Per label, the lowest threshold with the best F1 on the grid (0.5 where F1 is 0 everywhere).

    A label without a single true positive at any threshold gives nothing to tune on; the
    grid's argmax would then be threshold 0 (predict it for every poster), so keep 0.5.
    """
    chosen: dict[str, float] = {}
    for name in labels:
        rows = grid[grid.label == name]
        if rows.empty:
            raise ValueError(f"label {name!r} is not in the threshold grid")
        best = rows.loc[rows.f1.idxmax()]
        chosen[name] = float(best.threshold) if best.f1 > 0 else DEFAULT_THRESHOLD
    return chosen


def split_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str], thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """Whole-split scores at 0.5 and at the tuned thresholds, with per-label P/R/F1 and
    95% bootstrap intervals of macro F1 @0.5 and of each label's tuned F1."""
    macro_ci, _ = bootstrap_f1_intervals(y_true, y_prob, 0.5)
    _, label_ci = bootstrap_f1_intervals(y_true, y_prob, thresholds, labels)
    tuned = per_label_scores(y_true, y_prob, labels, thresholds)
    for name, (lo, hi) in zip(labels, label_ci, strict=True):
        tuned[name]["f1_ci95"] = [float(lo), float(hi)]
    return {
        "records": int(len(y_true)),
        "macro_f1": macro_f1(y_true, y_prob),
        "macro_f1_ci95": macro_ci,
        "micro_f1": micro_f1(y_true, y_prob),
        "macro_f1_tuned": macro_f1(y_true, y_prob, thresholds, labels),
        "micro_f1_tuned": micro_f1(y_true, y_prob, thresholds, labels),
        "per_label": per_label_scores(y_true, y_prob, labels),
        "per_label_tuned": tuned,
    }


TEST_PROBABILITIES = "test_probabilities.npy"  # float32 [test posters, labels], records' order


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32))
    return buffer.getvalue()


def read_test_probabilities(report_dir: str) -> np.ndarray:
    """The test split's probabilities that `write_evaluation_report` stored."""
    fs, inner = url_to_fs(join(str(report_dir), TEST_PROBABILITIES))
    return np.load(io.BytesIO(fs.cat_file(inner)))


def write_evaluation_report(
    report_dir: str | Path,
    *,
    labels: Sequence[str],
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    thresholds: Mapping[str, float],
    samples: Sequence[tuple[bytes, Sequence[str], Sequence[str]]],
    compare_probs: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write metrics.json, the val threshold grid, the test probabilities and the report's
    figures; return the metrics."""
    labels = list(labels)
    metrics: dict[str, Any] = {
        "labels": labels,
        "thresholds": {name: float(thresholds[name]) for name in labels},
        "val": split_metrics(*val, labels, thresholds),
        "test": split_metrics(*test, labels, thresholds),
    }
    root = str(report_dir)
    grid = threshold_grid(*val, labels)
    atomic_write_bytes(join(root, "threshold_grid.csv"), grid.to_csv(index=False).encode())
    # The card's best and worst posters come from these, not from scoring the export again.
    atomic_write_bytes(join(root, TEST_PROBABILITIES), _npy(test[1]))
    figures = {
        "learning_curves.png": lambda: plot_learning_curves(histories),
        "per_label_f1.png": lambda: plot_per_label_f1(metrics, labels),
        "probability_histograms.png": lambda: plot_probability_histograms(
            test[0], compare_probs or {"model": test[1]}, labels, thresholds),
        "poster_grid.png": lambda: plot_poster_grid(samples),
    }
    for name, draw in figures.items():
        atomic_write_bytes(join(root, name), _png(draw()))
    atomic_write_json(join(root, "metrics.json"), metrics)
    log.info("report in %s: val macro F1 %.4f (tuned %.4f), test macro F1 %.4f (tuned %.4f)",
             root, metrics["val"]["macro_f1"], metrics["val"]["macro_f1_tuned"],
             metrics["test"]["macro_f1"], metrics["test"]["macro_f1_tuned"])
    return metrics


def _figure(rows: int, cols: int, width: float, height: float) -> tuple[Any, np.ndarray]:
    """A matplotlib figure on the Agg backend (no display needed) and its axes as a 2-D array."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig, np.atleast_2d(fig.subplots(rows, cols, squeeze=False))


def _png(fig: Any) -> bytes:
    """Render a figure to PNG bytes with the Agg canvas."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def plot_learning_curves(histories: Mapping[str, Mapping[str, Sequence[float]]]) -> Any:
    """Loss and val macro F1 per epoch, one line per training run."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(1, 2, 6, 4)
    for run, history in histories.items():
        for key, style in (("loss", "-"), ("val_loss", "--")):
            if key in history:
                axes[0, 0].plot(_epochs(history[key]), history[key], style, label=f"{run} {key}")
        for key, style in (("macro_f1", "-"), ("val_macro_f1", "--")):
            if key in history:
                axes[0, 1].plot(_epochs(history[key]), history[key], style, label=f"{run} {key}")
    # A fixed legend corner: loc="best" searches every plotted point and warns when
    # that takes over a second (long histories on a busy machine).
    panels = (("loss", "upper right"), ("macro F1 @ 0.5", "lower right"))
    for ax, (title, corner) in zip(axes[0], panels, strict=True):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend(fontsize="small", loc=corner)
    return fig


def _epochs(values: Sequence[float]) -> list[int]:
    """1-based epoch numbers for a history series."""
    return list(range(1, len(values) + 1))


def plot_per_label_f1(metrics: Mapping[str, Any], labels: Sequence[str]) -> Any:
    """Per-label F1 bars: val and test, at the tuned thresholds."""
    fig, axes = _figure(1, 1, max(6.0, 0.6 * len(labels)), 4)
    ax, x, width = axes[0, 0], np.arange(len(labels)), 0.4
    for offset, split in ((-width / 2, "val"), (width / 2, "test")):
        f1 = [metrics[split]["per_label_tuned"][name]["f1"] for name in labels]
        macro = metrics[split]["macro_f1_tuned"]
        ax.bar(x + offset, f1, width, label=f"{split} (macro {macro:.3f})")
    ax.set_xticks(x, labels, rotation=45, ha="right")
    # Head room above F1 = 1 keeps the fixed legend corner off the bars.
    ax.set(ylim=(0, 1.2), yticks=np.linspace(0, 1, 6), ylabel="F1 at tuned thresholds",
           title="per-label F1")
    ax.legend(loc="upper right", ncols=2)
    return fig


def plot_probability_histograms(
    y_true: np.ndarray, probs: Mapping[str, np.ndarray], labels: Sequence[str],
    thresholds: Mapping[str, float],
) -> Any:
    """Test-set probability histograms of the most frequent labels, one column per model/loss."""
    top = np.argsort(-np.asarray(y_true).sum(axis=0), kind="stable")[:TOP_LABELS]
    fig, axes = _figure(len(top), len(probs), 4, 2.2)
    bins = np.linspace(0, 1, 41)
    for col, (name, prob) in enumerate(probs.items()):
        for row, j in enumerate(top):
            ax, positive = axes[row, col], np.asarray(y_true)[:, j] > 0.5
            ax.hist(prob[~positive, j], bins=bins, alpha=0.6, label="negative")
            ax.hist(prob[positive, j], bins=bins, alpha=0.6, label="positive")
            ax.axvline(thresholds[labels[j]], color="black", linestyle=":")
            ax.set_title(f"{name}: {labels[j]}", fontsize="small")
    axes[0, 0].legend(fontsize="small", loc="upper center")
    return fig


def plot_poster_grid(samples: Sequence[tuple[bytes, Sequence[str], Sequence[str]]]) -> Any:
    """Posters with their true and predicted genres."""
    import io

    from PIL import Image

    cols = min(4, max(1, len(samples)))
    rows = max(1, -(-len(samples) // cols))
    fig, axes = _figure(rows, cols, 3, 4.2)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, true, predicted) in zip(axes.ravel(), samples, strict=False):
        ax.imshow(Image.open(io.BytesIO(image)).convert("RGB"))
        ax.set_title(f"true: {', '.join(true) or '-'}\npred: {', '.join(predicted) or '-'}",
                     fontsize="small")
    return fig


def evaluate_saved_model(
    model_dir: str | Path, dataset_dir: str | Path, split: str = "test"
) -> dict[str, Any]:
    """Score an exported model on a dataset split through its serving signature (raw bytes in)."""
    from tasks.export import load_model_assets

    assets = load_model_assets(model_dir)
    truth, prob = predict_split(model_dir, dataset_dir, split)
    result = split_metrics(truth, prob, assets["labels"], assets["thresholds"])
    return {"split": split, "model_dir": str(model_dir), **result}


def predict_split(
    model_dir: str | Path, dataset_dir: str | Path, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """(truth, probabilities) of an exported model on a split, in `read_records` order."""
    import tensorflow as tf

    from storage.datasets import load_dataset_info
    from storage.shard_reader import read_records
    from tasks.export import load_model_assets

    labels = load_model_assets(model_dir)["labels"]
    dataset_labels = load_dataset_info(dataset_dir).labels
    if labels != dataset_labels:
        raise LabelMismatchError(
            f"model {model_dir} predicts labels {labels}, "
            f"dataset {dataset_dir} has {dataset_labels}")
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    y_true, y_prob = [], []
    for batch in read_records(str(dataset_dir), split).batch(EVAL_BATCH):
        y_prob.append(serve(images=batch["image"])["probabilities"].numpy())
        y_true.append(batch["labels"].numpy())
    if not y_true:
        raise ValueError(f"split {split!r} of {dataset_dir} has no records to evaluate on")
    return np.concatenate(y_true), np.concatenate(y_prob)


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


def evaluate_fit(dataset_dir: str, saved: SavedFit, report_dir: str, config: TrainConfig
                 ) -> Evaluation:
    """Tune per-label thresholds on val, score test once, write the report to `report_dir`.

    `config` must be `resolved` (the embedding cache's root known). `report_dir` (any storage
    root) receives metrics.json, the val threshold grid, the figures and sweep.json.
    """
    from storage.datasets import load_dataset_info
    from storage.shard_reader import verify_once
    from tasks.fine_tune import final_model, takes_images
    from tasks.head_inputs import head_inputs
    from tasks.images import make_dataset

    spec = read_fit_spec(saved.fit_dir)
    labels = list(load_dataset_info(dataset_dir).labels)
    with verify_once():
        splits = head_inputs(dataset_dir, saved.backbone_id, config, splits=("val", "test"))
        (val_x, val_y), (test_x, test_y) = splits["val"], splits["test"]
        selected = load_head(saved.fit_dir, spec["models"]["selected"])
        compare: dict[str, np.ndarray] = {}
        if "rival" in spec["models"]:  # the selected head's test probabilities, and its rival's
            rival = spec["models"]["rival"]
            compare = {spec["loss"]: selected.predict(test_x, verbose=0),
                       rival["loss"]: load_head(saved.fit_dir, rival).predict(test_x, verbose=0)}
        final, val_inputs, test_inputs = (final_model(saved.fit_dir, spec, selected, config),
                                          val_x, test_x)
        if takes_images(spec):
            val_inputs, test_inputs = (
                make_dataset(dataset_dir, s, batch_size=config.batch_size,
                             image_size=config.image_size).map(lambda x, _: x)
                for s in ("val", "test"))
        val_probs = final.predict(val_inputs, batch_size=config.batch_size, verbose=0)
        thresholds = best_thresholds(threshold_grid(val_y, val_probs, labels), labels)
        test_probs = final.predict(test_inputs, batch_size=config.batch_size, verbose=0)
        metrics = write_evaluation_report(
            report_dir, labels=labels, histories=dict(spec["histories"]), val=(val_y, val_probs),
            test=(test_y, test_probs), thresholds=thresholds,
            samples=_report_samples(dataset_dir, test_probs, labels, thresholds),
            compare_probs=compare or None)
    atomic_write_json(join(report_dir, "sweep.json"), spec["sweep"])
    return Evaluation(report_dir, metrics)
