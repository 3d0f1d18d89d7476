"""storage.fs.create_exclusive: one winner among racing creators, on every kind of store."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from storage import fs


@pytest.fixture(params=["local", "memory", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh root on each kind of store (s3: a bucket on the moto server)."""
    if request.param == "local":
        return str(tmp_path)
    if request.param == "memory":
        return f"memory://excl-{uuid.uuid4().hex[:8]}"
    return request.getfixturevalue("s3_bucket")


def test_first_create_wins_and_keeps_its_bytes(root: str) -> None:
    url = fs.join(root, "locks", "a.json")
    assert fs.create_exclusive(url, b"first") is True
    assert fs.create_exclusive(url, b"second") is False
    fsys, path = fs.url_to_fs(url)
    assert fsys.cat_file(path) == b"first"


def test_racing_creators_have_exactly_one_winner(root: str) -> None:
    url = fs.join(root, "race")
    results: list[bool] = []
    start = threading.Barrier(8)

    def create(i: int) -> None:
        start.wait()
        results.append(fs.create_exclusive(url, f"writer {i}".encode()))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_local_create_leaves_no_temp_file(tmp_path: Path) -> None:
    assert fs.create_exclusive(tmp_path / "x", b"1")
    assert not fs.create_exclusive(tmp_path / "x", b"2")
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_moto_server_honours_if_none_match(s3_bucket: str) -> None:
    # The precondition is checked by the server: a plain put after it still overwrites.
    fsys, path = fs.url_to_fs(fs.join(s3_bucket, "k"))
    fsys.pipe_file(path, b"a", mode="create")
    with pytest.raises(FileExistsError):
        fsys.pipe_file(path, b"b", mode="create")
    fsys.pipe_file(path, b"c")
    assert fsys.cat_file(path) == b"c"


def test_a_store_without_a_precondition_is_refused(tmp_path: Path) -> None:
    # fsspec's generic pipe_file(mode="create") is exists-then-write: not a precondition.
    with pytest.raises(fs.ExclusiveCreateUnsupported, match="no conditional create"):
        fs.create_exclusive(f"dir::{tmp_path}/x", b"1")
