"""Reading MovieGenre.csv as shipped: bytes -> text -> CSV records -> a `SourceTable`.

Only a file that is not text at all (a UTF-16/32 byte order mark, or control bytes making
up a binary share of its start) is unreadable. The encoding is UTF-8 with or without BOM,
else ISO-8859-1 (the original's encoding); a file that is UTF-8 but for a few lines keeps
UTF-8 and those lines' undecodable bytes reject their row. Records keep their raw text and
first line number (CRLF, quoted commas and newlines); headers match the catalog's column
names ignoring case, spaces and underscores, and an unnamed first column (a pandas index
written to CSV) is kept as `source_index`. Records that cannot be taken as a row become
structural reject rows here, one reason each: a shape that does not match the header
(`wrong_field_count`, `truncated_row`), bytes that do not decode (`undecodable_text`), a
control character such as NUL (`control_character`) or a field over `FIELD_MAX_CHARS`
(`field_too_large`). Everything else about a row is judged by the stage (`tasks.catalog`).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd

from storage import fs

# Source header -> catalog column. Headers match ignoring case, spaces and underscores.
REQUIRED_COLUMNS = {"imdbId": "imdb_id", "Genre": "genre", "Poster": "poster_url"}
OPTIONAL_COLUMNS = {"Imdb Link": "imdb_link", "Title": "title", "IMDB Score": "score"}
INDEX_COLUMN = "source_index"  # an unnamed first column (a pandas index written to CSV)

# No field of MovieGenre.csv comes near 1,000 characters (the longest, a poster URL, ~200):
# a longer one is a damaged row, and rejects.parquet keeps only its first FIELD_MAX_CHARS.
FIELD_MAX_CHARS = 10_000
SNIFF_BYTES = 65536  # how much of the file the text-or-binary test reads
BINARY_SHARE = 0.05  # control bytes in text are rare; in binary data ~11% of random bytes
CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f")
# Lone surrogates stand for bytes that did not decode (errors="surrogateescape").
UNDECODED = re.compile(r"[\udc80-\udcff]")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab and line breaks are text


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


def require_catalog(csv_path: str | os.PathLike[str]) -> None:
    """CatalogReadError naming the path when the catalog file does not exist (path or URL).

    Called before anything else reads the file (e.g. its content hash), so a missing
    catalog fails with this one line rather than an OSError from deeper down.
    """
    try:
        filesystem, path = fs.url_to_fs(csv_path)
        found = filesystem.exists(path)
    except (OSError, ValueError) as exc:
        raise CatalogReadError(f"cannot read {csv_path}: {exc}") from exc
    if not found:
        raise CatalogReadError(f"catalog not found: {csv_path}")


def read_bytes(csv_path: str | os.PathLike[str]) -> bytes:
    """The whole file from a local path or fsspec URL; CatalogReadError when unreadable."""
    try:
        filesystem, path = fs.url_to_fs(csv_path)
        with filesystem.open(path, "rb") as f:
            return bytes(f.read())
    except FileNotFoundError as exc:
        raise CatalogReadError(f"catalog not found: {csv_path}") from exc
    except (OSError, ValueError) as exc:
        raise CatalogReadError(f"cannot read {csv_path}: {exc}") from exc


def not_text_reason(data: bytes) -> str | None:
    """Why `data` is not a text file at all (UTF-16/32, binary), or None for text."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "it is UTF-32 text (byte order mark): save it as UTF-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "it is UTF-16 text (byte order mark): save it as UTF-8"
    sample = data[:SNIFF_BYTES]
    controls = len(sample) - len(sample.translate(None, CONTROL_BYTES))
    if not sample or controls < BINARY_SHARE * len(sample):
        return None
    if sample[1::2].count(0) > 0.4 * len(sample) or sample[::2].count(0) > 0.4 * len(sample):
        return "every other byte is NUL: UTF-16 text without byte order mark? save it as UTF-8"
    return f"{controls / len(sample):.0%} of its first {len(sample)} bytes are control bytes"


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (BOM stripped) unless most non-ASCII lines say ISO-8859-1.

    In UTF-8 text, bytes that do not decode become lone surrogates (`surrogateescape`),
    which reject their row; CatalogReadError when the data is not text at all.
    """
    reason = not_text_reason(data)
    if reason is not None:
        raise CatalogReadError(f"expected a CSV text file, but {reason}")
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", "surrogateescape"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if mostly_utf8(data):
        return data.decode("utf-8", "surrogateescape"), "utf-8"
    return data.decode("iso-8859-1"), "iso-8859-1"


def mostly_utf8(data: bytes) -> bool:
    """True when more non-ASCII lines decode as UTF-8 than do not (a few damaged lines)."""
    valid = invalid = 0
    for line in data.splitlines():
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            valid += 1
        except UnicodeDecodeError:
            invalid += 1
    return valid > invalid


LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # physical lines, ends kept


_CSV_LIMIT = threading.Lock()


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Raise the csv module's (process-wide) field size limit while one parse runs.

    Oversized fields are judged per row (`field_too_large`), so the reader must not stop
    at its own 128 KiB limit; the lock keeps two parses from restoring each other's limit.
    """
    with _CSV_LIMIT:
        previous = csv.field_size_limit(max(limit, csv.field_size_limit()))
        try:
            yield
        finally:
            csv.field_size_limit(previous)


def iter_records(text: str) -> Iterator[tuple[list[str], str, int]]:
    """(fields, raw record text, first line number) per CSV record; quoted newlines allowed."""
    lines = LINE.findall(text)
    with _csv_field_limit(len(text) + 1):
        records = []
        reader = csv.reader(lines)
        start = 0
        for fields in reader:
            records.append((fields, "".join(lines[start : reader.line_num]), start + 1))
            start = reader.line_num
    yield from records


def ends_inside_quotes(raw: str) -> bool:
    """True when a record's text stops inside a quoted field (a file cut mid-field)."""
    try:
        with _csv_field_limit(len(raw) + 1):
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
    header = [stored_text(name) for name in records[0][0]]
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
        elif (fault := text_fault(columns, fields)) is not None:
            structural.append(_structural(row, line, columns, fields, *fault))
        else:
            numbers.append(row)
            sound.append([f.strip() or None for f in fields])
    frame = pd.DataFrame(
        sound, columns=columns, index=pd.Index(numbers, name="row_number"), dtype=object
    )
    return SourceTable(header, columns, frame, lines, structural, row, blank)


def text_fault(columns: list[str], fields: list[str]) -> tuple[str, str] | None:
    """(reason, detail) for the first field whose text cannot be trusted, else None."""
    for column, value in zip(columns, fields, strict=True):
        if bad := UNDECODED.search(value):
            byte = stored_text(bad.group())
            return "undecodable_text", (
                f"{column} has bytes that are not UTF-8 ({byte} at character {bad.start()}), "
                "in a file that is UTF-8 elsewhere"
            )
        if bad := CONTROL.search(value):
            return "control_character", (
                f"{column} contains the control character U+{ord(bad.group()):04X} "
                f"at character {bad.start()}"
            )
        if len(value) > FIELD_MAX_CHARS:
            return "field_too_large", (
                f"{column} has {len(value):,} characters, over the {FIELD_MAX_CHARS:,} "
                f"cap (kept: the first {FIELD_MAX_CHARS:,})"
            )
    return None


def stored_text(value: str) -> str:
    """Field text as a reject row keeps it: undecoded bytes as \\xNN, at most the cap."""
    value = value[:FIELD_MAX_CHARS]
    if UNDECODED.search(value):
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def _structural(
    row: int, line: int, columns: list[str], fields: list[str], reason: str, detail: str
) -> dict[str, Any]:
    """A reject row for a record that cannot be taken as a row (shape or text)."""
    kept = [stored_text(f) for f in fields]
    values: dict[str, Any] = {
        c: ((kept[i].strip() or None) if i < len(kept) else None) for i, c in enumerate(columns)
    }
    return {
        "row_number": row,
        "line_number": line,
        "reasons": [reason],
        "detail": f"{reason}: {detail}",
        **values,
        "extra_fields": kept[len(columns) :] or None,
    }
