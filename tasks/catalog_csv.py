"""Reading MovieGenre.csv as shipped: bytes -> text -> CSV records -> a `SourceTable`.

The encoding is UTF-8 with or without BOM, else ISO-8859-1 (the original's encoding).
Records keep their raw text and first line number (CRLF, quoted commas and newlines);
headers match the catalog's column names ignoring case, spaces and underscores, and an
unnamed first column (a pandas index written to CSV) is kept as `source_index`. Records
whose shape does not match the header (wrong field count, a last line cut mid-row) become
structural reject rows here; everything else about a row is judged by the stage
(`tasks.catalog`).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from storage import fs

# Source header -> catalog column. Headers match ignoring case, spaces and underscores.
REQUIRED_COLUMNS = {"imdbId": "imdb_id", "Genre": "genre", "Poster": "poster_url"}
OPTIONAL_COLUMNS = {"Imdb Link": "imdb_link", "Title": "title", "IMDB Score": "score"}
INDEX_COLUMN = "source_index"  # an unnamed first column (a pandas index written to CSV)


class CatalogReadError(Exception):
    """The input could not be read as a CSV text file (CLI exit code 2)."""


class CatalogSchemaError(Exception):
    """The CSV was read but lacks a required column (CLI exit code 1)."""


@dataclass
class SourceTable:
    """The parsed CSV: structurally sound rows as stripped text, and structural rejects."""

    header: list[str]
    columns: list[str]
    rows: pd.DataFrame  # raw stripped text (None when empty), indexed by row_number
    line_numbers: dict[int, int]  # row_number -> line where the record starts
    structural: list[dict[str, Any]]  # reject rows for truncated / wrong-width records
    rows_read: int
    blank_lines: int


def read_bytes(csv_path: str | os.PathLike[str]) -> bytes:
    """The whole file from a local path or fsspec URL; CatalogReadError when unreadable."""
    try:
        filesystem, path = fs.url_to_fs(csv_path)
        with filesystem.open(path, "rb") as f:
            return bytes(f.read())
    except (OSError, ValueError) as exc:
        raise CatalogReadError(f"cannot read {csv_path}: {exc}") from exc


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (BOM stripped) when it decodes strictly, else ISO-8859-1."""
    if b"\x00" in data[:65536]:
        raise CatalogReadError("expected a CSV text file, found NUL bytes (binary or UTF-16?)")
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise CatalogReadError(f"file starts with a UTF-8 BOM but is not UTF-8: {exc}") from exc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("iso-8859-1"), "iso-8859-1"


LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # physical lines, ends kept


def iter_records(text: str) -> Iterator[tuple[list[str], str, int]]:
    """(fields, raw record text, first line number) per CSV record; quoted newlines allowed."""
    lines = LINE.findall(text)
    reader = csv.reader(lines)
    start = 0
    try:
        for fields in reader:
            yield fields, "".join(lines[start : reader.line_num]), start + 1
            start = reader.line_num
    except csv.Error as exc:  # e.g. an open quote swallowing more than the field size limit
        raise CatalogReadError(f"CSV record starting at line {start + 1}: {exc}") from exc


def ends_inside_quotes(raw: str) -> bool:
    """True when a record's text stops inside a quoted field (a file cut mid-field)."""
    try:
        list(csv.reader(io.StringIO(raw, newline=""), strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _header_key(name: str) -> str:
    """Header matching key: case, spaces, underscores and a stray BOM ignored."""
    return re.sub(r"[\s_\ufeff]", "", name).casefold()


def normalize_header(header: list[str]) -> list[str]:
    """Catalog column names for a source header; CatalogSchemaError on missing/doubled columns."""
    known = {_header_key(k): v for k, v in (REQUIRED_COLUMNS | OPTIONAL_COLUMNS).items()}
    columns: list[str] = []
    for i, name in enumerate(header):
        key = _header_key(name)
        if key in known:
            col = known[key]
        elif not key:
            col = INDEX_COLUMN if i == 0 else f"column_{i + 1}"
        else:
            col = re.sub(r"\W+", "_", name.strip()).strip("_").lower() or f"column_{i + 1}"
        if col in columns:
            raise CatalogSchemaError(f"column {name!r} appears twice in the header {header}")
        columns.append(col)
    missing = [src for src, col in REQUIRED_COLUMNS.items() if col not in columns]
    if missing:
        raise CatalogSchemaError(
            f"missing required column(s) {', '.join(missing)}: expected "
            f"{', '.join(REQUIRED_COLUMNS)}, found header {header}"
        )
    return columns


def parse_table(text: str) -> SourceTable:
    """Split the text into the header, sound rows and structurally broken rows."""
    records = list(iter_records(text))
    if not records or not any(f.strip() for f in records[0][0]):
        raise CatalogReadError("expected a header line (imdbId,...,Genre,Poster), found none")
    header = records[0][0]
    columns = normalize_header(header)
    cut_at_end = not text.endswith(("\n", "\r"))
    sound: list[list[str | None]] = []
    numbers: list[int] = []
    lines: dict[int, int] = {}
    structural: list[dict[str, Any]] = []
    blank = row = 0
    for i, (fields, raw, line) in enumerate(records[1:], start=2):
        if not any(f.strip() for f in fields):
            blank += 1
            continue
        row += 1
        lines[row] = line
        last = i == len(records)
        open_quote = last and ends_inside_quotes(raw)  # only the last record can end so
        short = len(fields) < len(columns)
        if last and (open_quote or (cut_at_end and short)):
            detail = (
                f"the last record stops mid-row ({len(fields)} of {len(columns)} fields"
                f"{', inside a quoted field' if open_quote else ', no final line break'})"
            )
            structural.append(_structural(row, line, columns, fields, "truncated_row", detail))
        elif len(fields) != len(columns):
            detail = f"{len(fields)} fields where the header has {len(columns)}"
            structural.append(_structural(row, line, columns, fields, "wrong_field_count", detail))
        else:
            numbers.append(row)
            sound.append([f.strip() or None for f in fields])
    frame = pd.DataFrame(
        sound, columns=columns, index=pd.Index(numbers, name="row_number"), dtype=object
    )
    return SourceTable(header, columns, frame, lines, structural, row, blank)


def _structural(
    row: int, line: int, columns: list[str], fields: list[str], reason: str, detail: str
) -> dict[str, Any]:
    """A reject row for a record whose shape does not match the header."""
    values: dict[str, Any] = {
        c: ((fields[i].strip() or None) if i < len(fields) else None) for i, c in enumerate(columns)
    }
    return {
        "row_number": row,
        "line_number": line,
        "reasons": [reason],
        "detail": f"{reason}: {detail}",
        **values,
        "extra_fields": fields[len(columns) :] or None,
    }
