"""The whole `retrain` flow on the 5,528 real posters, then again after adding 1% new posters.

Serves ../shared/data/posters-dev/posters with `posterflow mirror` on a free loopback port,
runs `retrain` (Prefect's ephemeral server, a fresh PREFECT_HOME and data root) with the
real MobileNetV2 backbone from ../shared/backbones on 99% of the catalog, then on 100%.
Prints wall time per stage (from the task runs' start and end), end to end, peak RSS, and
for the second run how many posters were fetched and embedded versus the first run.

    .venv/bin/python benchmarks/pipeline.py [--shared ../shared] [--epochs 30]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_catalog(source: Path, out: Path, base_url: str, keep: float) -> int:
    """Copy the dev catalog with its poster URLs on `base_url`, keeping the first `keep` share."""
    rows = list(csv.reader(io.StringIO(source.read_text(encoding="utf-8"))))
    header, body = rows[0], rows[1:]
    body = body[: round(len(body) * keep)]
    poster = header.index("Poster")
    for row in body:
        row[poster] = f"{base_url}/{row[poster].rsplit('/', 1)[-1]}"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *body])
    out.write_text(buf.getvalue(), encoding="utf-8")
    return len(body)


def stage_times(flow_run_id: Any) -> dict[str, float]:
    """Seconds per task (chunks of one task summed), from the Prefect task runs."""
    from flows.runs import task_runs

    runs = task_runs(flow_run_id)
    times: dict[str, float] = {}
    for run in runs:
        if run.state and run.state.state_details.child_flow_run_id:
            continue  # the task run standing for a subflow (ingest, fetch, train) spans stages
        if run.start_time and run.end_time:
            name = run.name.rsplit("-", 1)[0] if not run.name.startswith("fetch-posters") \
                else "fetch-posters (chunks, summed)"
            times[name] = times.get(name, 0.0) + (run.end_time - run.start_time).total_seconds()
    return times


def run_once(config: Any) -> dict[str, Any]:
    """One retrain: wall time, per-stage times, fetch and embed counts."""
    from flows.runs import run_retrain

    started = time.perf_counter()
    summary = run_retrain(config)
    wall = time.perf_counter() - started
    if summary.error:
        raise SystemExit(f"retrain failed: {summary.error}")
    from uuid import UUID

    out = summary.as_dict()
    return {"wall": wall, "stages": stage_times(UUID(summary.flow_run_id)),
            "fetch": out["fetch_outcomes"], "val_macro_f1": out["val_macro_f1"],
            "dataset": out["dataset_dir"]}


def embedded_counts(data_root: Path) -> int:
    """Posters in the embedding cache (all backbones)."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in data_root.glob("embeddings/*/part-*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--epochs", type=int, default=30, help="Head epochs (seed: 30).")
    args = parser.parse_args()
    dev = args.shared / "data" / "posters-dev"
    backbone = args.shared / "backbones" / "mobilenet_v2_100_224_feature_vector"
    if not dev.is_dir() or not backbone.is_dir():
        raise SystemExit(f"needs {dev} and {backbone}")
    work = Path(tempfile.mkdtemp(prefix="posterflow-bench-pipeline-"))
    os.environ.update(PREFECT_HOME=str(work / "prefect-home"),
                      PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
                      PREFECT_LOGGING_LEVEL="WARNING", TF_CPP_MIN_LOG_LEVEL="2",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.pop("PREFECT_API_URL", None)
    from flows.config import RetrainConfig
    from flows.demo import free_port, serve_folder

    port = free_port()
    data_root = work / "data"
    csv_path = work / "MovieGenre.csv"

    def config() -> RetrainConfig:
        return RetrainConfig.model_validate({
            "catalog_csv": str(csv_path), "storage": {"data_root": str(data_root)},
            "catalog": {"min_genre_fraction": 0.0265},
            "fetch": {"allow_hosts": ["127.0.0.1"], "concurrency": 64},
            "scale": {"fetch_chunks": 4, "max_workers": 4},
            "train": {"backbone": str(backbone), "compare_losses": False,
                      "head": {"epochs": args.epochs}},
        })

    with serve_folder(str(dev / "posters"), port):
        n_first = write_catalog(dev / "MovieGenre.csv", csv_path, f"http://127.0.0.1:{port}", 0.99)
        first = run_once(config())
        embedded_first = embedded_counts(data_root)
        n_second = write_catalog(dev / "MovieGenre.csv", csv_path, f"http://127.0.0.1:{port}",
                                 1.0)
        second = run_once(config())
        embedded_second = embedded_counts(data_root) - embedded_first
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"machine: {os.cpu_count()} cores, shared with other engineers' jobs "
          f"(load average {os.getloadavg()[0]:.1f}); work dir {work}")
    print(f"run 1: {n_first} catalog rows (99%); run 2: {n_second} rows (+{n_second - n_first})")
    print("| stage | run 1 s | run 2 (+1%) s |\n|---|---:|---:|")
    for name in sorted(set(first["stages"]) | set(second["stages"]),
                       key=lambda n: -first["stages"].get(n, 0)):
        print(f"| {name} | {first['stages'].get(name, 0):.1f} | "
              f"{second['stages'].get(name, 0):.1f} |")
    print(f"| stages together | {sum(first['stages'].values()):.1f} | "
          f"{sum(second['stages'].values()):.1f} |")
    print(f"| **end to end (wall)** | **{first['wall']:.1f}** | **{second['wall']:.1f}** "
          f"({second['wall'] / first['wall']:.2f}x) |")
    fetched = [r["fetch"].get("ok", 0) for r in (first, second)]
    print(f"posters fetched: run 1 {fetched[0]}, run 2 {fetched[1]} "
          f"({fetched[1] / max(fetched[0], 1):.2%} of run 1)")
    print(f"posters embedded: run 1 {embedded_first}, run 2 {embedded_second} "
          f"({embedded_second / max(embedded_first, 1):.2%} of run 1)")
    print(f"val macro F1 @0.5: run 1 {first['val_macro_f1']:.3f}, run 2 "
          f"{second['val_macro_f1']:.3f}")
    print(f"peak RSS of the flow process (both runs): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
