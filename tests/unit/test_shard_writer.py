"""storage.shard_writer and the hand-made record format: TensorFlow's bytes exactly, the same
dataset from one process or several, corruption found in a child process too."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from storage.posters import PosterStore
from storage.records import PosterRecord, encode_example, multi_hot, serialize, tfrecord_frame
from storage.shard_writer import ShardJob, balanced_groups, write_in_turn, write_shard
from tasks.shards import DatasetCheckError, ShardConfig, build_dataset
from tests.shards_helpers import tree, write_inputs

SMALL = ShardConfig(records_per_shard=4)


def _tf_example(imdb_id: int, image: bytes, sha256: str, labels: np.ndarray) -> bytes:
    import tensorflow as tf

    feature = {
        "imdb_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[imdb_id])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "sha256": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sha256.encode()])),
        "labels": tf.train.Feature(float_list=tf.train.FloatList(value=labels.tolist())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


@pytest.mark.parametrize("imdb_id", [0, 1, 127, 128, 114709, 2**40, 2**63 - 1, -1, -(2**63)])
@pytest.mark.parametrize(("n_labels", "size"), [(1, 0), (3, 127), (15, 128), (40, 300_000)])
def test_encode_example_is_tensorflows_bytes(imdb_id, n_labels, size) -> None:
    image = os.urandom(size)
    idx = sorted({imdb_id % n_labels, (imdb_id // 7) % n_labels})
    labels = np.zeros(n_labels, np.float32)
    labels[idx] = 1.0
    expected = _tf_example(imdb_id, image, "ab" * 32, labels)
    assert encode_example(imdb_id, image, "ab" * 32, multi_hot(idx, n_labels)) == expected
    assert serialize(PosterRecord(imdb_id, image, "ab" * 32, labels)) == expected


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_shard_file_is_tensorflows_tfrecord_file(tmp_path, compression) -> None:
    import tensorflow as tf

    store = PosterStore(tmp_path / "store")
    images = [os.urandom(n * 997) for n in range(30)]
    shas = [store.put(image) for image in images]
    job = ShardJob(url=str(tmp_path / "mine"), posters=[store.path(s) for s in shas],
                   imdb_ids=list(range(30)), sha256s=shas,
                   label_idx=[[n % 3] for n in range(30)], n_labels=3, compression=compression)
    written = write_shard(job)
    options = tf.io.TFRecordOptions(compression_type=compression)
    with tf.io.TFRecordWriter(str(tmp_path / "tf"), options) as writer:
        for n, (image, sha) in enumerate(zip(images, shas, strict=True)):
            writer.write(_tf_example(n, image, sha, np.eye(3, dtype=np.float32)[n % 3]))
    mine = (tmp_path / "mine").read_bytes()
    assert mine == (tmp_path / "tf").read_bytes()
    assert (written.bytes, written.sha256) == (len(mine), hashlib.sha256(mine).hexdigest())


def test_tfrecord_frames_read_back_through_tensorflow_and_catch_damage(tmp_path: Path) -> None:
    records = [b"abc", b"", bytes(range(256)) * 40]
    path = tmp_path / "framed.tfrecord"
    path.write_bytes(b"".join(head + data + tail for data in records
                              for head, tail in [tfrecord_frame(data)]))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    damaged = bytearray(path.read_bytes())
    damaged[-20] ^= 0xFF  # a byte of the last record's data: its CRC no longer matches
    path.write_bytes(bytes(damaged))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


def test_balanced_groups_split_by_weight() -> None:
    assert balanced_groups([10, 1, 1, 8], 2) == [[0], [1, 2, 3]]
    assert balanced_groups([5], 4) == [[0]]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_inputs(tmp_path_factory.mktemp("inputs"), 30)


def test_child_processes_write_the_same_dataset(inputs, tmp_path) -> None:
    here = build_dataset(*inputs, tmp_path / "here", SMALL, processes=1)
    children = build_dataset(*inputs, tmp_path / "children", SMALL, processes=3)
    assert children.version == here.version and children.shards == here.shards > 3
    one, three = tree(Path(here.path)), tree(Path(children.path))
    one.pop("dataset.json"), three.pop("dataset.json")  # created_at differs
    assert one == three


def test_a_corrupted_poster_found_by_a_child_fails_the_build(tmp_path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 12)
    sha = PosterStore(store).read_index().iloc[5]["sha256"]
    path = Path(PosterStore(store).path(sha))
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(DatasetCheckError, match=sha):
        build_dataset(catalog, store, tmp_path / "out", SMALL, processes=2)
    assert list((tmp_path / "out").iterdir()) == []


def test_gzip_shards_from_children_are_the_same_as_from_this_process(inputs, tmp_path) -> None:
    config = ShardConfig(records_per_shard=4, gzip=True)
    here = build_dataset(*inputs, tmp_path / "here", config, processes=1)
    children = build_dataset(*inputs, tmp_path / "children", config, processes=2)
    assert children.version == here.version and children.shards == here.shards > 3
    one, two = tree(Path(here.path)), tree(Path(children.path))
    one.pop("dataset.json"), two.pop("dataset.json")  # created_at differs
    assert one == two


def test_shards_written_in_turn_are_the_shards_written_one_by_one(tmp_path) -> None:
    store = PosterStore(tmp_path / "store")
    shas = [store.put(os.urandom(n * 1009 + 1)) for n in range(12)]
    jobs = [ShardJob(url=str(tmp_path / f"{way}-{k}"), posters=[store.path(s) for s in part],
                     imdb_ids=list(range(len(part))), sha256s=part,
                     label_idx=[[n % 2] for n in range(len(part))], n_labels=2)
            for way in ("turn", "single") for k, part in enumerate([shas[:5], shas[5:6],
                                                                     shas[6:]])]
    in_turn = write_in_turn(jobs[:3])
    one_by_one = [write_shard(job) for job in jobs[3:]]
    assert [(s.bytes, s.sha256) for s in in_turn] == [(s.bytes, s.sha256) for s in one_by_one]
    assert [s.url for s in in_turn] == [job.url for job in jobs[:3]]
    for k in range(3):
        assert (tmp_path / f"turn-{k}").read_bytes() == (tmp_path / f"single-{k}").read_bytes()
