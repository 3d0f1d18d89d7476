"""Evaluation: the threshold grid and tuned thresholds by hand, the report's files, and
scoring an exported model through its serving signature."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.evaluate import (
    LabelMismatchError,
    best_thresholds,
    evaluate_saved_model,
    plot_learning_curves,
    plot_per_label_f1,
    plot_probability_histograms,
    read_test_probabilities,
    threshold_grid,
    write_evaluation_report,
)
from tasks.model import macro_f1
from tests.export_helpers import LABELS, encoded, export_crafted_model, write_dataset

# Four posters, two labels. "x" positives: 0 and 2; "y" has no positives at all.
Y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], np.float32)
P = np.array([[0.80, 0.10], [0.55, 0.20], [0.35, 0.05], [0.085, 0.30]], np.float32)


def test_grid_has_the_seed_shape_and_hand_computed_counts() -> None:
    grid = threshold_grid(Y, P, ["x", "y"])
    assert list(grid.columns) == ["label", "threshold", "support", "tp", "fn", "fp",
                                  "precision", "recall", "f1"]
    assert len(grid) == 2 * 101 and grid.threshold.iloc[:3].tolist() == [0.0, 0.01, 0.02]
    row = grid[(grid.label == "x") & (grid.threshold == 0.5)].iloc[0]
    # > 0.5 predicts posters 0 and 1: tp=1 (0), fp=1 (1), fn=1 (2)
    assert (row.tp, row.fp, row.fn, row.support) == (1, 1, 1, 2)
    assert (row.precision, row.recall, row.f1) == pytest.approx((0.5, 0.5, 0.5))
    top = grid[(grid.label == "x") & (grid.threshold == 1.0)].iloc[0]
    assert (top.tp, top.precision, top.f1) == (0, 0.0, 0.0)  # nothing predicted: 0, not NaN
    assert not grid.isna().any().any()


def test_best_thresholds_take_lowest_best_f1_and_keep_half_without_signal() -> None:
    grid = threshold_grid(Y, P, ["x", "y"])
    # x: thresholds 0.35..0.54 predict posters 0, 1 -> F1 2/3; 0.09..0.34 add the true 2
    # (tp=2, fp=1): F1 = 4/5, the best; below 0.085 poster 3 joins as a second fp.
    assert best_thresholds(grid, ["x", "y"]) == {"x": 0.09, "y": 0.5}
    chosen = best_thresholds(grid, ["x", "y"])
    assert macro_f1(Y[:, :1], P[:, :1], chosen["x"]) == pytest.approx(0.8)


def test_grid_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match=r"expected probabilities \[n, 3\], got \(4, 2\)"):
        threshold_grid(Y, P, ["x", "y", "z"])


def test_write_evaluation_report_writes_figures_and_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = ["Action", "Comedy", "Drama"]
    val = (rng.integers(0, 2, (40, 3)).astype(np.float32), rng.random((40, 3), np.float32))
    test = (rng.integers(0, 2, (30, 3)).astype(np.float32), rng.random((30, 3), np.float32))
    history = {"loss": [0.9, 0.8, 0.7], "val_loss": [0.95, 0.85, 0.8],
               "macro_f1": [0.3, 0.4, 0.5], "val_macro_f1": [0.25, 0.35, 0.4]}
    thresholds = best_thresholds(threshold_grid(*val, labels), labels)
    samples = [(encoded("JPEG", seed=i), ["Drama"], ["Drama", "Comedy"]) for i in range(5)]
    metrics = write_evaluation_report(
        tmp_path / "report", labels=labels, histories={"soft_f1": history, "bce": history},
        val=val, test=test, thresholds=thresholds, samples=samples,
        compare_probs={"soft_f1": test[1], "bce": test[1] ** 2},
    )
    files = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert files == ["learning_curves.png", "metrics.json", "per_label_f1.png", "poster_grid.png",
                     "probability_histograms.png", "test_probabilities.npy",
                     "threshold_grid.csv"]
    for name in files:
        if name.endswith(".png"):
            assert Image.open(io.BytesIO((tmp_path / "report" / name).read_bytes())).size[0] > 100
    assert json.loads((tmp_path / "report" / "metrics.json").read_text()) == metrics
    assert metrics["test"]["macro_f1"] == pytest.approx(macro_f1(*test))
    assert metrics["val"]["macro_f1_tuned"] == pytest.approx(macro_f1(*val, thresholds, labels))
    assert metrics["val"]["macro_f1_tuned"] >= metrics["val"]["macro_f1"]  # tuned on val
    assert set(metrics["test"]["per_label_tuned"]) == set(labels)
    assert metrics["thresholds"] == thresholds and metrics["test"]["records"] == 30
    assert len(pd.read_csv(tmp_path / "report" / "threshold_grid.csv")) == 3 * 101
    stored = read_test_probabilities(str(tmp_path / "report"))
    assert stored.dtype == np.float32 and np.array_equal(stored, test[1])


def test_no_figure_legend_searches_for_its_place() -> None:
    # matplotlib's loc="best" scans every plotted point and warns (an error under this
    # suite's filters) when that takes over a second, which a busy machine reaches.
    rng = np.random.default_rng(0)
    labels = ["Action", "Comedy", "Drama"]
    y, p = rng.integers(0, 2, (50, 3)).astype(np.float32), rng.random((50, 3), np.float32)
    history = {"loss": [0.9, 0.8], "val_loss": [0.9, 0.85],
               "macro_f1": [0.3, 0.4], "val_macro_f1": [0.2, 0.3]}
    split = {"macro_f1_tuned": 0.5, "per_label_tuned": {name: {"f1": 0.5} for name in labels}}
    figures = [
        plot_learning_curves({"soft_f1": history}),
        plot_per_label_f1({"val": split, "test": split}, labels),
        plot_probability_histograms(y, {"soft_f1": p}, labels, dict.fromkeys(labels, 0.5)),
    ]
    legends = [ax.get_legend() for fig in figures for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 4
    assert all(legend._loc != 0 for legend in legends)  # 0 is matplotlib's code for "best"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crafted model: probabilities [0.3, 0.6, 0.9], thresholds a 0.2, b 0.7, c 0.5."""
    return export_crafted_model(tmp_path_factory.mktemp("eval"))


def test_evaluate_saved_model_scores_through_the_signature(exported: Path, tmp_path: Path) -> None:
    truth = [[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]]
    dataset = write_dataset(tmp_path, "test", truth)
    result = evaluate_saved_model(exported, dataset, "test")
    # @0.5: b and c predicted everywhere; a: F1 0, b: tp1 fp3 -> 0.4, c: tp2 fp2 -> 2/3
    assert result["macro_f1"] == pytest.approx((0 + 0.4 + 2 / 3) / 3, abs=1e-6)
    # tuned: a and c predicted everywhere (2/3 each), b never (0)
    assert result["macro_f1_tuned"] == pytest.approx(4 / 9, abs=1e-6)
    assert (result["records"], result["split"]) == (4, "test")


def test_evaluate_saved_model_refuses_other_labels(exported: Path, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path, "test", [[1, 0, 1]], labels=["a", "b", "z"])
    with pytest.raises(LabelMismatchError, match=r"predicts labels \['a', 'b', 'c'\]"):
        evaluate_saved_model(exported, dataset, "test")
    assert LABELS == ["a", "b", "c"]
