"""The catalog stage end to end: real Great Expectations suite, real files, real Parquet."""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.catalog import (
    CATALOG_SCHEMA,
    load_catalog,
    load_rejects,
    load_summary,
    load_vocabulary,
)
from tasks.catalog import CatalogCheckError, CatalogConfig, split_of, validate_catalog
from tasks.catalog_csv import CatalogReadError, CatalogSchemaError, require_catalog

HEADER = ",imdbId,Imdb Link,Title,IMDB Score,Genre,Poster"
POSTER = "https://images-na.ssl-images-amazon.com/images/M/MV5B@@._V1_UX182_CR0,0,182,268_AL_.jpg"


def line(
    index: int,
    imdb_id: str,
    genre: str = "Drama",
    *,
    title: str = "A Movie (2001)",
    score: str = "6.8",
    poster: str = POSTER,
) -> str:
    """One source line in the layout of the 1,500-row sample (leading index column)."""
    link = f"http://www.imdb.com/title/tt{imdb_id}"
    return f'{index},{imdb_id},{link},"{title}",{score},{genre},"{poster}"'


# row_number -> (source line, expected reject reasons or None when accepted)
KITCHEN_SINK: dict[int, tuple[str, list[str] | None]] = {
    1: (line(5, "101", "Drama|Comedy|Drama"), None),
    2: (line(9, "102", "Comedy", title="Sbirro, la tua legge (1979)", score="6"), None),
    3: (line(1, "", "Drama"), ["missing_imdb_id"]),
    4: (line(2, "tt103", "Drama"), ["bad_imdb_id"]),
    5: (line(3, "104", ""), ["missing_genre"]),
    6: (line(4, "105", "Drama|Ad"), ["unknown_genre"]),
    7: (line(6, "106", "Drama", poster=""), ["missing_poster"]),
    8: (line(7, "107", "Drama", poster="ftp://example.com/x.jpg"), ["bad_poster_url"]),
    9: (line(8, "108", "Drama", score="11"), ["bad_score"]),
    10: (line(10, "109", "Drama", score="-1"), ["bad_score"]),
    11: (line(11, "110", "Adult|Drama"), ["dropped_genre"]),
    12: (line(12, "111", "War"), ["no_kept_genre"]),
    13: (line(13, "112", "Comedy", poster=""), ["missing_poster", "duplicate_id"]),
    14: (line(14, "112", "Comedy"), None),  # the first *clean* row of id 112 is kept
    15: (line(15, "101", "Drama"), ["duplicate_id"]),
    16: (line(16, "116", "Drama", score=""), None),  # a missing score is allowed
    17: (line(17, "117", "Comedy"), None),
    18: (line(18, "118", "Drama|War"), None),
    19: (line(19, "119", "Drama")[:40], ["truncated_row"]),  # the last line, cut
}


def write_kitchen_sink(path: Path) -> Path:
    """BOM, CRLF, an index column, quoted commas, both score forms, a cut last line."""
    lines = [HEADER, *(src for src, _ in KITCHEN_SINK.values())]
    path.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("sink")
    config = CatalogConfig(min_genre_count=3)  # 11 of 19 rows invalid: fails the 5% tolerance
    result = validate_catalog(write_kitchen_sink(tmp / "MovieGenre.csv"), tmp / "out", config)
    with pytest.raises(CatalogCheckError, match="above the reject tolerance"):
        result.check()
    return tmp / "out", result.summary


def test_every_row_read_is_accepted_or_rejected_once(sink: tuple[Path, dict]) -> None:
    out, summary = sink
    catalog, rejects = load_catalog(out), load_rejects(out)
    assert summary["rows_read"] == len(KITCHEN_SINK) == summary["accepted"] + summary["rejected"]
    assert (summary["accepted"], summary["rejected"]) == (len(catalog), len(rejects))
    assert sorted([*catalog["row_number"], *rejects["row_number"]]) == list(KITCHEN_SINK)


def test_each_bad_row_is_rejected_with_its_reasons(sink: tuple[Path, dict]) -> None:
    out, _ = sink
    rejects = load_rejects(out).set_index("row_number")
    expected = {r: reasons for r, (_, reasons) in KITCHEN_SINK.items() if reasons}
    assert {r: rejects.at[r, "reasons"] for r in rejects.index} == expected
    assert "unknown tokens: 'Ad'" in rejects.at[6, "detail"]
    assert "(row 14 kept)" in rejects.at[13, "detail"]
    assert "(row 1 kept)" in rejects.at[15, "detail"]
    assert rejects.at[4, "imdb_id"] == "tt103"  # raw values are kept
    assert rejects.at[8, "poster_url"] == "ftp://example.com/x.jpg"
    assert rejects.at[19, "line_number"] == 20


def test_catalog_rows_are_typed_labelled_and_split(sink: tuple[Path, dict]) -> None:
    out, _ = sink
    schema = pq.read_schema(out / "catalog.parquet")
    assert schema.names[: len(CATALOG_SCHEMA)] == CATALOG_SCHEMA.names
    assert schema.field("source_index").type == "string"  # extra source columns are kept
    catalog = load_catalog(out).set_index("row_number")
    assert catalog.at[1, "genres"] == ["Comedy", "Drama"]
    assert catalog.at[18, "genres"] == ["Drama"]  # War is rare: dropped from the movie
    assert catalog.at[2, "title"] == "Sbirro, la tua legge (1979)"
    assert list(catalog["score"].iloc[:2]) == [6.8, 6.0]
    assert catalog["score"].isna().sum() == 1
    assert list(catalog["split"]) == [split_of(i, 0.15, 0.15) for i in catalog["imdb_id"]]


def test_labels_and_summary_describe_the_run(sink: tuple[Path, dict]) -> None:
    out, summary = sink
    vocab = load_vocabulary(out)
    assert vocab.labels == ["Comedy", "Drama"]
    assert vocab.dropped == {"Adult": 1, "War": 2}
    assert summary == load_summary(out)
    assert summary["labels"] == vocab.labels
    assert summary["encoding"] == "utf-8-sig" and summary["line_endings"] == "crlf"
    assert summary["unknown_genres"] == {"Ad": 1}
    assert summary["rejected_by_policy"] == 2
    assert summary["rejected_invalid"] == summary["rejected"] - 2
    assert summary["by_reason"]["duplicate_id"] == 2
    assert sum(summary["split_sizes"].values()) == summary["accepted"]
    assert not summary["passed"]
    assert summary["problems"] == [
        "11 of 19 rows are invalid (57.9%), above the reject tolerance of 5.0%"
    ]
    failed = {e["reject_reason"] for e in summary["expectations"] if not e["success"]}
    assert failed == {
        "missing_imdb_id",
        "bad_imdb_id",
        "duplicate_id",
        "missing_genre",
        "unknown_genre",
        "missing_poster",
        "bad_poster_url",
        "bad_score",
    }


def test_data_docs_open_on_the_validation(sink: tuple[Path, dict]) -> None:
    out, _ = sink
    index = (out / "data_docs" / "index.html").read_text()
    assert "moviegenre_rows" in index
    pages = list((out / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and "values must match this regular expression" in pages[0].read_text()


def test_iso_8859_1_titles_decode_and_mojibake_is_repaired(tmp_path: Path) -> None:
    header = "imdbId,Imdb Link,Title,IMDB Score,Genre,Poster"
    lines = [
        header,
        line(0, "1", title="Amélie (2001)")[2:],
        line(0, "2", title="Double zÌ©ro")[2:],
    ]
    src = tmp_path / "latin1.csv"
    src.write_bytes("\n".join(lines).encode("iso-8859-1"))
    result = validate_catalog(src, tmp_path / "out", CatalogConfig(min_genre_count=1))
    assert list(load_catalog(result.out_dir)["title"]) == ["Amélie (2001)", "Double zéro"]
    assert result.summary["encoding"] == "iso-8859-1"
    assert result.summary["titles_repaired"] == 1
    raw = validate_catalog(
        src, tmp_path / "raw", CatalogConfig(min_genre_count=1, repair_titles=False)
    )
    assert list(load_catalog(raw.out_dir)["title"]) == ["Amélie (2001)", "Double zÌ©ro"]


def test_missing_optional_columns_warn_and_extra_columns_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "minimal.csv"
    src.write_text(f'Poster,imdbId,Genre,Box Office\n"{POSTER}",7,Drama,12\n"{POSTER}",8,Drama,\n')
    with caplog.at_level(logging.WARNING, logger="tasks.catalog"):
        result = validate_catalog(src, tmp_path / "out", CatalogConfig(min_genre_count=1))
    assert "Imdb Link, Title, IMDB Score missing" in caplog.text
    catalog = load_catalog(result.out_dir)
    assert list(catalog["box_office"].fillna("<null>")) == ["12", "<null>"]
    assert catalog["title"].isna().all() and catalog["score"].isna().all()
    assert result.passed and result.summary["missing_optional_columns"] == [
        "Imdb Link",
        "Title",
        "IMDB Score",
    ]


def test_no_kept_genre_at_all_fails_the_check(tmp_path: Path) -> None:
    src = tmp_path / "small.csv"
    src.write_text("imdbId,Genre,Poster\n" + "".join(f'{i},Drama,"{POSTER}"\n' for i in range(5)))
    result = validate_catalog(src, tmp_path / "out")  # the seed's 1000 movies per genre
    assert result.summary["problems"] == [
        "no genre is carried by >= 1000 of the 5 valid movies: lower --min-genre-count or set "
        "--min-genre-fraction"
    ]
    assert result.summary["by_reason"] == {"no_kept_genre": 5}


def test_movies_to_score_keep_no_genre_and_rare_genres_and_lose_nothing_else(
        tmp_path: Path) -> None:
    config = CatalogConfig(min_genre_count=3, unlabelled="keep", reject_tolerance=1)
    result = validate_catalog(write_kitchen_sink(tmp_path / "MovieGenre.csv"), tmp_path / "out",
                              config)
    catalog = load_catalog(str(tmp_path / "out")).set_index("imdb_id")
    # Row 5 (no genre) and row 12 (only the rare War) are kept, with no labels.
    assert list(catalog.loc[104, "genres"]) == list(catalog.loc[111, "genres"]) == []
    assert result.summary["unlabelled"] == 2
    assert "missing_genre" not in result.summary["by_reason"]
    assert "no_kept_genre" not in result.summary["by_reason"]
    # Every other reason still rejects, and every row read ends one way or the other.
    expected = {reason for _, reasons in KITCHEN_SINK.values() for reason in reasons or []}
    assert set(result.summary["by_reason"]) == expected - {"missing_genre", "no_kept_genre"}
    assert result.summary["accepted"] + result.summary["rejected"] == len(KITCHEN_SINK)


def test_a_catalog_of_new_movies_without_any_genre_passes_when_kept(tmp_path: Path) -> None:
    src = tmp_path / "new.csv"
    src.write_text("imdbId,Genre,Poster\n" + "".join(f'{i},,"{POSTER}"\n' for i in range(5)))
    kept = validate_catalog(src, tmp_path / "kept", CatalogConfig(unlabelled="keep"))
    kept.check()
    assert (kept.summary["accepted"], kept.summary["unlabelled"], kept.summary["labels"]) == (
        5, 5, [])
    rejected = validate_catalog(src, tmp_path / "rejected")
    assert rejected.summary["by_reason"] == {"missing_genre": 5}


def test_a_missing_required_column_raises_before_anything_is_written(tmp_path: Path) -> None:
    src = tmp_path / "nogenre.csv"
    src.write_text(f'imdbId,Title,Poster\n1,X,"{POSTER}"\n')
    with pytest.raises(CatalogSchemaError, match="Genre"):
        validate_catalog(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["path", "memory-url"])
def test_a_missing_catalog_is_named_before_anything_is_read_or_written(
        tmp_path: Path, where: str) -> None:
    # The shipped deployments' default catalog does not exist until a user puts it there.
    missing = str(tmp_path / "MovieGenre.csv") if where == "path" else "memory://none/Movie.csv"
    with pytest.raises(CatalogReadError, match="catalog not found") as error:
        validate_catalog(missing, tmp_path / "out")
    assert str(error.value) == f"catalog not found: {missing}"
    assert not (tmp_path / "out").exists()
    with pytest.raises(CatalogReadError, match="catalog not found"):
        require_catalog(missing)


def test_validate_cli_on_a_missing_catalog_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    missing = tmp_path / "MovieGenre.csv"
    result = CliRunner().invoke(app, ["validate", str(missing), "--root", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"unreadable input: catalog not found: {missing}"]
    assert not (tmp_path / "d").exists()


# --- the real samples in ../shared (skipped when absent) ----------------------------------

SEED_FRACTION = CatalogConfig(min_genre_fraction=0.0265)
SAMPLES = {
    "MovieGenre_1500_random_rows.csv": (
        1500,
        1447,
        {"missing_genre": 9, "missing_poster": 26, "no_kept_genre": 19},
    ),
    "MovieGenre_head96_iso8859-1.csv": (96, 96, {}),
    "MovieGenre_head517_truncated.csv": (517, 514, {"missing_poster": 2, "truncated_row": 1}),
}


@pytest.fixture(scope="module")
def samples(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each real sample validated once with the seed-equivalent genre fraction."""
    tmp = tmp_path_factory.mktemp("samples")
    raw = shared_dir / "data" / "moviegenre-raw"
    return {n: Path(validate_catalog(raw / n, tmp / n, SEED_FRACTION).out_dir) for n in SAMPLES}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(SAMPLES))
def test_real_samples_account_for_every_row(samples: dict[str, Path], name: str) -> None:
    read, accepted, by_reason = SAMPLES[name]
    summary = load_summary(samples[name])
    assert (summary["rows_read"], summary["accepted"]) == (read, accepted)
    assert summary["accepted"] + summary["rejected"] == read
    assert summary["by_reason"] == by_reason
    assert summary["passed"]
    out = samples[name]
    rows = sorted([*load_catalog(out)["row_number"], *load_rejects(out)["row_number"]])
    assert rows == list(range(1, read + 1))


@pytest.mark.shared_data
def test_real_samples_decode_titles(samples: dict[str, Path]) -> None:
    utf8 = samples["MovieGenre_1500_random_rows.csv"]
    titles = set(load_catalog(utf8)["title"])
    assert {"Double zéro (2004)", "À coup sûr (2014)", "Pelé: Birth of a Legend (2016)"} <= titles
    assert load_summary(utf8)["titles_repaired"] == 41
    latin1 = samples["MovieGenre_head96_iso8859-1.csv"]
    assert load_summary(latin1)["encoding"] == "iso-8859-1"
    assert load_summary(latin1)["line_endings"] == "crlf"
    titles96 = load_catalog(latin1).set_index("row_number")["title"]
    assert titles96[1] == "Toy Story (1995)"
    assert titles96[69] == "Les misí©rables (1995)"  # a second mojibake variant: kept as read
    cut = load_rejects(samples["MovieGenre_head517_truncated.csv"]).set_index("row_number")
    assert cut.loc[517, "reasons"] == ["truncated_row"]
    assert cut.loc[517, "title"] == "Robin Hood: Men in Tights (1993)"


# --- row-level faults in the text, and the URLs fetch accepts --------------------------------


def write_defects(path: Path) -> dict[int, list[str] | None]:
    """Good UTF-8 rows around a NUL, a 5 MB field, bytes that are not UTF-8, odd URLs."""
    rows: dict[int, tuple[str, list[str] | None]] = {
        1: (line(1, "201", title="Amélie (2001)"), None),
        2: (line(2, "202", title="Bad\x00Title"), ["control_character"]),
        3: (line(3, "203", title="y" * 5_000_000), ["field_too_large"]),
        4: (line(4, "204", title="DAMAGED"), ["undecodable_text"]),
        5: (line(5, "205", poster="HTTP://Example.COM/p/205.jpg"), None),
        6: (line(6, "206", poster="http://[::1]:8080/206.jpg"), None),
        7: (line(7, "207", poster="http://[::1:8080/207.jpg"), ["bad_poster_url"]),
        8: (line(8, "208", poster="http://images.example.com/2 08.jpg"), ["bad_poster_url"]),
        9: (line(9, "209", title="Pelé (2016)"), None),
    }
    data = "\n".join([HEADER, *(src for src, _ in rows.values()), ""]).encode("utf-8")
    path.write_bytes(data.replace(b"DAMAGED", b"Dam\xe9ged"))
    return {r: reasons for r, (_, reasons) in rows.items()}


def test_row_level_faults_reject_only_their_row(tmp_path: Path) -> None:
    expected = write_defects(tmp_path / "MovieGenre.csv")
    config = CatalogConfig(min_genre_count=1, reject_tolerance=0.6)
    result = validate_catalog(tmp_path / "MovieGenre.csv", tmp_path / "out", config).check()
    summary, rejects = result.summary, load_rejects(tmp_path / "out").set_index("row_number")
    assert summary["rows_read"] == len(expected) == summary["accepted"] + summary["rejected"]
    assert summary["encoding"] == "utf-8"
    assert {r: rejects.at[r, "reasons"] for r in rejects.index} == {
        r: reasons for r, reasons in expected.items() if reasons
    }
    assert summary["by_reason"] == {
        "bad_poster_url": 2, "control_character": 1, "field_too_large": 1, "undecodable_text": 1,
    }
    assert rejects.at[4, "title"] == "Dam\\xe9ged"
    assert len(rejects.at[3, "title"]) == 10_000
    catalog = load_catalog(tmp_path / "out").set_index("row_number")
    assert catalog.at[1, "title"] == "Amélie (2001)"
    assert catalog.at[5, "poster_url"] == "HTTP://Example.COM/p/205.jpg"  # kept as written
    assert catalog.at[6, "poster_url"] == "http://[::1]:8080/206.jpg"


@pytest.mark.parametrize(
    "url",
    [
        "HTTP://Example.com/x.jpg",
        "hTTpS://example.com/x.jpg",
        "http://[::1]:8080/x.jpg",
        "http://[2001:db8::1]/x.jpg",
        "http://127.0.0.1:8799/x.jpg",
        POSTER,
    ],
)
def test_catalog_accepts_what_fetch_accepts(url: str) -> None:
    from yarl import URL

    from tasks.expectations import FETCHABLE_SCHEMES, poster_url_scheme
    from tasks.url_guard import AddressPolicy, check_url

    assert poster_url_scheme(url) in FETCHABLE_SCHEMES
    check_url(URL(url), AddressPolicy.from_allow_list(["0.0.0.0/0", "::/0"]))  # no Rejected


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x.jpg", "//example.com/x.jpg", "http:///x.jpg",
            "http://[::1/x.jpg", "http://example.com:99999/x.jpg", "example.com/x.jpg",
            "javascript:alert(1)", "http://exa mple.com/x.jpg"],
)
def test_catalog_refuses_urls_fetch_cannot_fetch(url: str) -> None:
    from tasks.expectations import FETCHABLE_SCHEMES, poster_url_scheme

    assert poster_url_scheme(url) not in FETCHABLE_SCHEMES


@pytest.mark.shared_data
def test_real_sample_with_a_nul_and_a_damaged_byte_loses_only_those_rows(
    shared_dir: Path, tmp_path: Path
) -> None:
    name = "MovieGenre_1500_random_rows.csv"
    data = (shared_dir / "data" / "moviegenre-raw" / name).read_bytes()
    lines = data.split(b"\n")
    lines[10] = lines[10].replace(b",", b",\x00", 1)  # a NUL at the start of row 10's 2nd field
    lines[20] = lines[20].replace(b",", b",\xff", 1)  # a byte that is never UTF-8
    (tmp_path / name).write_bytes(b"\n".join(lines))
    result = validate_catalog(tmp_path / name, tmp_path / "out", SEED_FRACTION)
    summary = result.check().summary
    read, accepted, by_reason = SAMPLES[name]
    assert summary["encoding"] == "utf-8" and summary["rows_read"] == read
    assert summary["accepted"] + summary["rejected"] == read
    assert summary["by_reason"] == {**by_reason, "control_character": 1, "undecodable_text": 1}
    assert accepted - 2 <= summary["accepted"] < accepted
    rejects = load_rejects(tmp_path / "out").set_index("row_number")
    assert rejects.at[10, "reasons"] == ["control_character"]
    assert rejects.at[20, "reasons"] == ["undecodable_text"]


def test_the_default_catalog_keeps_its_name_and_keep_gets_its_own(tmp_path: Path) -> None:
    from tasks.catalog import catalog_dir, hashed_params

    src = write_kitchen_sink(tmp_path / "MovieGenre.csv")
    assert "unlabelled" not in hashed_params(CatalogConfig())  # names from before the field
    kept = catalog_dir("c", str(src), CatalogConfig(unlabelled="keep"))
    assert catalog_dir("c", str(src), CatalogConfig()) != kept
