"""The embedding cache (format, round trip) and embedding a dataset once per poster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from storage.embeddings import EmbeddingCache, MissingEmbeddingsError
from storage.shard_reader import read_records
from tasks.backbone import backbone_id, backbone_layer, build_standin_backbone
from tasks.embed import embed_dataset
from tasks.images import decode_image
from tests.model_helpers import write_tiny_dataset

SIZES = {"train": 12, "val": 6, "test": 6}


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_standin_backbone(tmp_path_factory.mktemp("bb") / "standin", output_dim=64)


def test_cache_round_trip_in_requested_order(tmp_path: Path) -> None:
    cache = EmbeddingCache(str(tmp_path), "bb-123")
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    first = cache.write(["a", "b"], vectors[:2])
    cache.write(["c", "d"], vectors[2:])
    assert cache.known() == {"a", "b", "c", "d"}
    np.testing.assert_array_equal(cache.read(["d", "a", "c"]), vectors[[3, 0, 2]])
    table = pq.read_table(first)
    assert table.schema.field("embedding").type.list_size == 3
    assert table.column("sha256").to_pylist() == ["a", "b"]
    assert cache.write(["a", "b"], vectors[:2]) == first  # same posters: same part, no-op
    assert len(cache.parts()) == 2


def test_cache_names_missing_posters_and_rejects_bad_shapes(tmp_path: Path) -> None:
    cache = EmbeddingCache(str(tmp_path), "bb-123")
    cache.write(["a"], np.zeros((1, 3), np.float32))
    with pytest.raises(MissingEmbeddingsError, match=r"1 of 2 posters .*\['zz'\]"):
        cache.read(["a", "zz"])
    with pytest.raises(ValueError, match=r"expected embeddings \[2, dim\], got \(1, 3\)"):
        cache.write(["a", "b"], np.zeros((1, 3), np.float32))


def test_embed_once_then_only_new_posters(standin: Path, tmp_path: Path) -> None:
    first = write_tiny_dataset(tmp_path / "datasets", SIZES, version="v1")
    calls: list[tuple[int, int]] = []
    result = embed_dataset(str(first), str(tmp_path / "emb"), str(standin), batch_size=8,
                           part_size=10, progress=lambda d, t: calls.append((d, t)))
    assert (result.records, result.embedded, result.reused) == (24, 24, 0)
    assert result.backbone_id == backbone_id(str(standin))
    assert calls[-1] == (24, 24) and len(calls) == 24
    cache = EmbeddingCache(str(tmp_path / "emb"), result.backbone_id)
    assert len(cache.parts()) == 2  # whole batches up to >= 10 posters: 16 + 8

    again = embed_dataset(str(first), str(tmp_path / "emb"), str(standin))
    assert (again.embedded, again.reused) == (0, 24)
    grown = write_tiny_dataset(tmp_path / "datasets", {**SIZES, "train": 14}, version="v2")
    more = embed_dataset(str(grown), str(tmp_path / "emb"), str(standin))
    assert (more.records, more.embedded, more.reused) == (26, 2, 24)
    assert len(cache.known()) == 26


def test_cached_features_equal_the_backbone_on_decoded_posters(standin: Path,
                                                               tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path / "datasets", SIZES)
    result = embed_dataset(str(dataset), str(tmp_path / "emb"), str(standin), batch_size=5)
    records = list(read_records(str(dataset), "val").as_numpy_iterator())
    images = tf.stack([decode_image(r["image"]) for r in records])
    expected = backbone_layer(str(standin))(images).numpy()
    cached = EmbeddingCache(str(tmp_path / "emb"), result.backbone_id).read(
        [r["sha256"].decode() for r in records])
    np.testing.assert_allclose(cached, expected, rtol=1e-5, atol=1e-6)
