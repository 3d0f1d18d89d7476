"""The fetch report: one row per catalog row of a fetch run, and its JSON summary beside it.

```
<store>/fetch-reports/<run-id>.parquet   imdb_id, url, outcome, status, attempts, bytes, ...
<store>/fetch-reports/<run-id>.json      the run's summary (outcome counts, catalog, paths)
```

Every row ends in one of OUTCOMES, so a report's outcome counts add up to the rows in.
Both files are written temp + rename (object stores: one PUT each), the summary last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from storage import fs

if TYPE_CHECKING:
    import pandas as pd

REPORTS = "fetch-reports"
OUTCOMES = (
    "ok",
    "cached",
    "http_4xx",
    "http_5xx",
    "timeout",
    "too_large",
    "not_an_image",
    "truncated",
    "too_many_pixels",
    "blocked_address",
    "bad_scheme",
    "too_many_redirects",
    "connection_error",
)
REPORT_SCHEMA = pa.schema(
    [
        ("imdb_id", pa.int64()),
        ("url", pa.string()),
        ("outcome", pa.string()),
        ("status", pa.int64()),
        ("attempts", pa.int64()),
        ("bytes", pa.int64()),
        ("elapsed", pa.float64()),
        ("sha256", pa.string()),
        ("detail", pa.string()),
    ]
)


def report_path(store_root: str, run_id: str) -> str:
    """Where the fetch report of a run goes in a poster store."""
    return fs.join(store_root, REPORTS, f"{run_id}.parquet")


def summary_path(report: str) -> str:
    """The summary's path beside a report."""
    return report.removesuffix(".parquet") + ".json"


def report_row(imdb_id: int, url: str, outcome: str, status: int | None, attempts: int,
               nbytes: int | None = None, sha256: str | None = None) -> dict[str, Any]:
    """One report row (elapsed and detail filled in by the caller when known)."""
    return {"imdb_id": imdb_id, "url": url, "outcome": outcome, "status": status,
            "attempts": attempts, "bytes": nbytes, "elapsed": 0.0, "sha256": sha256,
            "detail": None}


def write_fetch_report(report: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """Write the report's rows, then its summary beside it; the summary's path.

    OSError (full disk, read-only, permissions) passes through for the caller to name.
    """
    unknown = {r["outcome"] for r in rows} - set(OUTCOMES)
    if unknown:
        raise ValueError(f"fetch report rows with unknown outcomes: {sorted(unknown)}")
    fs.atomic_write_parquet(report, pa.Table.from_pylist(rows, schema=REPORT_SCHEMA))
    summary_file = summary_path(report)
    fs.atomic_write_json(summary_file, summary)
    return summary_file


def read_fetch_report(report: str) -> pd.DataFrame:
    """A report's rows, with the report's schema."""
    import pyarrow.parquet as pq

    filesystem, inner = fs.url_to_fs(report)
    with filesystem.open(inner, "rb") as f:
        return pq.read_table(f, schema=REPORT_SCHEMA).to_pandas()


def read_fetch_summary(report: str) -> dict[str, Any]:
    """The summary written beside a report."""
    return fs.read_json(summary_path(report))


def reports_of_catalog(store_root: str, catalog_dir: str) -> list[str]:
    """The reports of the runs that fetched a catalog's posters into a store, oldest first."""
    filesystem, inner = fs.url_to_fs(fs.join(store_root, REPORTS))
    if not filesystem.isdir(inner):
        return []
    reports = []
    for path in sorted(filesystem.glob(f"{inner}/*.json")):
        summary = fs.read_json(filesystem.unstrip_protocol(path))
        if str(summary.get("catalog_dir", "")).rstrip("/") == catalog_dir.rstrip("/"):
            reports.append(str(summary.get("report", path)))
    return reports
