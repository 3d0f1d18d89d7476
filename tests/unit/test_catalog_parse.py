"""Catalog reading, repairs and policy as plain functions (no Great Expectations)."""

from __future__ import annotations

import codecs
import gzip
import hashlib

import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.catalog import (
    CatalogConfig,
    choose_labels,
    genre_tokens,
    min_count_for,
    repair_title,
    split_of,
)
from tasks.catalog_csv import (
    FIELD_MAX_CHARS,
    CatalogReadError,
    CatalogSchemaError,
    decode_text,
    iter_records,
    normalize_header,
    parse_table,
)

HEADER = "imdbId,Imdb Link,Title,IMDB Score,Genre,Poster"
POSTER = "https://images-na.ssl-images-amazon.com/images/M/x@@._V1_UX182_CR0,0,182,268_AL_.jpg"


def row(imdb_id: object, genre: str = "Drama", title: str = "A Movie (2001)") -> str:
    return f'{imdb_id},http://www.imdb.com/title/tt{imdb_id},"{title}",6.8,{genre},"{POSTER}"'


def test_decode_text_prefers_utf8_strips_bom_and_falls_back_to_latin1() -> None:
    text = f"{HEADER}\n{row(1, title='Amélie (2001)')}\n"
    assert decode_text(text.encode("utf-8")) == (text, "utf-8")
    assert decode_text(codecs.BOM_UTF8 + text.encode("utf-8")) == (text, "utf-8-sig")
    assert decode_text(text.encode("iso-8859-1")) == (text, "iso-8859-1")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "are control bytes"),
        (gzip.compress(f"{HEADER}\n{row(1)}\n".encode() * 50), "are control bytes"),
        (f"{HEADER}\n".encode("utf-16"), "UTF-16 text \\(byte order mark\\)"),
        (f"{HEADER}\n".encode("utf-16-le"), "every other byte is NUL"),
        (f"{HEADER}\n".encode("utf-32"), "UTF-32"),
    ],
)
def test_decode_text_refuses_only_what_is_not_text(data: bytes, message: str) -> None:
    with pytest.raises(CatalogReadError, match=message):
        decode_text(data)


def test_a_text_file_with_a_nul_decodes_and_the_row_is_rejected_alone() -> None:
    data = "\n".join([HEADER, row(1), row(2, title="Bad\x00Title"), row(3), ""]).encode()
    text, encoding = decode_text(data)
    table = parse_table(text)
    assert encoding == "utf-8" and table.rows_read == 3
    assert list(table.rows.index) == [1, 3]
    (reject,) = table.structural
    assert reject["reasons"] == ["control_character"] and reject["row_number"] == 2
    assert "title contains the control character U+0000" in reject["detail"]


def test_utf8_with_one_damaged_line_stays_utf8_and_rejects_that_row() -> None:
    good = [row(i, title="Amélie (2001)") for i in (1, 2, 3)]
    data = "\n".join([HEADER, *good, ""]).encode() + row(4).encode() + b"\n"
    damaged = data.replace(b"Movie (2001)", b"Movie \xe9\xff (2001)")
    for prefix, encoding in [(b"", "utf-8"), (codecs.BOM_UTF8, "utf-8-sig")]:
        text, found = decode_text(prefix + damaged)
        table = parse_table(text)
        assert found == encoding and list(table.rows.index) == [1, 2, 3]
        assert table.rows.loc[1, "title"] == "Amélie (2001)"
        (reject,) = table.structural
        assert reject["reasons"] == ["undecodable_text"] and reject["row_number"] == 4
        assert reject["title"] == "A Movie \\xe9\\xff (2001)"  # bytes kept, readable
        assert "title has bytes that are not UTF-8 (\\xe9 at character 8)" in reject["detail"]


def test_a_latin1_file_is_not_mistaken_for_damaged_utf8() -> None:
    text = "\n".join([HEADER, *(row(i, title="Amélie (2001)") for i in (1, 2)), ""])
    data = text.encode("iso-8859-1").replace(b"Am\xe9lie", b"Am\xc3\xa9lie", 1)  # one look-alike
    assert decode_text(data)[1] == "iso-8859-1"


def test_an_oversized_field_rejects_its_row_and_is_kept_clipped() -> None:
    huge = "x" * 5_000_000
    table = parse_table(f"{HEADER}\n{row(1)}\n{row(2, title=huge)}\n{row(3)}\n")
    assert table.rows_read == 3 and list(table.rows.index) == [1, 3]
    (reject,) = table.structural
    assert reject["reasons"] == ["field_too_large"]
    assert f"title has 5,000,000 characters, over the {FIELD_MAX_CHARS:,} cap" in reject["detail"]
    assert len(reject["title"]) == FIELD_MAX_CHARS


def test_iter_records_keeps_raw_text_and_start_lines_across_crlf_and_quoted_newlines() -> None:
    text = 'a,b\r\n1,"x, y"\r\n2,"two\r\nlines"\r\n3,z'
    records = list(iter_records(text))
    assert [r[0] for r in records] == [["a", "b"], ["1", "x, y"], ["2", "two\r\nlines"], ["3", "z"]]
    assert [r[2] for r in records] == [1, 2, 3, 5]
    assert "".join(r[1] for r in records) == text


def test_normalize_header_maps_known_names_and_names_extras() -> None:
    header = [
        "",
        "IMDBID",
        " Imdb Link",
        "title",
        "IMDB_Score",
        "Genre",
        "Poster",
        "Box Office ($)",
    ]
    assert normalize_header(header) == [
        "source_index",
        "imdb_id",
        "imdb_link",
        "title",
        "score",
        "genre",
        "poster_url",
        "box_office",
    ]


def test_normalize_header_names_the_missing_required_columns() -> None:
    with pytest.raises(CatalogSchemaError, match=r"missing required column\(s\) Poster.*found"):
        normalize_header(["imdbId", "Title", "Genre"])
    with pytest.raises(CatalogSchemaError, match="appears twice"):
        normalize_header(["imdbId", "Genre", "Poster", "genre"])


def test_parse_table_reads_index_column_quoted_commas_and_both_score_forms() -> None:
    text = (
        f",{HEADER}\n"
        f"7,{row(11, title='Sbirro, la tua legge (1979)')}\n"
        f"9,{row(12).replace(',6.8,', ',6,')}\n"
    )
    table = parse_table(text)
    assert table.columns[0] == "source_index"
    assert table.rows.loc[1, "title"] == "Sbirro, la tua legge (1979)"
    assert list(table.rows["score"]) == ["6.8", "6"]
    assert list(table.rows["source_index"]) == ["7", "9"]
    assert table.rows_read == 2 and not table.structural


def test_parse_table_rejects_a_last_line_cut_mid_row() -> None:
    cut = row(13)[:60]  # ends inside the Title/Score fields: too few fields
    table = parse_table(f"{HEADER}\n{row(11)}\n{cut}")
    (reject,) = table.structural
    assert reject["row_number"] == 2 and reject["line_number"] == 3
    assert reject["reasons"] == ["truncated_row"]
    assert reject["imdb_id"] == "13" and reject["poster_url"] is None
    assert list(table.rows.index) == [1]


def test_parse_table_rejects_a_last_line_cut_inside_a_quoted_field() -> None:
    cut = row(13)[:-20]  # six fields, but the Poster quote never closes
    table = parse_table(f"{HEADER}\n{row(11)}\n{cut}")
    assert [r["reasons"] for r in table.structural] == [["truncated_row"]]
    assert "inside a quoted field" in table.structural[0]["detail"]


def test_parse_table_accepts_a_complete_last_line_without_line_break() -> None:
    table = parse_table(f"{HEADER}\r\n{row(11)}\r\n{row(12)}")
    assert table.rows_read == 2 and not table.structural


def test_parse_table_rejects_wrong_width_rows_and_skips_blank_lines() -> None:
    text = f"{HEADER}\n{row(11)}\n\n{row(12)},surplus\n11,short\n{row(14)}\n"
    table = parse_table(text)
    assert table.rows_read == 4 and table.blank_lines == 1
    assert [(r["row_number"], r["reasons"]) for r in table.structural] == [
        (2, ["wrong_field_count"]),
        (3, ["wrong_field_count"]),
    ]
    assert table.structural[0]["extra_fields"] == ["surplus"]
    assert list(table.rows.index) == [1, 4]


def test_parse_table_needs_a_header() -> None:
    with pytest.raises(CatalogReadError, match="header"):
        parse_table("\n\n")


@pytest.mark.parametrize(
    ("shipped", "fixed"),
    [
        ("Double zÌ©ro (2004)", "Double zéro (2004)"),
        ("ÌÛ coup sÌÈr (2014)", "À coup sûr (2014)"),
        ("GÌ¦tz von Berlichingen (2014)", "Götz von Berlichingen (2014)"),
        ("Refrigerantes e CanÌ¤Ìµes de Amor (2016)", "Refrigerantes e Canções de Amor (2016)"),
    ],
)
def test_repair_title_undoes_the_catalogs_double_mojibake(shipped: str, fixed: str) -> None:
    assert repair_title(shipped) == fixed


@pytest.mark.parametrize(
    "title",
    [
        "Toy Story (1995)",
        "Amélie (2001)",  # correct text stays as it is
        "Götz (2014)",
        "Chūshingura (1962)",
        "Les mis\ufffd\ufffdrables (1995)",  # information already lost: kept as read
        "Pekka ja PÌ_tkÌ_ (1955)",  # lossy mojibake: no exact repair exists
        "Jisatsu sí¢kuru (2001)",  # the chain "works" but yields a combining mark
    ],
)
def test_repair_title_keeps_titles_it_cannot_repair_exactly(title: str) -> None:
    assert repair_title(title) == title


def test_split_of_is_a_pure_function_of_the_id_with_the_configured_shares() -> None:
    ids = range(1, 20_001)
    splits = pd.Series([split_of(i, 0.15, 0.15) for i in ids]).value_counts(normalize=True)
    assert splits["train"] == pytest.approx(0.70, abs=0.015)
    assert splits["val"] == pytest.approx(0.15, abs=0.015)
    assert splits["test"] == pytest.approx(0.15, abs=0.015)
    u = int.from_bytes(hashlib.sha256(b"114709").digest()[:8], "big") / 2**64
    assert split_of(114709, 0.15, 0.15) == ("train" if u < 0.7 else "val" if u < 0.85 else "test")


def test_genre_tokens_drop_repeats_and_keep_order() -> None:
    assert genre_tokens("Drama|Comedy|Drama") == ["Drama", "Comedy"]


def test_choose_labels_keeps_genres_at_or_above_the_threshold_sorted() -> None:
    tokens = pd.Series([["Drama", "War"], ["Drama", "Comedy"], ["Comedy"], ["Drama"]])
    vocab = choose_labels(tokens, 2, {"Adult": 3})
    assert vocab.labels == ["Comedy", "Drama"]
    assert vocab.counts == {"Comedy": 2, "Drama": 3}
    assert vocab.dropped == {"Adult": 3, "War": 1}
    assert (vocab.min_count, vocab.movies) == (2, 4)


def test_min_count_for_rounds_a_fraction_up_and_prefers_it_over_the_count() -> None:
    assert min_count_for(CatalogConfig(), 40_000) == 1000
    assert min_count_for(CatalogConfig(min_genre_fraction=0.0265), 5528) == 147
    assert min_count_for(CatalogConfig(min_genre_count=5, min_genre_fraction=0.5), 3) == 2


def test_config_refuses_splits_that_leave_no_training_data() -> None:
    with pytest.raises(ValidationError, match="val_fraction \\+ test_fraction"):
        CatalogConfig(val_fraction=0.5, test_fraction=0.5)


def test_parse_table_reads_a_literal_quote_inside_an_unquoted_last_field() -> None:
    table = parse_table(f'{HEADER}\n{row(11)}\n{row(12)[: -len(POSTER) - 2]}http://a/12"x.jpg')
    assert table.rows_read == 2 and not table.structural
    assert table.rows.loc[2, "poster_url"] == 'http://a/12"x.jpg'


def test_an_open_quote_swallowing_the_file_is_one_truncated_row() -> None:
    text = f'{HEADER}\n{row(11)}\n12,,"Title\n' + "x" * 200_000 + "\n"
    table = parse_table(text)
    assert table.rows_read == 2 and list(table.rows.index) == [1]
    (reject,) = table.structural
    assert reject["reasons"] == ["truncated_row"] and reject["line_number"] == 3
    assert "inside a quoted field" in reject["detail"]
