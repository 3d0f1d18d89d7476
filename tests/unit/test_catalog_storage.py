"""Round trips of the catalog folder's files, and the catalog content hash."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from storage.catalog import (
    LabelVocabulary,
    catalog_hash,
    load_catalog,
    load_labels,
    load_rejects,
    load_summary,
    load_vocabulary,
    remove_summary,
    write_catalog,
    write_labels,
    write_rejects,
    write_summary,
)


def catalog_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_number": [1, 3],
            "imdb_id": [114709, 113497],
            "genres": [["Animation", "Comedy"], ["Action"]],
            "poster_url": ["https://example.com/a.jpg", "https://example.com/b.jpg"],
            "split": ["train", "test"],
            "title": ["Toy Story (1995)", None],
            "score": [8.3, None],
            "imdb_link": ["http://www.imdb.com/title/tt114709", None],
            "source_index": ["0", "2"],
        }
    )


def test_catalog_round_trips_with_fixed_types_and_extra_columns(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, catalog_rows())
    assert Path(path).name == "catalog.parquet"
    back = load_catalog(tmp_path)
    assert list(back.columns) == list(catalog_rows().columns)
    assert back["imdb_id"].dtype == "int64" and back["score"].dtype == "float64"
    assert back["genres"].tolist() == [["Animation", "Comedy"], ["Action"]]
    assert back.loc[0, "title"] == "Toy Story (1995)" and pd.isna(back.loc[1, "title"])


def test_catalog_refuses_rows_that_break_the_schema(tmp_path: Path) -> None:
    rows = catalog_rows().assign(imdb_id=["tt1", "tt2"])
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_catalog(tmp_path, rows)
    assert not (tmp_path / "catalog.parquet").exists()


def test_rejects_round_trip_including_an_empty_file(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "row_number": [2],
            "line_number": [3],
            "reasons": [["missing_poster", "duplicate_id"]],
            "detail": ["missing_poster: poster_url=None; duplicate_id: imdb_id='1' (row 1 kept)"],
            "extra_fields": [None],
            "imdb_id": ["1"],
            "poster_url": [None],
        }
    )
    write_rejects(tmp_path, rows)
    back = load_rejects(tmp_path)
    assert back.loc[0, "reasons"] == ["missing_poster", "duplicate_id"]
    assert back.loc[0, "imdb_id"] == "1" and back.loc[0, "extra_fields"] is None
    write_rejects(tmp_path, rows.iloc[:0])
    assert load_rejects(tmp_path).empty


def test_labels_and_summary_round_trip(tmp_path: Path) -> None:
    vocab = LabelVocabulary(
        labels=["Comedy", "Drama"],
        counts={"Comedy": 1200, "Drama": 2000},
        dropped={"Adult": 3, "News": 12},
        min_count=1000,
        movies=3100,
    )
    write_labels(tmp_path, vocab)
    assert load_vocabulary(tmp_path) == vocab
    assert load_labels(tmp_path) == ["Comedy", "Drama"]
    summary = {"rows_read": 3, "accepted": 2, "rejected": 1, "by_reason": {"missing_poster": 1}}
    write_summary(tmp_path, summary)
    assert load_summary(tmp_path) == summary
    remove_summary(tmp_path)
    remove_summary(tmp_path)  # already gone: nothing to do
    assert not (tmp_path / "summary.json").exists()


def test_catalog_hash_names_source_and_parameters_only() -> None:
    params = {"min_genre_count": 1000, "drop_genres": ["Adult"]}
    key = catalog_hash("ab" * 32, params)
    assert len(key) == 16 and key == catalog_hash("ab" * 32, dict(reversed(params.items())))
    assert key != catalog_hash("cd" * 32, params)
    assert key != catalog_hash("ab" * 32, {**params, "min_genre_count": 999})
