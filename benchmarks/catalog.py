"""Catalog validation wall time and CLI start-up time, each against a baseline.

Validation, in this process (GX imported once beforehand, so its import is not counted;
the cold CLI row below includes it), on the real 1,500-row sample (when ../shared exists)
and on a 40,000-row catalog generated here with the real file's shape (index column,
quoted commas, ~2% empty posters, ~0.5% duplicate ids, Adult and rare genres):
  baseline    pandas.read_csv of the file (parsing only, no checks)
  parse       posterflow's reader: encoding, records with raw text and line numbers
  validate    the whole stage: parse + GX suite + Data Docs + policy + Parquet/JSON writes
Then, in fresh processes:
  python -c pass              interpreter start (baseline)
  posterflow --help           the CLI's import time
  import great_expectations   what importing GX at module level would add to every command
  posterflow validate 40k     the cold end-to-end command (imports included)
Prints medians over --repeats runs and ratios to each baseline.

    .venv/bin/python benchmarks/catalog.py [--rows 40000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "moviegenre-raw"
    / "MovieGenre_1500_random_rows.csv"
)
POSTERFLOW = str(Path(sys.executable).with_name("posterflow"))
# Genre weights roughly as in the full catalog (Drama ~ half the movies, Adult rare).
GENRE_WEIGHTS = {
    "Drama": 47, "Comedy": 32, "Romance": 15, "Action": 14, "Crime": 13, "Thriller": 12,
    "Horror": 11, "Adventure": 10, "Documentary": 9, "Mystery": 7, "Family": 5, "Sci-Fi": 5,
    "Fantasy": 5, "Animation": 4, "Biography": 4, "History": 3, "War": 3, "Music": 2,
    "Short": 2, "Western": 2, "Sport": 2, "Musical": 1.5, "Film-Noir": 1, "News": 0.4,
    "Adult": 0.2, "Talk-Show": 0.05, "Reality-TV": 0.05, "Game-Show": 0.02,
}  # fmt: skip


def generate_catalog(path: Path, rows: int, seed: int = 0) -> Path:
    """A MovieGenre.csv-shaped file of `rows` rows with the real file's defects."""
    rng = random.Random(seed)
    names, weights = list(GENRE_WEIGHTS), list(GENRE_WEIGHTS.values())
    ids = rng.sample(range(10_000, 9_000_000), rows)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["", "imdbId", "Imdb Link", "Title", "IMDB Score", "Genre", "Poster"])
        for i, imdb_id in enumerate(ids):
            if rng.random() < 0.005 and i:
                imdb_id = ids[rng.randrange(i)]  # a duplicate id
            genres = list(dict.fromkeys(rng.choices(names, weights, k=rng.randint(1, 3))))
            title = f"Movie {i}, Part {i % 7} ({1920 + i % 100})" if i % 33 == 0 else f"Movie {i}"
            poster = (
                ""
                if rng.random() < 0.02
                else f"https://images-na.ssl-images-amazon.com/images/M/MV5B{imdb_id}"
                "@@._V1_UX182_CR0,0,182,268_AL_.jpg"
            )
            score = f"{rng.uniform(1, 9.9):.1f}" if i % 10 else str(rng.randint(1, 9))
            link = f"http://www.imdb.com/title/tt{imdb_id}"
            out.writerow([i, imdb_id, link, title, score, "|".join(genres), poster])
    return path


def median_s(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of `fn` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(*cmd: str) -> None:
    """Run a command, failing loudly (exit 1 from validate is a verdict, not an error)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr[-2000:]}")


def validation_rows(name: str, src: Path, work: Path, repeats: int) -> list[str]:
    """Table rows: read_csv baseline, posterflow parse, whole validation."""
    import pandas as pd

    from tasks.catalog import CatalogConfig, validate_catalog
    from tasks.catalog_csv import decode_text, parse_table

    config = CatalogConfig(min_genre_fraction=0.0265)
    base = median_s(lambda: pd.read_csv(src, dtype=str, keep_default_na=False), repeats)
    parse = median_s(lambda: parse_table(decode_text(src.read_bytes())[0]), repeats)
    result = validate_catalog(src, work / "out", config)  # warm-up; also gives the counts
    full = median_s(lambda: validate_catalog(src, work / "out", config), repeats)
    s = result.summary
    counts = f"{s['rows_read']} read, {s['accepted']} accepted, {s['rejected']} rejected"
    return [
        f"{name} ({counts})",
        f"  pandas.read_csv (baseline)  {base * 1000:8.0f} ms   1.00x",
        f"  posterflow parse            {parse * 1000:8.0f} ms   {parse / base:5.2f}x",
        f"  posterflow validate (stage) {full * 1000:8.0f} ms   {full / base:5.2f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import great_expectations  # noqa: F401  # imported once, outside the timed validations

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        big = generate_catalog(work / "MovieGenre_generated.csv", args.rows)
        if SAMPLE.is_file():
            lines += validation_rows("real sample, 1,500 rows", SAMPLE, work / "a", args.repeats)
        else:
            lines.append("real sample: ../shared absent, skipped")
        lines += validation_rows(f"generated, {args.rows:,} rows", big, work / "b", args.repeats)

        py = median_s(lambda: run(sys.executable, "-c", "pass"), args.repeats)
        helps = median_s(lambda: run(POSTERFLOW, "--help"), args.repeats)
        gx = median_s(lambda: run(sys.executable, "-c", "import great_expectations"), args.repeats)
        cli = median_s(
            lambda: run(POSTERFLOW, "validate", str(big), "--out", str(work / "cli"),
                        "--min-genre-fraction", "0.0265"),
            max(1, args.repeats // 2),
        )  # fmt: skip
    lines += [
        "fresh processes",
        f"  python -c pass (baseline)     {py * 1000:8.0f} ms   1.00x",
        f"  posterflow --help             {helps * 1000:8.0f} ms   {helps / py:5.2f}x",
        f"  import great_expectations     {gx * 1000:8.0f} ms   {gx / py:5.2f}x",
        f"  posterflow validate {args.rows // 1000}k (cold)"
        f" {cli * 1000:8.0f} ms   {cli / py:5.2f}x",
    ]
    print(f"medians of {args.repeats} runs (validate cold: {max(1, args.repeats // 2)})")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
