"""The shard reader's verification: every read outside `verify_once`, the first inside it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from storage import fs
from storage.datasets import ShardIntegrityError
from storage.shard_reader import read_records, verify_once
from tests.model_helpers import write_tiny_dataset


def _count_hashing(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    hashed: Counter[str] = Counter()
    original = fs.sha256_file

    def counting(url: str, *args: object, **kwargs: object) -> str:
        hashed[str(url).rsplit("/", 1)[-1]] += 1
        return original(url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fs, "sha256_file", counting)
    return hashed


def test_a_shard_is_hashed_on_every_read_outside_and_once_inside_verify_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = str(write_tiny_dataset(tmp_path / "datasets"))
    hashed = _count_hashing(monkeypatch)
    read_records(dataset, "val")
    read_records(dataset, "val")
    assert hashed == {"val-00000-of-00001.tfrecord": 2}

    hashed.clear()
    with verify_once():
        for split in ("val", "test", "val"):
            read_records(dataset, split)
        with verify_once():  # nested: the same block
            read_records(dataset, "test")
    assert hashed == {"val-00000-of-00001.tfrecord": 1, "test-00000-of-00001.tfrecord": 1}

    hashed.clear()
    with verify_once():  # a new block verifies again
        read_records(dataset, "val")
    assert hashed == {"val-00000-of-00001.tfrecord": 1}


def test_a_damaged_shard_fails_its_first_read_in_a_block(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path / "datasets")
    shard = dataset / "train-00000-of-00001.tfrecord"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with verify_once():
        read_records(str(dataset), "val")
        with pytest.raises(ShardIntegrityError, match="train-00000-of-00001.tfrecord"):
            read_records(str(dataset), "train")
        with pytest.raises(ShardIntegrityError):  # a failed check is not recorded as done
            read_records(str(dataset), "train")
