"""Batch scoring (`tasks.score`, the `score` flow): cached features score like the SavedModel,
the output is versioned and complete only with its marker, a rerun keeps what is done."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from storage.registry import Registry
from tests.model_helpers import LABELS, write_tiny_dataset

VIEWS = ["full", "top"]
MODEL = "posterflow"


@pytest.fixture(scope="module")
def scored_setup(tmp_path_factory: pytest.TempPathFactory, standin_backbone: str
                 ) -> dict[str, str]:
    """A tiny dataset, its embeddings for two views, and a registered model with a random
    (not constant) head on those views concatenated: every feature, and the views' order,
    matters to its probabilities."""
    import tf_keras

    from tasks.backbone import backbone_id
    from tasks.embed import embed_dataset
    from tasks.export import export_model
    from tasks.model import build_head
    from tasks.promotion import GUARDRAILS_OFF, register_candidate

    root = tmp_path_factory.mktemp("score")
    dataset = write_tiny_dataset(root / "data" / "datasets", {"train": 12, "val": 6, "test": 8})
    embeddings = str(root / "data" / "embeddings")
    embed_dataset(str(dataset), embeddings, standin_backbone, views=VIEWS)
    tf_keras.utils.set_random_seed(7)
    dim = _feature_dim(embeddings, backbone_id(standin_backbone))
    head = build_head(len(LABELS), hidden=8, input_dim=len(VIEWS) * dim)
    model_dir = export_model(
        root / "runs" / "model", backbone_handle=standin_backbone, head=head, labels=LABELS,
        thresholds={name: 0.5 for name in LABELS},
        metrics={"labels": LABELS, "val": {"macro_f1": 0.5}, "test": {"macro_f1": 0.5}},
        lineage={"dataset_version": "tiny0000", "backbone_id": backbone_id(standin_backbone)},
        views=VIEWS, combine="concat")
    registry = root / "data" / "registry"
    register_candidate(Registry(str(registry)), model_dir, MODEL, guardrails=GUARDRAILS_OFF)
    return {"dataset": str(dataset), "embeddings": embeddings, "registry": str(registry),
            "data_root": str(root / "data"), "model_dir": str(model_dir)}


def _feature_dim(embeddings: str, bid: str) -> int:
    from storage.embeddings import EmbeddingCache

    cache = EmbeddingCache(embeddings, bid, "full")
    return int(cache.read(sorted(cache.known())[:1]).shape[1])


def _served(model_dir: str, images: list[bytes]) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    return serve(images=tf.constant(images))["probabilities"].numpy()


def test_cached_features_score_like_serving_default(scored_setup: dict[str, str],
                                                    tmp_path: Path) -> None:
    import tensorflow as tf

    from storage.embeddings import EmbeddingCache
    from tasks.export import load_model_assets
    from tasks.score import read_part, score_posters

    posters = read_part(scored_setup["dataset"], ["train", "val", "test"], 0, 1)
    lineage = load_model_assets(scored_setup["model_dir"])["lineage"]
    model = tf.saved_model.load(scored_setup["model_dir"])
    probs, genres, from_features = score_posters(model, posters, scored_setup["embeddings"],
                                                 lineage, batch_size=5)
    assert from_features.all() and len(probs) == 26
    served = _served(scored_setup["model_dir"], posters.images)
    np.testing.assert_allclose(probs, served, atol=1e-4)
    assert np.ptp(probs, axis=0).max() > 1e-3  # the posters' probabilities differ
    for row, names in zip(probs, genres, strict=True):
        assert names == [LABELS[i] for i in np.argsort(-row) if row[i] > 0.5]

    # Posters missing from one view's cache go through the backbone, in the same order.
    partial = str(tmp_path / "emb")
    cache = EmbeddingCache(scored_setup["embeddings"], lineage["backbone_id"], "full")
    top = EmbeddingCache(scored_setup["embeddings"], lineage["backbone_id"], "top")
    half = posters.sha256s[::2]
    EmbeddingCache(partial, lineage["backbone_id"], "full").write(half, cache.read(half))
    EmbeddingCache(partial, lineage["backbone_id"], "top").write(
        posters.sha256s, top.read(posters.sha256s))
    mixed, _, hits = score_posters(model, posters, partial, lineage)
    assert hits.tolist() == [i % 2 == 0 for i in range(26)]
    np.testing.assert_allclose(mixed, served, atol=1e-4)


def test_score_flow_writes_versioned_predictions_then_a_rerun_keeps_them(
        harness: None, scored_setup: dict[str, str]) -> None:
    from flows.config import ScoreConfig
    from flows.score import score_flow
    from storage.scores import SCORES_JSON, part_path, read_facts, read_scores

    config = ScoreConfig.model_validate({
        "dataset_dir": scored_setup["dataset"], "storage": {"data_root": scored_setup["data_root"]},
        "scale": {"score_parts": 2, "max_workers": 2}})
    first = score_flow(config)
    out = Path(scored_setup["data_root"], "scores", "tiny0000", f"{MODEL}-v1")
    assert first.scores_dir == str(out) and not first.reused
    assert (first.rows, first.from_features, first.from_images) == (26, 26, 0)
    table = read_scores(str(out))
    assert len(set(table.column("imdb_id").to_pylist())) == table.num_rows == 26
    assert set(table.column("split").to_pylist()) == {"train", "val", "test"}
    facts = read_facts(str(out))
    assert (facts["model"], facts["version"], facts["labels"]) == (MODEL, 1, LABELS)
    assert facts["lineage"]["dataset_version"] == "tiny0000"
    # the folder is a Parquet dataset as it stands: readers skip the "_" marker
    assert pq.read_table(out).sort_by("imdb_id").equals(table.sort_by("imdb_id"))

    again = score_flow(config)
    assert again.reused and again.rows == 26

    # A run killed before its marker: the finished part is kept, the other redone.
    kept = Path(part_path(str(out), 0))
    before = kept.stat().st_mtime_ns
    Path(part_path(str(out), 1)).unlink()
    (out / SCORES_JSON).unlink()
    resumed = score_flow(config)
    assert not resumed.reused and resumed.rows == 26
    assert kept.stat().st_mtime_ns == before
    assert read_scores(str(out)).equals(table)


def test_new_movies_without_genres_are_ingested_and_scored(
        harness: None, scored_setup: dict[str, str], served_demo, tmp_path: Path) -> None:
    """The nightly job: a catalog of new movies, none labelled yet, gets the champion's genres."""
    import csv

    from flows.config import ScoreConfig
    from flows.score import score_flow
    from storage.catalog import load_summary
    from storage.scores import read_scores

    with open(served_demo.csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    genre = rows[0].index("Genre")
    new = tmp_path / "new-movies.csv"
    with open(new, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0], *([*r[:genre], "", *r[genre + 1:]] for r in rows[1:])])
    config = ScoreConfig.model_validate({
        "catalog_csv": str(new), "storage": {"data_root": scored_setup["data_root"]},
        "catalog": {"reject_tolerance": 0.1}, "fetch": {"allow_hosts": ["127.0.0.1"]}})
    result = score_flow(config)
    dataset = Path(scored_setup["data_root"], "datasets")
    catalogs = [p for p in Path(scored_setup["data_root"], "catalogs").iterdir()]
    summary = load_summary(str(catalogs[0]))
    assert summary["passed"] and "missing_genre" not in summary["by_reason"]
    assert summary["unlabelled"] == summary["accepted"] > 50  # the demo's defects still reject
    table = read_scores(result.scores_dir)
    assert result.rows == table.num_rows and result.from_images > 0
    assert len(set(table.column("imdb_id").to_pylist())) == table.num_rows
    assert all(len(p) == len(LABELS) for p in table.column("probabilities").to_pylist())
    assert dataset.is_dir()


def test_a_score_config_takes_exactly_one_source() -> None:
    from pydantic import ValidationError

    from flows.config import ScoreConfig

    with pytest.raises(ValidationError, match="exactly one of catalog_csv and dataset_dir"):
        ScoreConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        ScoreConfig(catalog_csv="a.csv", dataset_dir="d")
    ingest = ScoreConfig(catalog_csv="a.csv").ingest_config()
    assert ingest.catalog_csv == "a.csv"
