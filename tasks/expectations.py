"""The Great Expectations suite for MovieGenre.csv rows: the catalog stage's real gate.

The suite is built in code on an ephemeral context (nothing on disk but the Data Docs it
is asked to write). Every expectation carries, in `meta["reject_reason"]`, the reason a
failing row is rejected with: the catalog stage turns GX's row-level results
(`result_format="COMPLETE"`, unexpected rows identified by the frame's `row_number`
index) into `rejects.parquet`. `great_expectations` takes seconds to import, so it is
imported inside the functions here, never at module import.

The validated frame has one row per structurally sound CSV record, indexed by
`row_number`, with the raw (stripped, empty -> null) text of `imdb_id`, `genre`,
`poster_url` and, when the source has it, `score`; plus values parsed from them
(`DERIVED_FROM`): `imdb_id_value` (int or null) and `score_value` (float or NaN) that
uniqueness and ranges are checked on, and `poster_url_scheme`, the scheme of the poster
URL as the fetcher parses it (see `poster_url_scheme`; null when the URL is missing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from yarl import URL

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

SUITE_NAME = "moviegenre_rows"
ROW_INDEX = "row_number"

# IMDb numeric ids: digits only, and small enough for int64.
IMDB_ID_PATTERN = r"^\d{1,18}$"
# The schemes the fetcher speaks (`tasks.url_guard.check_url`).
FETCHABLE_SCHEMES = ("http", "https")
# Scores are written `6` or `6.8`; negative or exotic forms are not scores.
SCORE_PATTERN = r"^\d+(?:\.\d+)?$"
# Parsed column -> the source column a failure on it is reported against.
DERIVED_FROM = {
    "imdb_id_value": "imdb_id",
    "score_value": "score",
    "poster_url_scheme": "poster_url",
}
WHITESPACE = re.compile(r"\s")


def poster_url_scheme(url: str) -> str:
    """The URL's scheme as the fetcher's parser (yarl) reads it, lower case.

    "" when it cannot be fetched whatever the scheme: it does not parse, has no host, or
    holds whitespace (a broken cell, although yarl would quote it). Case-insensitive
    schemes (`HTTP://`) and IPv6 literals (`http://[::1]:8080/x.jpg`) parse as fetch does.
    """
    if WHITESPACE.search(url):
        return ""
    try:
        parsed = URL(url)
    except ValueError:  # e.g. a bad port or an unclosed IPv6 bracket
        return ""
    return parsed.scheme if parsed.absolute and parsed.host else ""


def genre_pattern(known_genres: Iterable[str]) -> str:
    """Regex for a `|`-separated list of known genre tokens (no empty tokens, no spaces)."""
    token = "(?:" + "|".join(re.escape(g) for g in sorted(known_genres)) + ")"
    return rf"^{token}(?:\|{token})*$"


def build_suite(known_genres: Iterable[str], has_score: bool, require_genre: bool = True
                ) -> gx.ExpectationSuite:
    """The row suite; each expectation says in `meta` which reject reason it drives.

    Without `require_genre` (a catalog of movies to score) a missing genre is allowed; a
    given one must still be known."""
    import great_expectations as gx
    from great_expectations import expectations as gxe

    def reason(name: str) -> dict[str, str]:
        return {"reject_reason": name}

    expectations = [
        # Identity: without an id a row cannot be joined to a poster or deduplicated.
        gxe.ExpectColumnValuesToNotBeNull(column="imdb_id", meta=reason("missing_imdb_id")),
        # Identity: ids are IMDb numbers; text here means a shifted or corrupted row.
        gxe.ExpectColumnValuesToMatchRegex(
            column="imdb_id", regex=IMDB_ID_PATTERN, meta=reason("bad_imdb_id")
        ),
        # Leakage: one movie, one row; a repeated id could land in two splits.
        gxe.ExpectColumnValuesToBeUnique(column="imdb_id_value", meta=reason("duplicate_id")),
        # Labels: a movie with no genre has nothing to learn from.
        gxe.ExpectColumnValuesToNotBeNull(column="genre", meta=reason("missing_genre")),
        # Label set: only known genre tokens joined by `|`; catches typos, truncation, drift.
        gxe.ExpectColumnValuesToMatchRegex(
            column="genre", regex=genre_pattern(known_genres), meta=reason("unknown_genre")
        ),
        # Inputs: without a poster URL there is no image to fetch.
        gxe.ExpectColumnValuesToNotBeNull(column="poster_url", meta=reason("missing_poster")),
        # Inputs: the fetcher speaks http(s) only; anything else is a broken or unsafe URL.
        gxe.ExpectColumnValuesToBeInSet(
            column="poster_url_scheme",
            value_set=list(FETCHABLE_SCHEMES),
            meta=reason("bad_poster_url"),
        ),
    ]
    if has_score:
        expectations += [
            # Metadata: a score, when present, is a plain decimal number.
            gxe.ExpectColumnValuesToMatchRegex(
                column="score", regex=SCORE_PATTERN, meta=reason("bad_score")
            ),
            # Metadata: IMDb scores live in [0, 10]; outside means a shifted column.
            gxe.ExpectColumnValuesToBeBetween(
                column="score_value", min_value=0, max_value=10, meta=reason("bad_score")
            ),
        ]
    if not require_genre:
        expectations = [e for e in expectations if e.meta["reject_reason"] != "missing_genre"]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)


@dataclass(frozen=True)
class SuiteOutcome:
    """Row-level failures (reason -> row numbers, in suite order) and per-expectation stats."""

    failures: dict[str, list[int]]
    expectations: list[dict[str, Any]]
    success: bool


def _ephemeral_context(docs_dir: str | None) -> Any:
    """An in-memory GX context: no analytics, no progress bars, Data Docs in `docs_dir`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites["catalog"] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": docs_dir,
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites=sites,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def validate_rows(
    frame: pd.DataFrame, known_genres: Iterable[str], docs_dir: str | None = None,
    require_genre: bool = True,
) -> SuiteOutcome:
    """Run the suite on `frame` (indexed by row_number); write Data Docs into `docs_dir`."""
    import great_expectations as gx

    context = _ephemeral_context(docs_dir)
    batch = (
        context.data_sources.add_pandas("moviegenre")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(build_suite(known_genres, has_score="score" in frame.columns,
                                         require_genre=require_genre))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="catalog_rows", data=batch, suite=suite)
    )
    actions: list[Any] = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if docs_dir else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="catalog",
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    (run,) = result.run_results.values()
    return _outcome(run.results, bool(result.success))


def _outcome(results: Iterable[Any], success: bool) -> SuiteOutcome:
    """Collect failing row numbers per reject reason from GX expectation results."""
    failures: dict[str, list[int]] = {}
    stats = []
    for res in results:
        config = res.expectation_config
        reason = config.meta["reject_reason"]
        rows = [int(item[ROW_INDEX]) for item in res.result.get("unexpected_index_list") or []]
        failures.setdefault(reason, []).extend(rows)
        stats.append(
            {
                "expectation": config.type,
                "column": config.kwargs.get("column"),
                "reject_reason": reason,
                "success": bool(res.success),
                "unexpected_count": int(res.result.get("unexpected_count") or 0),
            }
        )
    return SuiteOutcome(
        failures={k: sorted(set(v)) for k, v in failures.items()},
        expectations=stats,
        success=success,
    )
