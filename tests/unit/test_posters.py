"""storage.posters: content-addressed objects; index parts merge, dedupe and compact."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from storage import fs
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
