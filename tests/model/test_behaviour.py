"""Model behaviour: what the trained genre model must do, beyond its scores.

The behavioural tier (Ribeiro et al.'s CheckList, as Made-With-ML uses it): a model trained
by the real `tasks.train.train` (the default recipe's poster views) on the
demo's painted posters (`tasks.demo`: each genre paints its colour and shape) with the
small stand-in backbone, then probed through its exported SavedModel from raw JPEG bytes:
- minimum functionality: a poster carrying one genre's mark is predicted that genre;
- invariance: changes that carry no genre (clutter, JPEG quality) leave the genres as they are;
- direction: more of a genre's paint raises that genre's probability;
and the exported signature scores the test split as the training code path does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from storage.shard_reader import read_records
from tasks.backbone import build_standin_backbone
from tasks.demo import POSTER_SIZE, render_poster
from tasks.evaluate import read_test_probabilities
from tasks.export import load_model_assets
from tasks.model import macro_f1
from tasks.train import TrainResult, train
from tasks.train_config import TrainConfig
from tasks.views import CORNERS
from tests.model_helpers import write_painted_dataset

WIDTH, HEIGHT = POSTER_SIZE
CENTRE = (WIDTH // 2 - 45, HEIGHT // 2 - 45, WIDTH // 2 + 45, HEIGHT // 2 + 45)
SEEDS = range(5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, list[str], Path]:
    """A model trained on 240 painted posters (stand-in backbone), exported."""
    root = tmp_path_factory.mktemp("behaviour")
    dataset, labels = write_painted_dataset(root / "data" / "datasets",
                                            {"train": 240, "val": 60, "test": 60})
    standin = build_standin_backbone(root / "standin", output_dim=256)
    # The default recipe's views and combination; a head that suits the weak stand-in
    # features, chosen by a small sweep, and the two best heads averaged.
    config = TrainConfig(backbone=str(standin), batch_size=32, patience=15, sweep=True,
                         sweep_epochs=80, sweep_learning_rates=[3e-3], sweep_hidden=[64, 128],
                         sweep_dropout=[0.2], sweep_losses=["bce"], ensemble=2)
    return train(str(dataset), str(root / "run"), config), labels, dataset


@pytest.fixture(scope="module")
def serve(trained: tuple[TrainResult, list[str], Path]):  # noqa: ANN201 (a signature)
    return tf.saved_model.load(trained[0].model_dir).signatures["serving_default"]


def probabilities(serve, posters: list[bytes]) -> np.ndarray:  # noqa: ANN001
    return serve(images=tf.constant(posters))["probabilities"].numpy()


def genres(serve, posters: list[bytes]) -> list[set[str]]:  # noqa: ANN001
    out = serve(images=tf.constant(posters))["genres"].numpy()
    return [{g.decode() for g in row if g} for row in out]


def test_the_default_recipe_learns_the_painted_genres(trained) -> None:  # noqa: ANN001
    result, _, _ = trained
    assert result.params["views"] == ["full", "top", "bottom", *CORNERS]
    assert result.metrics["test"]["macro_f1"] > 0.6  # chance level is about 0.4


def test_minimum_functionality_one_mark_one_genre(trained, serve) -> None:  # noqa: ANN001
    _, labels, _ = trained
    for genre in labels:
        probs = probabilities(serve, [render_poster([genre], s, [CENTRE]) for s in SEEDS])
        top = [labels[i] for i in probs.argmax(axis=1)]
        assert top == [genre] * len(SEEDS), f"{genre}: most probable {top}"
        assert all(genre in found for found in genres(
            serve, [render_poster([genre], s, [CENTRE]) for s in SEEDS]))


def test_invariance_to_clutter_and_jpeg_quality(trained, serve) -> None:  # noqa: ANN001
    _, labels, _ = trained
    for genre in labels:
        base = probabilities(serve, [render_poster([genre], 0, [CENTRE])])[0]
        other_clutter = probabilities(serve, [render_poster([genre], 1, [CENTRE])])[0]
        recompressed = probabilities(serve, [render_poster([genre], 0, [CENTRE], quality=75)])[0]
        i = labels.index(genre)
        assert abs(recompressed[i] - base[i]) < 0.1, genre
        assert abs(other_clutter[i] - base[i]) < 0.25, genre
        assert genres(serve, [render_poster([genre], 0, [CENTRE])]) == genres(
            serve, [render_poster([genre], 0, [CENTRE], quality=75)])


def test_direction_more_paint_raises_the_genre(trained, serve) -> None:  # noqa: ANN001
    _, labels, _ = trained
    small = (WIDTH // 2 - 20, HEIGHT // 2 - 20, WIDTH // 2 + 20, HEIGHT // 2 + 20)
    big = (WIDTH // 2 - 60, HEIGHT // 2 - 60, WIDTH // 2 + 60, HEIGHT // 2 + 60)
    for genre in labels:
        i = labels.index(genre)
        p_small, p_big = probabilities(serve, [render_poster([genre], 3, [small]),
                                               render_poster([genre], 3, [big])])[:, i]
        assert p_big > p_small, f"{genre}: {p_small:.3f} (small) vs {p_big:.3f} (big)"


def test_exported_signature_scores_the_test_split_as_training_did(trained, serve) -> None:  # noqa: ANN001
    result, labels, dataset = trained
    records = list(read_records(str(dataset), "test").as_numpy_iterator())
    probs = probabilities(serve, [bytes(r["image"]) for r in records])
    y = np.stack([r["labels"] for r in records])
    thresholds = load_model_assets(result.model_dir)["thresholds"]
    assert macro_f1(y, probs) == pytest.approx(result.metrics["test"]["macro_f1"], abs=1e-3)
    assert macro_f1(y, probs, thresholds, labels) == pytest.approx(
        result.metrics["test"]["macro_f1_tuned"], abs=1e-3)
    # The model card ranks its posters by the report's stored test probabilities: they must
    # be the exported model's, poster by poster, in the records' order.
    np.testing.assert_allclose(read_test_probabilities(result.report_dir), probs, atol=1e-3)
