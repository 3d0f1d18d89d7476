"""The catalog stage: MovieGenre.csv as shipped -> validated, labelled, split catalog.

Steps, each a small function: read the CSV as shipped (`tasks.catalog_csv`: encoding,
records with their raw text, header names, structurally broken rows); run the Great
Expectations suite (`tasks.expectations`), whose row-level results
decide which rows are rejected and why; then apply label policy (drop movies carrying a
dropped genre such as Adult, drop rare genres, reject movies left with none) and assign a
split from a hash of the IMDb id.

Accounting: every data record read ends in `catalog.parquet` or `rejects.parquet`, so
`rows_read == accepted + rejected` always. The reject-rate tolerance counts only invalid
input (structural and expectation failures, duplicates included); label policy rejects
(`dropped_genre`, `no_kept_genre`) are decisions, not bad data, and do not count.

Titles: the catalog's titles carry a known double mojibake (UTF-8 bytes read as
Windows-1252, re-encoded as Mac Roman, shipped as ISO-8859-1: `Double zÌ©ro` for
`Double zéro`). A title is repaired only when undoing exactly that chain decodes strictly
and yields no control or combining characters; anything else is kept as read.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage import catalog as store
from storage import fs
from tasks.catalog_csv import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SourceTable,
    decode_text,
    parse_table,
    read_bytes,
    require_catalog,
)
from tasks.data_docs import localize
from tasks.expectations import DERIVED_FROM, poster_url_scheme

logger = logging.getLogger(__name__)

# The 28 genre tokens of the full MovieGenre.csv (IMDb's genre list).
# fmt: off
KNOWN_GENRES = (
    "Action", "Adult", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary",
    "Drama", "Family", "Fantasy", "Film-Noir", "Game-Show", "History", "Horror", "Music",
    "Musical", "Mystery", "News", "Reality-TV", "Romance", "Sci-Fi", "Short", "Sport",
    "Talk-Show", "Thriller", "War", "Western",
)
# fmt: on

SPLITS = ("train", "val", "test")


class CatalogConfig(BaseModel):
    """Validation, label and split rules of the catalog stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_genre_count: int = Field(
        default=1000,
        ge=1,
        description="Keep a genre only if at least this many movies carry it (the seed used "
        "1000 on the full 40k catalog). Ignored when min_genre_fraction is set.",
    )
    min_genre_fraction: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Keep a genre only if at least this fraction of the valid movies carry "
        "it (0.0265 matches the seed's 1000 on the full catalog). Overrides min_genre_count.",
    )
    drop_genres: list[str] = Field(
        default_factory=lambda: ["Adult"],
        description="Movies carrying any of these genres are left out entirely "
        "(reason dropped_genre), as the seed does for Adult.",
    )
    val_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="Share of movies in the validation split."
    )
    test_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="Share of movies in the test split."
    )
    reject_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Fail when more than this fraction of the rows read is invalid input "
        "(label-policy drops such as Adult or no kept genre do not count).",
    )
    known_genres: list[str] = Field(
        default_factory=lambda: list(KNOWN_GENRES),
        description="Genre tokens accepted in the Genre column; any other token rejects the "
        "row (reason unknown_genre) and is reported in summary.json.",
    )
    unlabelled: Literal["reject", "keep"] = Field(
        default="reject",
        description="Movies with no genre, or only dropped-as-rare ones: 'reject' them "
        "(reasons missing_genre, no_kept_genre: training has nothing to learn from them) or "
        "'keep' them with no labels (scoring new movies; the score flow's default). A kept "
        "movie still needs an id and a poster URL, and Adult movies are still left out.",
    )
    repair_titles: bool = Field(
        default=True,
        description="Undo the catalog's known double mojibake in titles (e.g. 'Double zÌ©ro' -> "
        "'Double zéro') when the repair is exact; other titles are kept as read.",
    )

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> CatalogConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self


class CatalogCheckError(Exception):
    """The catalog was written but failed a check, e.g. too many rejects (CLI exit code 1)."""


@dataclass(frozen=True)
class CatalogResult:
    """Where the catalog stage wrote its files, and its summary (the summary.json content)."""

    out_dir: str
    catalog_path: str
    rejects_path: str
    labels_path: str
    summary_path: str
    data_docs_index: str
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        """True when every check passed (reject rate within tolerance, labels kept)."""
        return bool(self.summary["passed"])

    def check(self) -> CatalogResult:
        """Raise CatalogCheckError naming the failed checks; return self when all passed."""
        if not self.passed:
            raise CatalogCheckError("; ".join(self.summary["problems"]))
        return self


# --- repairs and policy -------------------------------------------------------------------


def repair_title(title: str) -> str:
    """Undo the catalog's Windows-1252 -> Mac Roman -> ISO-8859-1 mojibake when it is exact."""
    if title.isascii():
        return title
    try:
        fixed = title.encode("iso-8859-1").decode("mac_roman").encode("cp1252").decode("utf-8")
    except UnicodeError:
        return title
    if any(unicodedata.category(c) in ("Cc", "Mn", "Co", "Cn") for c in fixed):
        return title
    return unicodedata.normalize("NFC", fixed)


def split_of(imdb_id: int, val_fraction: float, test_fraction: float) -> str:
    """train/val/test from the sha256 of the id: stable when rows are added or removed."""
    digest = hashlib.sha256(str(imdb_id).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < 1 - val_fraction - test_fraction:
        return "train"
    return "val" if u < 1 - test_fraction else "test"


def genre_tokens(genre: str) -> list[str]:
    """The `|`-separated tokens of a Genre cell, first occurrence order, duplicates removed."""
    return list(dict.fromkeys(genre.split("|")))


def min_count_for(config: CatalogConfig, movies: int) -> int:
    """The effective rare-genre threshold in movies (a fraction is rounded up)."""
    if config.min_genre_fraction is not None:
        return max(1, math.ceil(config.min_genre_fraction * movies))
    return config.min_genre_count


def choose_labels(
    tokens: pd.Series, min_count: int, dropped_movies: dict[str, int]
) -> store.LabelVocabulary:
    """Kept genres (>= min_count movies, sorted) from per-movie token lists."""
    counts = Counter(t for ts in tokens for t in ts)
    kept = sorted(g for g, n in counts.items() if n >= min_count)
    rare = {g: n for g, n in counts.items() if n < min_count}
    return store.LabelVocabulary(
        labels=kept,
        counts={g: counts[g] for g in kept},
        dropped=dict(sorted((rare | dropped_movies).items())),
        min_count=min_count,
        movies=len(tokens),
    )


# --- validation ---------------------------------------------------------------------------

ID_RE = re.compile(r"\d{1,18}")


def _gx_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns the suite checks: raw text, plus the parsed id, poster URL and score."""
    cols = ["imdb_id", "genre", "poster_url"] + (["score"] if "score" in rows.columns else [])
    frame = rows[cols].copy()
    frame["imdb_id_value"] = pd.Series(
        [int(v) if v is not None and ID_RE.fullmatch(v) else None for v in frame["imdb_id"]],
        index=frame.index,
        dtype=object,
    )
    frame["poster_url_scheme"] = frame["poster_url"].map(poster_url_scheme, na_action="ignore")
    if "score" in frame.columns:
        frame["score_value"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame


def _row_reasons(
    frame: pd.DataFrame, failures: dict[str, list[int]]
) -> tuple[dict[int, list[str]], dict[int, int]]:
    """Reasons per row from GX failures; of rows sharing an id, the first clean one is kept.

    Returns (row -> reasons, duplicate row -> the row kept for its id).
    """
    reasons: dict[int, list[str]] = {}
    for reason, rows in failures.items():
        if reason != "duplicate_id":
            for r in rows:
                reasons.setdefault(r, []).append(reason)
    flagged = failures.get("duplicate_id", [])
    if not flagged:
        return reasons, {}
    dup = pd.DataFrame(
        {"id": frame.loc[flagged, "imdb_id_value"], "clean": [r not in reasons for r in flagged]},
        index=pd.Index(flagged),
    ).sort_index()
    keep = dup.groupby("id", sort=False)["clean"].idxmax()  # first True, else first row
    kept_for = {int(r): int(keep[i]) for r, i in dup["id"].items() if r != keep[i]}
    for r in kept_for:
        reasons.setdefault(r, []).append("duplicate_id")
    return reasons, kept_for


def _invalid_rejects(
    table: SourceTable,
    frame: pd.DataFrame,
    failures: dict[str, list[int]],
    reason_columns: dict[str, str],
    known: set[str],
) -> list[dict[str, Any]]:
    """Reject rows for invalid input: structural problems, then suite failures."""
    reasons, kept_for = _row_reasons(frame, failures)
    rejects = list(table.structural)
    for r in sorted(reasons):
        raw = table.rows.loc[r]
        parts = []
        for reason in reasons[r]:
            col = reason_columns[reason]
            text = f"{reason}: {col}={raw[col]!r}"
            if reason == "unknown_genre":
                unknown = [t for t in genre_tokens(raw[col]) if t not in known]
                text += f" (unknown tokens: {', '.join(map(repr, unknown))})"
            elif reason == "duplicate_id":
                text += f" (row {kept_for[r]} kept)"
            parts.append(text)
        rejects.append(_reject_row(table, r, reasons[r], "; ".join(parts)))
    return rejects


def _reject_row(table: SourceTable, row: int, reasons: list[str], detail: str) -> dict[str, Any]:
    """One rejects.parquet row for a sound record: reasons, detail and its field text."""
    return {
        "row_number": row,
        "line_number": table.line_numbers[row],
        "reasons": reasons,
        "detail": detail,
        **table.rows.loc[row].to_dict(),
        "extra_fields": None,
    }


def _apply_label_policy(
    table: SourceTable, valid: pd.DataFrame, config: CatalogConfig
) -> tuple[pd.Series, store.LabelVocabulary, list[dict[str, Any]]]:
    """(kept genres per accepted row, vocabulary, policy reject rows) for the valid rows."""
    tokens = valid["genre"].map(lambda genre: genre_tokens(genre) if genre else [])
    drop = set(config.drop_genres)
    hits = tokens.map(lambda ts: [t for t in ts if t in drop])
    rejects = [
        _reject_row(table, r, ["dropped_genre"], f"dropped_genre: {'|'.join(hit)}")
        for r, hit in hits.items()
        if hit
    ]
    tokens = tokens[~hits.map(bool)]
    dropped = Counter(t for hit in hits for t in hit)
    vocab = choose_labels(tokens, min_count_for(config, len(tokens)), dict(dropped))
    kept = set(vocab.labels)
    genres = tokens.map(lambda ts: sorted(t for t in ts if t in kept))
    if config.unlabelled == "keep":
        return genres, vocab, rejects
    rejects += [
        _reject_row(
            table,
            r,
            ["no_kept_genre"],
            f"no_kept_genre: {valid.at[r, 'genre']!r} has no genre carried by "
            f">= {vocab.min_count} movies",
        )
        for r in genres.index[~genres.map(bool)]
    ]
    return genres[genres.map(bool)], vocab, rejects


def _catalog_frame(valid: pd.DataFrame, genres: pd.Series, config: CatalogConfig) -> pd.DataFrame:
    """catalog.parquet rows: typed fixed columns, then extra source columns as read."""
    rows = valid.loc[genres.index]
    missing = pd.Series(None, index=rows.index, dtype=object)
    titles = rows.get("title", missing)
    out = pd.DataFrame(
        {
            "row_number": rows.index.to_numpy(dtype="int64"),
            "imdb_id": rows["imdb_id"].astype("int64"),
            "genres": genres,
            "poster_url": rows["poster_url"],
            "split": [
                split_of(int(i), config.val_fraction, config.test_fraction) for i in rows["imdb_id"]
            ],
            "title": titles.map(repair_title, na_action="ignore")
            if config.repair_titles
            else titles,
            "score": pd.to_numeric(rows.get("score", missing), errors="coerce").astype("float64"),
            "imdb_link": rows.get("imdb_link", missing),
        },
        index=rows.index,
    )
    mapped = set(REQUIRED_COLUMNS.values()) | set(OPTIONAL_COLUMNS.values())
    extras = [c for c in rows.columns if c not in mapped]
    return pd.concat([out, rows[extras]], axis=1).reset_index(drop=True)


def _rejects_frame(rejects: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """rejects.parquet rows in source order."""
    fixed = ["row_number", "line_number", "reasons", "detail"]
    df = pd.DataFrame(rejects, columns=[*fixed, *columns, "extra_fields"])
    return df.sort_values("row_number", kind="stable").reset_index(drop=True)


def _write_data_docs(docs_src: str, out_dir: str) -> str:
    """Move locally built Data Docs to `<out_dir>/data_docs` (replacing an older copy)."""
    target = fs.join(out_dir, store.DATA_DOCS)
    filesystem, path = fs.url_to_fs(target)
    if filesystem.exists(path):
        filesystem.rm(path, recursive=True)
    if fs.is_local(target):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.move(docs_src, path)
    else:
        filesystem.put(docs_src, path, recursive=True)
    return fs.join(target, "index.html")


def hashed_params(config: CatalogConfig) -> dict[str, Any]:
    """The parameters a catalog's name hashes. `unlabelled` only when 'keep': at its default
    it leaves the names (and so every dataset version and cache built on them) as they were
    before the field existed."""
    params = config.model_dump(mode="json")
    if params["unlabelled"] == "reject":
        del params["unlabelled"]
    return params


def catalog_dir(catalogs_root: str, csv_path: str, config: CatalogConfig) -> str:
    """`<catalogs_root>/<catalog-hash>`: named by the source bytes and the stage parameters."""
    require_catalog(csv_path)
    key = store.catalog_hash(fs.sha256_file(csv_path), hashed_params(config))
    return fs.join(catalogs_root, key)


def validate_catalog(
    csv_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: CatalogConfig | None = None,
) -> CatalogResult:
    """Read, validate, label and split a MovieGenre.csv into `out_dir`; summary.json last.

    Raises CatalogReadError (unreadable input) or CatalogSchemaError (missing required
    column). A catalog that reads but fails a check is still written, with `passed: false`
    and its `problems` in the summary: call `result.check()` to turn that into an error.
    """
    from tasks.expectations import validate_rows

    config = config or CatalogConfig()
    out = str(out_dir)
    data = read_bytes(csv_path)
    text, encoding = decode_text(data)
    table = parse_table(text)
    missing_optional = [s for s, c in OPTIONAL_COLUMNS.items() if c not in table.columns]
    if missing_optional:
        logger.warning("%s: optional column(s) %s missing", csv_path, ", ".join(missing_optional))

    store.remove_summary(out)
    frame = _gx_frame(table.rows)
    with tempfile.TemporaryDirectory(prefix="posterflow-gx-") as tmp:
        outcome = validate_rows(frame, config.known_genres, os.path.join(tmp, "data_docs"),
                                require_genre=config.unlabelled == "reject")
        localize(os.path.join(tmp, "data_docs"))  # render offline: no CDN
        docs_index = _write_data_docs(os.path.join(tmp, "data_docs"), out)
    reason_columns = {
        e["reject_reason"]: DERIVED_FROM.get(e["column"], e["column"]) for e in outcome.expectations
    }
    invalid = _invalid_rejects(
        table, frame, outcome.failures, reason_columns, set(config.known_genres)
    )
    valid = table.rows.drop(
        index=[r["row_number"] for r in invalid if r["row_number"] in table.rows.index]
    )
    genres, vocab, policy = _apply_label_policy(table, valid, config)
    accepted = _catalog_frame(valid, genres, config)
    rejects = _rejects_frame(invalid + policy, table.columns)

    summary = _summary(table, accepted, rejects, len(invalid), vocab, config)
    summary |= {
        "source": str(csv_path),
        "source_sha256": fs.sha256_bytes(data),
        "encoding": encoding,
        "line_endings": "crlf" if "\r\n" in text else ("cr" if "\r" in text else "lf"),
        "missing_optional_columns": missing_optional,
        "titles_repaired": _repaired_count(valid.loc[genres.index], accepted, config),
        "expectations": outcome.expectations,
    }
    paths = {
        "catalog_path": store.write_catalog(out, accepted),
        "rejects_path": store.write_rejects(out, rejects),
        "labels_path": store.write_labels(out, vocab),
        "summary_path": store.write_summary(out, summary),
    }
    logger.info(
        "catalog %s: %d rows read, %d accepted, %d rejected: %s",
        csv_path,
        summary["rows_read"],
        summary["accepted"],
        summary["rejected"],
        "passed" if summary["passed"] else "; ".join(summary["problems"]),
    )
    return CatalogResult(out_dir=out, data_docs_index=docs_index, summary=summary, **paths)


def _repaired_count(rows: pd.DataFrame, accepted: pd.DataFrame, config: CatalogConfig) -> int:
    """How many accepted titles the mojibake repair changed."""
    if not config.repair_titles or "title" not in rows:
        return 0
    return int((rows["title"].fillna("").to_numpy() != accepted["title"].fillna("")).sum())


def _summary(
    table: SourceTable,
    accepted: pd.DataFrame,
    rejects: pd.DataFrame,
    invalid: int,
    vocab: store.LabelVocabulary,
    config: CatalogConfig,
) -> dict[str, Any]:
    """summary.json: accounting, reasons, labels, splits and the verdict."""
    rows_read = table.rows_read
    rate = invalid / rows_read if rows_read else 0.0
    problems = []
    if rate > config.reject_tolerance:
        problems.append(
            f"{invalid} of {rows_read} rows are invalid ({rate:.1%}), above the reject "
            f"tolerance of {config.reject_tolerance:.1%}"
        )
    if not vocab.labels and config.unlabelled == "reject":
        problems.append(
            f"no genre is carried by >= {vocab.min_count} of the {vocab.movies} valid movies: "
            "lower --min-genre-count or set --min-genre-fraction"
        )
    by_reason = Counter(r for rs in rejects["reasons"] for r in rs)
    unknown_rows = rejects.loc[
        rejects["reasons"].map(lambda rs: "unknown_genre" in rs).astype(bool)
    ]
    known = set(config.known_genres)
    unknown = Counter(t for g in unknown_rows["genre"] for t in genre_tokens(g) if t not in known)
    splits = accepted["split"].value_counts()
    return {
        "rows_read": rows_read,
        "accepted": len(accepted),
        "rejected": len(rejects),
        "rejected_invalid": invalid,
        "rejected_by_policy": len(rejects) - invalid,
        "reject_rate": round(rate, 6),
        "reject_tolerance": config.reject_tolerance,
        "by_reason": dict(sorted(by_reason.items())),
        "unknown_genres": dict(sorted(unknown.items())),
        "labels": vocab.labels,
        "unlabelled": int((accepted["genres"].map(len) == 0).sum()),
        "min_genre_count": vocab.min_count,
        "split_sizes": {s: int(splits.get(s, 0)) for s in SPLITS},
        "blank_lines": table.blank_lines,
        "columns": table.header,
        "params": config.model_dump(mode="json"),
        "passed": not problems,
        "problems": problems,
    }
