"""tasks.shards + storage.shard_reader + storage.datasets: round trip, determinism,
immutability, corruption, reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from storage.datasets import (
    ShardIntegrityError,
    load_dataset_info,
    read_manifest,
    verify_shard,
)
from storage.posters import PosterStore
from storage.shard_reader import read_records
from tasks.images import make_dataset
from tasks.shards import DatasetCheckError, ShardConfig, build_dataset
from tests.shards_helpers import LABELS, genres_of, tree, write_inputs

N = 40
UNFETCHED = (3, 17)
SMALL = ShardConfig(records_per_shard=5)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 40-movie catalog whose posters 3 and 17 were never fetched."""
    return write_inputs(tmp_path_factory.mktemp("inputs"), N, unfetched=UNFETCHED)


@pytest.fixture(scope="module")
def built(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """One dataset version of `inputs` (5 records per shard)."""
    out = tmp_path_factory.mktemp("datasets")
    return build_dataset(*inputs, out, SMALL)


def _all_records(dataset_dir: str, split: str) -> list[dict]:
    return [{k: v.numpy() for k, v in r.items()} for r in read_records(dataset_dir, split)]


def test_round_trip_keeps_poster_bytes_and_labels(inputs, built) -> None:
    store = PosterStore(inputs[1])
    index = store.read_index().set_index("imdb_id")
    seen = set()
    for split in ("train", "val", "test"):
        records = _all_records(built.path, split)
        assert len(records) == built.splits[split]
        for r in records:
            imdb_id = int(r["imdb_id"])
            sha = r["sha256"].decode()
            assert sha == index.loc[imdb_id, "sha256"]
            assert bytes(r["image"]) == store.get(sha)
            expected = [float(g in genres_of(imdb_id - 100_000)) for g in LABELS]
            np.testing.assert_array_equal(r["labels"], expected)
            seen.add(imdb_id)
    assert seen == {100_000 + i for i in range(N) if i not in UNFETCHED}


def test_dataset_json_and_manifest_describe_the_shards(built) -> None:
    info = load_dataset_info(built.path)
    assert info.version == built.version == Path(built.path).name
    assert info.labels == LABELS
    assert info.left_out == {"not_fetched": 2, "missing_object": 0}
    assert info.catalog_hash == "0123456789abcdef"
    assert sum(info.splits.values()) == N - len(UNFETCHED)
    manifest = read_manifest(built.path)
    assert len(manifest) == built.shards
    for split, n in info.splits.items():
        rows = manifest[manifest["split"] == split]
        count = -(-n // 5)
        assert list(rows["shard"]) == [f"{split}-{i:05d}-of-{count:05d}.tfrecord"
                                       for i in range(count)]
        assert rows["records"].sum() == n
        assert rows["records"].max() - rows["records"].min() <= 1  # spread evenly
        labels = np.array([_all_labels(r) for r in _all_records(built.path, split)])
        np.testing.assert_array_equal(np.stack(rows["label_counts"]).sum(0), labels.sum(0))
    for row in manifest.itertuples():
        verify_shard(built.path, row.shard, row.bytes, row.sha256)
        assert os.path.getsize(Path(built.path) / row.shard) == row.bytes


def _all_labels(record: dict) -> np.ndarray:
    return record["labels"].astype(np.int64)


def test_same_inputs_same_version_and_nothing_new_written(inputs, built, tmp_path) -> None:
    before = tree(Path(built.path).parent)
    again = build_dataset(*inputs, Path(built.path).parent, SMALL)
    assert (again.version, again.created) == (built.version, False)
    assert tree(Path(built.path).parent) == before
    elsewhere = build_dataset(*inputs, tmp_path, SMALL)
    assert elsewhere.version == built.version and elsewhere.created
    fresh, first = tree(Path(elsewhere.path)), tree(Path(built.path))
    fresh.pop("dataset.json"), first.pop("dataset.json")  # created_at differs
    assert fresh == first  # byte-identical shards and manifest


def test_shard_layout_changes_the_version(inputs, built, tmp_path) -> None:
    reseeded = build_dataset(*inputs, tmp_path, SMALL.model_copy(update={"seed": 1}))
    assert reseeded.version != built.version
    order = [int(r["imdb_id"]) for r in _all_records(reseeded.path, "train")]
    assert order != [int(r["imdb_id"]) for r in _all_records(built.path, "train")]
    assert sorted(order) == sorted(int(r["imdb_id"]) for r in _all_records(built.path, "train"))


def test_target_bytes_sizes_shards_and_gzip_round_trips(inputs, tmp_path) -> None:
    one = build_dataset(*inputs, tmp_path, ShardConfig())
    assert one.shards == 3  # every split fits in one 100 MB shard
    poster_bytes = PosterStore(inputs[1]).read_index()["bytes"].median()
    config = ShardConfig(target_shard_bytes=int(poster_bytes * 4), gzip=True)
    small = build_dataset(*inputs, tmp_path, config)
    manifest = read_manifest(small.path)
    assert manifest["shard"].str.endswith(".tfrecord.gz").all()
    assert manifest["records"].max() <= 5
    assert load_dataset_info(small.path).compression == "GZIP"
    got = sorted(int(r["imdb_id"]) for r in _all_records(small.path, "train"))
    assert got == sorted(int(r["imdb_id"]) for r in _all_records(one.path, "train"))


def test_left_out_posters_are_counted_by_reason(tmp_path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 20, unfetched=(0,))
    gone = PosterStore(store).read_index().iloc[0]["sha256"]
    os.unlink(PosterStore(store).path(gone))
    result = build_dataset(catalog, store, tmp_path / "out", SMALL)
    assert result.left_out == {"not_fetched": 1, "missing_object": 1}
    assert sum(result.splits.values()) == 18


def test_corrupted_store_object_fails_and_leaves_nothing(tmp_path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 12)
    sha = PosterStore(store).read_index().iloc[5]["sha256"]
    path = Path(PosterStore(store).path(sha))
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(DatasetCheckError, match=sha):
        build_dataset(catalog, store, tmp_path / "out", SMALL)
    assert list((tmp_path / "out").iterdir()) == []


def test_unknown_genre_names_the_row(tmp_path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 12)
    labels = json.loads((catalog / "labels.json").read_text())
    labels["labels"] = ["Action", "Comedy"]
    (catalog / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(DatasetCheckError, match=r"row 3: genres \['Drama'\]"):
        build_dataset(catalog, store, tmp_path / "out", SMALL)


def test_nothing_fetched_is_an_error(tmp_path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 6, unfetched=tuple(range(6)))
    with pytest.raises(DatasetCheckError, match="not_fetched.: 6"):
        build_dataset(catalog, store, tmp_path / "out", SMALL)


def test_corrupted_or_missing_shard_is_named(inputs, tmp_path) -> None:
    result = build_dataset(*inputs, tmp_path, SMALL)
    shard = Path(result.path) / "train-00002-of-00005.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match="train-00002-of-00005.tfrecord is corrupted"):
        read_records(result.path, "train")
    with pytest.raises(ShardIntegrityError, match="train-00002-of-00005.tfrecord"):
        make_dataset(result.path, "train")
    _all_records(result.path, "val")  # other splits are still readable
    shard.unlink()
    with pytest.raises(ShardIntegrityError, match="train-00002-of-00005.tfrecord .*missing"):
        read_records(result.path, "train")


def test_unverified_corruption_still_fails_loudly(inputs, tmp_path) -> None:
    import tensorflow as tf

    result = build_dataset(*inputs, tmp_path, SMALL)
    shard = Path(result.path) / "val-00000-of-00002.tfrecord"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF
    shard.write_bytes(bytes(data))
    pytest.raises(ShardIntegrityError, read_records, result.path, "val")
    with pytest.raises(tf.errors.DataLossError):
        list(read_records(result.path, "val", verify=False))


def test_make_dataset_batches_decoded_images(built) -> None:
    batches = list(make_dataset(built.path, "train", batch_size=8))
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.shape == (built.splits["train"], 224, 224, 3)
    assert images.dtype == np.float32 and 0.0 <= images.min() < images.max() <= 1.0
    assert [len(b[0]) for b in batches[:-1]] == [8] * (len(batches) - 1)
    unshuffled = np.array([r["labels"] for r in _all_records(built.path, "train")])
    np.testing.assert_array_equal(labels, unshuffled)


def test_shuffle_is_deterministic_with_a_seed(built) -> None:
    def order(seed: int, epochs: int = 2) -> list[list[float]]:
        """Per-image mean pixel (the posters are distinct noise), epoch by epoch."""
        ds = make_dataset(built.path, "train", batch_size=64, shuffle_seed=seed, verify=False)
        return [np.concatenate([b[0].numpy().mean((1, 2, 3)) for b in ds]).round(5).tolist()
                for _ in range(epochs)]

    first, again, other = order(7), order(7), order(8)
    assert first == again
    assert first != other
    assert first[0] != first[1]  # each epoch reshuffles, reproducibly
    assert sorted(first[0]) == sorted(other[0])


def test_file_urls_work_for_writer_and_reader(inputs, tmp_path) -> None:
    result = build_dataset(*inputs, f"file://{tmp_path}", SMALL)
    assert (tmp_path / result.version / "dataset.json").is_file()
    ids = [int(r["imdb_id"]) for r in read_records(f"file://{tmp_path}/{result.version}", "test")]
    assert len(ids) == result.splits["test"]


def test_remote_root_is_uploaded_with_dataset_json_last(inputs) -> None:
    import fsspec

    memfs = fsspec.filesystem("memory")
    result = build_dataset(*inputs, "memory://datasets-test", SMALL)
    try:
        assert result.path == f"memory://datasets-test/{result.version}"
        info = load_dataset_info(result.path)
        manifest = read_manifest(result.path)
        assert sum(info.splits.values()) == manifest["records"].sum() == N - len(UNFETCHED)
        for row in manifest.itertuples():
            verify_shard(result.path, row.shard, row.bytes, row.sha256)
        again = build_dataset(*inputs, "memory://datasets-test", SMALL)
        assert (again.version, again.created) == (result.version, False)
    finally:
        memfs.rm("/datasets-test", recursive=True)
