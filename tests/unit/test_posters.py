"""storage.posters: content-addressed objects; index parts merge, dedupe and compact."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from storage import fs, leases
from storage.posters import PosterStore


def index_row(imdb_id: int, sha256: str, url: str = "u", minutes: int = 0) -> dict[str, Any]:
    return {"imdb_id": imdb_id, "url": url, "sha256": sha256, "bytes": 3, "width": 1,
            "height": 2, "format": "jpeg",
            "fetched_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)}


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = PosterStore(tmp_path)
    sha = store.put(b"abc")
    assert sha == fs.sha256_bytes(b"abc")
    assert store.path(sha) == f"{tmp_path}/objects/{sha[:2]}/{sha}"
    assert store.put(b"abc") == sha and store.get(sha) == b"abc" and store.has(sha)
    assert [p.name for p in (tmp_path / "objects").rglob("*") if p.is_file()] == [sha]


def test_get_names_the_missing_hash(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="f" * 64):
        PosterStore(tmp_path).get("f" * 64)


def test_empty_index_has_the_contract_columns(tmp_path: Path) -> None:
    index = PosterStore(tmp_path).read_index()
    assert index.empty
    assert list(index.columns) == ["imdb_id", "url", "sha256", "bytes", "width", "height",
                                   "format", "fetched_at"]


def test_parts_merge_newest_row_wins_and_compaction_keeps_the_view(tmp_path: Path) -> None:
    store = PosterStore(tmp_path)
    store.append_index([index_row(2, "a"), index_row(1, "b")])
    store.append_index([index_row(2, "c", url="v", minutes=5)])
    assert store.append_index([]) is None
    before = store.read_index()
    assert before["imdb_id"].tolist() == [1, 2]
    assert before.set_index("imdb_id").loc[2, "sha256"] == "c"
    assert store.compact_index() == 2
    assert not list((tmp_path / "index-parts").iterdir())
    pd.testing.assert_frame_equal(store.read_index(), before)
    store.append_index([index_row(3, "d")])
    assert store.read_index()["imdb_id"].tolist() == [1, 2, 3]
    assert store.compact_index() == 1 and store.compact_index() == 0


def test_index_round_trips_types(tmp_path: Path) -> None:
    store = PosterStore(tmp_path)
    store.append_index([index_row(7, "e")])
    row = store.read_index().iloc[0]
    assert row["imdb_id"] == 7 and row["bytes"] == 3 and row["format"] == "jpeg"
    assert row["fetched_at"] == pd.Timestamp("2026-01-01", tz="UTC")


def test_readers_ignore_temp_files_and_stale_temps_are_removed(tmp_path: Path) -> None:
    store = PosterStore(tmp_path)
    store.append_index([index_row(1, "a")])
    (tmp_path / "index-parts" / ".tmp-half.parquet-123").write_bytes(b"PAR1 half")
    (tmp_path / "objects" / "ab").mkdir(parents=True)
    (tmp_path / "objects" / "ab" / ".tmp-abcd-123").write_bytes(b"half")
    assert len(store.read_index()) == 1
    assert store.remove_stale_temps() == 2
    assert not list(tmp_path.rglob(".tmp-*"))


def test_fsspec_memory_store_round_trips() -> None:
    store = PosterStore(f"memory://posterflow-test-{uuid.uuid4().hex}")
    sha = store.put(b"poster")
    assert store.get(sha) == b"poster" and store.has(sha)
    store.append_index([index_row(1, sha)])
    assert store.read_index()["sha256"].tolist() == [sha]
    assert store.compact_index() == 1 and len(store.read_index()) == 1


def test_put_rewrites_an_object_left_short(tmp_path: Path) -> None:
    store = PosterStore(tmp_path)
    sha = store.put(b"poster bytes")
    Path(store.path(sha)).write_bytes(b"")  # what a power cut can leave behind
    assert store.put(b"poster bytes") == sha and store.get(sha) == b"poster bytes"


def test_object_sizes_read_absent_as_none(tmp_path: Path) -> None:
    store = PosterStore(tmp_path)
    sha = store.put(b"12345")
    assert store.object_sizes([sha, "0" * 64]) == [5, None]
    memory = PosterStore(f"memory://posterflow-test-{uuid.uuid4().hex}")
    assert memory.object_sizes([memory.put(b"123"), "0" * 64]) == [3, None]


def test_verify_finds_missing_short_and_altered_objects_and_repair_drops_them(
        tmp_path: Path) -> None:
    store = PosterStore(tmp_path)
    shas = [store.put(f"poster {i}".encode()) for i in range(4)]
    store.append_index([{**index_row(i, sha), "bytes": 8} for i, sha in enumerate(shas)])
    Path(store.path(shas[0])).unlink()
    Path(store.path(shas[1])).write_bytes(b"short")
    Path(store.path(shas[2])).write_bytes(b"poster X")  # same size, other bytes
    store.put(b"not indexed")
    damage = store.verify()
    assert (damage.missing, damage.wrong_size, damage.wrong_hash) == ([shas[0]], [shas[1]],
                                                                      [shas[2]])
    assert damage.checked == 4 and damage.orphans == 1
    assert store.verify(hashes=False).wrong_hash == []
    assert store.repair(damage) == 3
    assert store.read_index()["sha256"].tolist() == [shas[3]] and not store.verify().damaged
    assert leases.read_lease(str(tmp_path)) is None  # the repair's own lease, released


def test_destructive_steps_need_the_lease(tmp_path: Path) -> None:
    store = PosterStore(tmp_path)
    store.append_index([index_row(1, "a")])
    other = leases.acquire(str(tmp_path), "fetch")
    with pytest.raises(leases.StoreBusy):
        store.compact_index()
    with pytest.raises(leases.StoreBusy):
        store.remove_stale_temps()
    assert store.compact_index(other) == 1  # the holder may
    stale = leases.Lease(**{**vars(other), "token": "someone-else"})
    with pytest.raises(leases.LeaseLost):
        store.compact_index(stale)
