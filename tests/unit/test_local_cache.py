"""storage.local_cache: a remote dataset version copied once per manifest, verified, reused.

The remote is a bucket on a real moto S3 server on loopback (`s3_bucket`); TensorFlow cannot
read s3:// itself, so `storage.shard_reader` reads the version from the worker's cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import fs, local_cache
from storage.shard_reader import read_records
from tests.export_helpers import write_dataset

ROWS = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]


def upload(local: Path, url: str) -> str:
    fsys, path = fs.url_to_fs(url)
    fsys.put(str(local) + "/", path, recursive=True)
    return url


def ids(dataset: str) -> list[int]:
    return [int(r["imdb_id"]) for r in read_records(dataset, "test").as_numpy_iterator()]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(local_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_remote_version_is_copied_once_and_reused(cache: Path, tmp_path: Path,
                                                  s3_bucket: str) -> None:
    local = write_dataset(tmp_path / "a", "test", ROWS)
    remote = upload(local, f"{s3_bucket}/data/datasets/v1")
    assert ids(remote) == [1, 2, 3]
    entries = list((cache / "datasets").iterdir())
    assert len(entries) == 1 and (entries[0] / local_cache.COMPLETE).is_file()
    assert entries[0].name == fs.sha256_file(local / "manifest.parquet")
    fsys, path = fs.url_to_fs(remote)
    shard = next(p for p in fsys.ls(path, detail=False) if p.endswith(".tfrecord"))
    fsys.rm_file(shard)  # a later run never downloads the shards again
    assert ids(remote) == [1, 2, 3]
    assert list((cache / "datasets").iterdir()) == entries


def test_a_damaged_remote_shard_is_refused_and_nothing_is_cached(cache: Path, tmp_path: Path,
                                                                 s3_bucket: str) -> None:
    local = write_dataset(tmp_path / "a", "test", ROWS)
    shard = next(local.glob("*.tfrecord"))
    remote = upload(local, f"{s3_bucket}/data/datasets/v1")
    fsys, path = fs.url_to_fs(f"{remote}/{shard.name}")
    fsys.pipe_file(path, b"x" * shard.stat().st_size)  # same size, other bytes
    with pytest.raises(local_cache.CacheIntegrityError, match=f"{shard.name} is corrupted"):
        ids(remote)
    assert [p.name for p in (cache / "datasets").iterdir()] == []


def test_least_recently_used_entries_are_evicted(cache: Path, tmp_path: Path, s3_bucket: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first = upload(write_dataset(tmp_path / "a", "test", ROWS), f"{s3_bucket}/a/datasets/v1")
    second = upload(write_dataset(tmp_path / "b", "test", ROWS[:2]), f"{s3_bucket}/b/datasets/v1")
    ids(first)
    monkeypatch.setenv(local_cache.MAX_GB_ENV, "1e-9")  # one byte: only the newest stays
    assert ids(second) == [1, 2]
    (entry,) = (cache / "datasets").iterdir()
    assert entry.name == fs.sha256_bytes(fs.read_bytes(f"{second}/manifest.parquet"))
