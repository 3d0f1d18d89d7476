"""Losses, whole-split metrics and the head against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks import model

# Three examples, three labels. Label "c" has no positives and is never predicted.
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
P = np.array([[0.9, 0.6, 0.1], [0.4, 0.7, 0.2], [0.2, 0.3, 0.5]], np.float32)
LABELS = ["a", "b", "c"]
# @0.5 ("> 0.5"): a: tp=1 fn=1 fp=0 -> P=1, R=.5, F1=2/3; b: tp=1 fp=1 fn=1 -> F1=.5;
# c: 0.5 is not > 0.5, so no prediction; no positives -> F1 = 0 (zero_division=0).


def test_macro_soft_f1_matches_hand_computation() -> None:
    # soft counts per label: a: tp=1.3 fp=.2 fn=.7; b: tp=1.0 fp=.6 fn=1.0; c: tp=0 fp=.8 fn=0
    expected = 1 - np.mean([2.6 / (2.6 + 0.7 + 0.2), 2.0 / (2.0 + 1.0 + 0.6), 0.0])
    assert float(model.macro_soft_f1(Y, P)) == pytest.approx(expected, rel=1e-6)


def test_macro_soft_f1_is_zero_for_perfect_predictions_and_one_for_inverted() -> None:
    assert float(model.macro_soft_f1(Y[:, :2], Y[:, :2])) == pytest.approx(0.0, abs=1e-7)
    assert float(model.macro_soft_f1(Y[:, :2], 1 - Y[:, :2])) == pytest.approx(1.0)


def test_bce_matches_formula() -> None:
    expected = -np.mean(Y * np.log(P) + (1 - Y) * np.log(1 - P))
    assert float(model.bce_loss(Y, P)) == pytest.approx(expected, rel=1e-5)


def test_get_loss_names_and_rejects_unknown() -> None:
    assert model.get_loss("soft_f1") is model.macro_soft_f1
    assert model.get_loss("bce") is model.bce_loss
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        model.get_loss("mse")  # type: ignore[arg-type]


def test_macro_and_micro_f1_hand_computed() -> None:
    assert model.macro_f1(Y, P) == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    # pooled: tp=2 fp=1 fn=2 -> 4 / 7
    assert model.micro_f1(Y, P) == pytest.approx(4 / 7)


def test_per_label_scores_hand_computed() -> None:
    scores = model.per_label_scores(Y, P, LABELS)
    assert scores["a"] == pytest.approx({"precision": 1, "recall": 0.5, "f1": 2 / 3, "support": 2,
                                         "predicted": 1})
    assert scores["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2,
                                         "predicted": 2})
    assert scores["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0,
                           "predicted": 0}


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_posters() -> None:
    rng = np.random.default_rng(3)
    truth = rng.random((2000, 3)) < 0.3
    prob = np.clip(truth * 0.4 + rng.random((2000, 3)) * 0.6, 0, 1)
    widths = []
    for n in (100, 2000):
        macro, per_label = model.bootstrap_f1_intervals(truth[:n], prob[:n], 0.5)
        assert macro[0] < model.macro_f1(truth[:n], prob[:n]) < macro[1]
        scores = model.per_label_scores(truth[:n], prob[:n], ["a", "b", "c"])
        for (lo, hi), s in zip(per_label, scores.values(), strict=True):
            assert lo <= s["f1"] <= hi
        widths.append(macro[1] - macro[0])
    assert widths[1] < widths[0] / 3  # ~1/sqrt(20) as wide
    again, _ = model.bootstrap_f1_intervals(truth[:100], prob[:100], 0.5)
    assert again == model.bootstrap_f1_intervals(truth[:100], prob[:100], 0.5)[0]  # seeded


def test_per_label_thresholds_by_vector_and_by_name() -> None:
    # lowering a's threshold to 0.3 makes example 2 a tp: a -> F1 = 1; c at 0.4 -> one fp, F1 = 0
    by_name = {"a": 0.3, "b": 0.5, "c": 0.4}
    scores = model.per_label_scores(Y, P, LABELS, by_name)
    assert scores["a"]["f1"] == 1.0 and scores["c"]["precision"] == 0.0
    assert model.macro_f1(Y, P, [0.3, 0.5, 0.4]) == pytest.approx((1 + 0.5 + 0) / 3)
    assert model.macro_f1(Y, P, by_name, LABELS) == model.macro_f1(Y, P, [0.3, 0.5, 0.4])
    with pytest.raises(ValueError, match=r"missing labels \['c'\]"):
        model.macro_f1(Y, P, {"a": 0.3, "b": 0.5}, LABELS)


def test_threshold_is_strictly_greater_than() -> None:
    assert model.macro_f1(np.array([[1.0]]), np.array([[0.5]])) == 0.0
    assert model.macro_f1(np.array([[1.0]]), np.array([[0.51]])) == 1.0


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"one shape \[n, labels\], got \(3, 3\) and \(3, 2\)"):
        model.macro_f1(Y, P[:, :2])


def test_build_head_shapes_and_layers() -> None:
    head = model.build_head(5, hidden=16, dropout=0.2, input_dim=8)
    assert [layer.name for layer in head.layers] == ["dropout", "hidden_layer", "output"]
    out = head(np.zeros((2, 8), np.float32)).numpy()
    assert out.shape == (2, 5) and np.allclose(out, 0.5)  # zero features, zero biases
    probe = model.build_head(3, hidden=0, input_dim=8)
    assert [layer.name for layer in probe.layers] == ["output"]
    assert math.isclose(probe.count_params(), 8 * 3 + 3)


def test_view_examples_give_each_view_its_own_row_with_its_poster_labels() -> None:
    stacked = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # 2 posters, 3 views
    labels = np.array([[1, 0], [0, 1]], np.float32)
    x, y = model.view_examples(stacked, labels)
    np.testing.assert_array_equal(x, np.concatenate([stacked[0], stacked[1]]))
    np.testing.assert_array_equal(y, [[1, 0]] * 3 + [[0, 1]] * 3)
    # the mean of a poster's view examples is the head's input at prediction (combine mean)
    np.testing.assert_allclose(x[:3].mean(0), model.combine_views(stacked, "mean").numpy()[0])
