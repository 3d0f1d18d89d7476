"""Training on cached features: seed equivalence, selection, determinism, fine-tune, CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras
from typer.testing import CliRunner

from flows.cli import app
from storage.embeddings import EmbeddingCache
from storage.layout import data_root_of
from storage.shard_reader import read_records, split_labels
from tasks.backbone import build_standin_backbone
from tasks.embed import embed_dataset
from tasks.head_inputs import (
    TrainingRows,
    UnlabelledPostersError,
    head_inputs,
    require_labels,
    training_inputs,
)
from tasks.images import decode_image
from tasks.model import build_head, macro_f1, macro_soft_f1
from tasks.train import fine_tune, fit_head, select_head, train
from tasks.train_config import HeadParams, TrainConfig
from tasks.views import CORNERS
from tests.model_helpers import LABELS, write_tiny_dataset


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_standin_backbone(tmp_path_factory.mktemp("bb") / "standin")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "datasets")


@pytest.fixture(scope="module")
def features(dataset: Path, standin: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    root = str(tmp_path_factory.mktemp("emb"))
    cache = EmbeddingCache(root, embed_dataset(str(dataset), root, str(standin)).backbone_id)
    out = {}
    for split in ("train", "val", "test"):
        shas, y = split_labels(str(dataset), split)
        out[split] = (cache.read(shas), y)
    return out


def test_cached_features_train_exactly_like_the_seed_model(
        dataset: Path, standin: Path, features: dict) -> None:
    """Same initial weights, same batches: the seed's in-model backbone gives the same losses."""
    config = TrainConfig(backbone=str(standin), batch_size=8, seed=3, early_stopping=False)
    params = HeadParams(learning_rate=1e-3, epochs=3, hidden=32)
    ours = fit_head(TrainingRows.of_arrays(*features["train"]), features["val"], params, config)

    tf_keras.utils.set_random_seed(config.seed)  # the head fit_head starts from
    initial = build_head(len(LABELS), 32).get_weights()
    seed_model = tf_keras.Sequential([  # the seed, as written: hub layer inside the model
        hub.KerasLayer(str(standin), trainable=False, input_shape=(224, 224, 3)),
        tf_keras.layers.Dense(32, activation="relu", name="hidden_layer"),
        tf_keras.layers.Dense(len(LABELS), activation="sigmoid", name="output"),
    ])
    seed_model.layers[1].set_weights(initial[:2])
    seed_model.layers[2].set_weights(initial[2:])
    seed_model.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss=macro_soft_f1)
    images = (read_records(str(dataset), "train")
              .map(lambda r: (decode_image(r["image"]), r["labels"]))
              .cache().shuffle(config.shuffle_buffer, seed=config.seed).batch(8))
    seed_losses = seed_model.fit(images, epochs=3, verbose=0).history["loss"]

    # float32 tolerance: the backbone runs at another batch size when embedding (other
    # oneDNN kernels), and the stand-in's final normalisation amplifies that rounding.
    np.testing.assert_allclose(ours.history["loss"], seed_losses, rtol=1e-3)
    assert seed_losses[0] != seed_losses[-1]  # it did train
    seed_head = seed_model.layers[1].get_weights() + seed_model.layers[2].get_weights()
    for a, b in zip(ours.model.get_weights(), seed_head, strict=True):
        # Adam's step is ~lr * sign(gradient): float noise on a near-zero gradient can flip
        # one step, so weights agree to within one step (lr = 1e-3).
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_same_seed_same_model_and_early_stopping_keeps_the_best_epoch(features: dict) -> None:
    config = TrainConfig(backbone="unused", batch_size=16, seed=1, patience=2)
    params = HeadParams(learning_rate=3e-3, epochs=12, hidden=16)
    first = fit_head(TrainingRows.of_arrays(*features["train"]), features["val"], params, config)
    second = fit_head(TrainingRows.of_arrays(*features["train"]), features["val"], params, config)
    assert first.history == second.history
    scores = first.history["val_macro_f1"]
    assert first.best_epoch == int(np.argmax(scores)) + 1
    val_x, val_y = features["val"]
    # the restored weights are the best epoch's: whole-split val F1 recomputes to its score
    assert macro_f1(val_y, first.model.predict(val_x, verbose=0)) == pytest.approx(max(scores))


def test_the_epoch_bar_ends_at_the_epoch_early_stopping_stopped(features: dict) -> None:
    config = TrainConfig(backbone="unused", batch_size=16, seed=1, patience=1,
                         head=HeadParams(learning_rate=3e-3, epochs=60, hidden=16))
    steps: list[tuple[int, int]] = []
    chosen, _ = select_head(TrainingRows.of_arrays(*features["train"]), features["val"], config,
                            lambda step, done, total: steps.append((done, total)))
    stopped = len(chosen.history["loss"])
    assert stopped < 60 and steps[-1] == (stopped, stopped)  # early stopped, bar full
    assert steps[:-1] == [(e, 60) for e in range(1, stopped + 1)]


def test_fast_epochs_log_one_info_line_per_interval(features: dict,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    config = TrainConfig(backbone="unused", batch_size=16, seed=1, early_stopping=False)
    with caplog.at_level(logging.DEBUG, logger="tasks.train"):
        fit_head(TrainingRows.of_arrays(*features["train"]), features["val"],
                 HeadParams(learning_rate=3e-3, epochs=5, hidden=16), config)
    epochs = [r for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 5  # every epoch at DEBUG or INFO, sub-second: only the first at INFO
    assert [r.levelno for r in epochs] == [logging.INFO] + [logging.DEBUG] * 4
    assert epochs[0].getMessage().startswith("epoch 1 of 5 (20%)")


def test_mirrored_strategy_trains_like_the_default_one(features: dict) -> None:
    params = HeadParams(learning_rate=3e-3, epochs=3, hidden=16)
    plain = fit_head(TrainingRows.of_arrays(*features["train"]), features["val"], params,
                     TrainConfig(backbone="unused", batch_size=16, seed=1, early_stopping=False))
    mirrored = fit_head(TrainingRows.of_arrays(*features["train"]), features["val"], params,
                        TrainConfig(backbone="unused", batch_size=16, seed=1,
                                    early_stopping=False, distribution="mirrored"))
    np.testing.assert_allclose(mirrored.history["loss"], plain.history["loss"], rtol=1e-4)


def test_default_embedding_cache_lives_beside_datasets(tmp_path: Path) -> None:
    dataset_dir = str(tmp_path / "data" / "datasets" / "v1")
    assert (TrainConfig().resolved(data_root_of(dataset_dir)).cache_root
            == str(tmp_path / "data" / "embeddings"))
    assert (TrainConfig().resolved(data_root_of("memory://root/datasets/v1")).cache_root
            == "memory://root/embeddings")
    assert TrainConfig(embeddings_root="/cache").resolved("elsewhere").cache_root == "/cache"
    with pytest.raises(ValueError, match="resolved"):
        _ = TrainConfig().cache_root


def test_the_tutorial_recipe_keeps_its_old_name() -> None:
    tutorial = TrainConfig(recipe="tutorial")
    assert TrainConfig(recipe="seed") == tutorial and tutorial.recipe == "tutorial"
    assert tutorial.views == ["full"] and tutorial.head.learning_rate == 1e-5
    assert TrainConfig(recipe="seed", views=["full", "top"]).views == ["full", "top"]


def test_default_trains_on_each_view_and_predicts_on_their_mean(
        dataset: Path, standin: Path, tmp_path: Path) -> None:
    config = TrainConfig(backbone=str(standin), embeddings_root=str(tmp_path / "emb"))
    assert config.view_examples and config.views == ["full", "top", "bottom", *CORNERS]
    backbone_id = embed_dataset(str(dataset), config.embeddings_root, str(standin),
                                views=config.views).backbone_id
    val = head_inputs(str(dataset), backbone_id, config, splits=("val",))["val"]
    per_view = {v: EmbeddingCache(config.embeddings_root, backbone_id, v) for v in config.views}
    for split in ("train", "val"):
        shas, y = split_labels(str(dataset), split)
        stacked = np.stack([per_view[v].read(shas) for v in config.views], axis=1)
        if split == "train":  # one example per poster and view, the poster's labels
            with training_inputs(str(dataset), backbone_id, config, chunk_posters=5) as rows:
                chunks = list(rows.chunks())
            assert len(chunks) > 1 and rows.rows == len(shas) * len(config.views)
            np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]),
                                          stacked.reshape(-1, stacked.shape[-1]))
            np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]),
                                          np.repeat(y, len(config.views), axis=0))
        else:  # the mean of the views, as the SavedModel computes
            np.testing.assert_allclose(val[0], stacked.mean(1), rtol=1e-6)
            np.testing.assert_array_equal(val[1], y)
    seed = TrainConfig(recipe="tutorial")
    assert not seed.view_examples and seed.shuffle_buffer == 1024
    with pytest.raises(ValueError, match="view_examples .* needs combine 'mean'"):
        TrainConfig(combine="concat")
    assert not TrainConfig(combine="concat", view_examples=False).view_examples


def test_fine_tune_changes_only_the_top_blocks_and_the_head(
        dataset: Path, standin: Path, features: dict) -> None:
    config = TrainConfig(backbone=str(standin), batch_size=16, fine_tune_blocks=1, views=["full"],
                         fine_tune_learning_rate=1e-2, fine_tune_epochs=1, early_stopping=False)
    head = fit_head(TrainingRows.of_arrays(*features["train"]), features["val"],
                    HeadParams(epochs=1, hidden=8), config)
    head_before = [w.copy() for w in head.model.get_weights()]
    tuned = fine_tune(str(dataset), head, features["val"][1], config)
    layer = next(x for x in tuned.model.layers if isinstance(x, hub.KerasLayer))
    before = {v.name: v.numpy() for v in tf.saved_model.load(str(standin)).variables}
    changed = {v.name for v in layer.weights if not np.array_equal(v.numpy(), before[v.name])}
    assert changed == {"block_4_expand/kernel:0", "block_4_depthwise/depthwise_kernel:0",
                       "block_4_project/kernel:0", "Conv_1/kernel:0"}
    assert not any(np.array_equal(a, b) for a, b in zip(
        head_before, head.model.get_weights(), strict=True))
    assert len(tuned.history["val_macro_f1"]) == 1


def test_train_with_sweep_writes_model_report_and_picks_the_best(
        dataset: Path, standin: Path, tmp_path: Path) -> None:
    config = TrainConfig(backbone=str(standin), embeddings_root=str(tmp_path / "emb"),
                         batch_size=16, sweep=True, sweep_learning_rates=[1e-3, 1e-2],
                         sweep_hidden=[16], sweep_dropout=[0.0], sweep_losses=["soft_f1"],
                         sweep_epochs=4, patience=2)
    steps: list[str] = []
    result = train(str(dataset), str(tmp_path / "run"), config,
                   progress=lambda step, done, total: steps.append(step))
    assert {"embed", "sweep"} <= set(steps)
    assert (Path(result.model_dir) / "saved_model.pb").is_file()
    report = Path(result.report_dir)
    assert json.loads((report / "sweep.json").read_text()) == result.sweep
    assert len(result.sweep) == 2
    best = max(result.sweep, key=lambda row: row["val_macro_f1"])
    assert result.params["head"]["learning_rate"] == best["learning_rate"]
    assert result.metrics["val"]["macro_f1"] == pytest.approx(best["val_macro_f1"])
    assert set(result.metrics["val"]["per_label"]) == set(LABELS)
    lineage = json.loads((Path(result.model_dir) / "assets" / "lineage.json").read_text())
    assert lineage["dataset_version"] == "tiny0000"
    assert lineage["backbone_handle"] == str(standin)
    with pytest.raises(FileExistsError, match="already exists"):
        train(str(dataset), str(tmp_path / "run"), config)


def test_cli_train_runs_and_reports_bad_input(dataset: Path, standin: Path,
                                              tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["train", "--dataset", str(dataset), "--out", str(tmp_path / "r"),
                             "--backbone", str(standin), "--epochs", "2", "--batch-size", "16",
                             "--lr", "1e-3", "--hidden", "8",
                             "--embeddings", str(tmp_path / "emb")])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip().endswith(str(tmp_path / "r" / "model"))
    missing = runner.invoke(app, ["train", "--dataset", str(tmp_path / "nope"), "--out",
                                  str(tmp_path / "r2"), "--backbone", str(standin)])
    assert missing.exit_code == 2 and "not a dataset version" in missing.output
    bad = runner.invoke(app, ["train", "--dataset", str(dataset), "--out", str(tmp_path / "r3"),
                              "--backbone", str(tmp_path)])
    assert bad.exit_code == 2 and "holds no saved_model.pb" in bad.output
    assert "Traceback" not in missing.output + bad.output


def test_posters_without_genres_are_refused_as_training_examples() -> None:
    labelled = np.array([[1, 0], [0, 1]], np.float32)
    require_labels("d", "train", labelled)  # every poster has a genre: nothing to say
    with pytest.raises(UnlabelledPostersError, match=r"1 of 3 train posters of d have no genre"):
        require_labels("d", "train", np.vstack([labelled, [[0, 0]]]))
    # A scoring catalog with no genre at all has no label columns.
    with pytest.raises(UnlabelledPostersError, match="2 of 2 val posters"):
        require_labels("d", "val", np.zeros((2, 0), np.float32))


def test_streamed_training_rows_equal_the_split_in_memory_for_each_recipe(
        dataset: Path, standin: Path, tmp_path: Path) -> None:
    from tasks.head_inputs import (
        flipped_inputs,
        model_inputs,
        stacked_chunks,
        view_features,
        write_stacked,
    )

    views = ["full", "top"]
    root = str(tmp_path / "emb")
    bid = embed_dataset(str(dataset), root, str(standin), views=[*views, "flip"]).backbone_id
    shas, y = split_labels(str(dataset), "train")
    stacked = view_features(root, bid, shas, views)
    flip = view_features(root, bid, shas, ["flip"])[:, 0]
    recipes = {
        "concat": (dict(combine="concat", view_examples=False), model_inputs(stacked, "concat")),
        "flip": (dict(flip_augment=True, view_examples=False),
                 model_inputs(stacked, "mean"), flipped_inputs(stacked, flip, views, "mean")),
    }
    for name, (fields, *expected) in recipes.items():
        config = TrainConfig(backbone="unused", embeddings_root=root, views=views, **fields)
        with training_inputs(str(dataset), bid, config, chunk_posters=3) as rows:
            chunks = list(rows.chunks())
            again = list(rows.chunks())  # every epoch reads the same rows again
        columns = [np.concatenate(c) for c in zip(*chunks, strict=True)]
        for got, want in zip(columns, [*expected, y], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)
        assert all(np.array_equal(a, b) for c, d in zip(chunks, again, strict=True)
                   for a, b in zip(c, d, strict=True))
        assert (rows.rows, rows.input_dim, rows.has_alternate) == (
            len(shas), columns[0].shape[1], name == "flip")
    # A poster listed twice (a dataset repeating posters) is written twice, in place.
    twice = [shas[1], shas[0], shas[1]]
    file = write_stacked(str(tmp_path / "twice.f32"), root, bid, twice, views)
    (chunk,) = stacked_chunks(file, 10)
    np.testing.assert_array_equal(chunk, view_features(root, bid, twice, views))
