"""storage.fs: atomic writes never leave partial files; staged folders appear whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from storage import fs


def test_atomic_write_bytes_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.bin"
    fs.atomic_write_bytes(target, b"one")
    fs.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


def test_json_and_parquet_round_trip(tmp_path: Path) -> None:
    fs.atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    assert fs.read_json(tmp_path / "x.json") == {"a": [1, 2], "b": 1}
    df = pd.DataFrame({"imdb_id": [1, 2], "url": ["u", "v"]})
    fs.atomic_write_parquet(tmp_path / "x.parquet", df)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "x.parquet"), df)


def test_staged_dir_is_invisible_until_complete(tmp_path: Path) -> None:
    final = tmp_path / "version"
    with pytest.raises(RuntimeError), fs.staged_dir(final) as tmp:
        (Path(tmp) / "part").write_text("half")
        raise RuntimeError("killed")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
    with fs.staged_dir(final) as tmp:
        (Path(tmp) / "part").write_text("whole")
    assert (final / "part").read_text() == "whole"


def test_staged_dir_keeps_first_complete_copy(tmp_path: Path) -> None:
    final = tmp_path / "v"
    for text in ("first", "second"):
        with fs.staged_dir(final) as tmp:
            (Path(tmp) / "f").write_text(text)
    assert (final / "f").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_staged_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "shards" / "train-00000-of-00001.tfrecord"
    with pytest.raises(RuntimeError), fs.staged_file(str(target)) as local:
        Path(local).write_bytes(b"half")
        raise RuntimeError("killed")
    assert list((tmp_path / "shards").iterdir()) == []
    with fs.staged_file(str(target)) as local:
        assert Path(local).parent == target.parent and Path(local).name.startswith(fs.TEMP_PREFIX)
        Path(local).write_bytes(b"whole")
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert target.read_bytes() == b"whole"
    with fs.staged_file("memory://pf-staged/shard") as local:  # object stores: one upload
        Path(local).write_bytes(b"remote")
    assert fs.url_to_fs("memory://pf-staged/shard")[0].cat_file("/pf-staged/shard") == b"remote"


def test_rename_into_place_first_complete_writer_wins(tmp_path: Path) -> None:
    first, second, final = tmp_path / ".a", tmp_path / ".b", tmp_path / "v"
    for staged, text in ((first, "first"), (second, "second")):
        staged.mkdir()
        (staged / "done").write_text(text)
    fs.rename_into_place(str(first), str(final), marker="done")
    fs.rename_into_place(str(second), str(final), marker="done")
    assert (final / "done").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    (final / "done").rename(final / "stray")  # a folder without its marker is not published
    second.mkdir()
    (second / "done").write_text("second")
    with pytest.raises(OSError):
        fs.rename_into_place(str(second), str(final), marker="done")
    assert (second / "done").is_file()  # nothing lost


def test_staging_name_is_fixed_and_temp_names_unique() -> None:
    assert fs.staging_name("s3://b/datasets/v1") == f"s3://b/datasets/{fs.TEMP_PREFIX}v1"
    assert fs.temp_name("/d/v1").startswith(f"/d/{fs.TEMP_PREFIX}v1-")
    assert fs.temp_name("/d/v1") != fs.temp_name("/d/v1")


def test_remove_stale_temps(tmp_path: Path) -> None:
    (tmp_path / f"{fs.TEMP_PREFIX}x-1").write_bytes(b"partial")
    (tmp_path / "keep").write_bytes(b"ok")
    assert fs.remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_sha256_file_matches_bytes(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"poster")
    assert fs.sha256_file(tmp_path / "f") == fs.sha256_bytes(b"poster")


def test_memory_filesystem_url() -> None:
    fs.atomic_write_json("memory://pf/x.json", {"k": 1})
    assert fs.read_json("memory://pf/x.json") == {"k": 1}
    assert fs.exists("memory://pf/x.json")


def test_copy_tree_hashed_records_what_it_wrote_across_filesystems(tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"graph")
    (src / "variables" / "variables.index").write_bytes(b"x" * (3 << 20))  # several chunks
    expected = {
        "saved_model.pb": {"sha256": fs.sha256_bytes(b"graph"), "bytes": 5},
        "variables/variables.index": {"sha256": fs.sha256_bytes(b"x" * (3 << 20)),
                                      "bytes": 3 << 20},
    }
    remote = f"memory://copy-{tmp_path.name}/model"
    assert fs.copy_tree_hashed(src, remote) == expected
    assert fs.list_files(remote) == {"saved_model.pb": 5, "variables/variables.index": 3 << 20}
    assert fs.copy_tree_hashed(remote, tmp_path / "back") == expected
    assert (tmp_path / "back" / "saved_model.pb").read_bytes() == b"graph"
    fsspec_fs, root = fs.url_to_fs(remote)
    fsspec_fs.rm(root, recursive=True)


def test_fsync_tree_flushes_every_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"1")
    (tmp_path / "g").write_bytes(b"2")
    flushed: list[str] = []
    real_fsync = fs.os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(fs.os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(fs.os, "fsync", recording_fsync)
    fs.fsync_tree(tmp_path)
    assert sorted(flushed) == sorted(
        str(p) for p in (tmp_path, tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "f",
                         tmp_path / "g")
    )
