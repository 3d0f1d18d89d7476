"""The whole `retrain` over the 5,528 real dev posters, as one `posterflow run` command.

Serves ../shared/data/posters-dev/posters with `posterflow mirror` on a free loopback port,
starts one `prefect server` (as a deployment has; its start-up is printed, not counted), then
times `posterflow run --config <recipe>.yaml` in a fresh process (imports, validate -> fetch
-> shards -> embed -> train -> export -> register), each recipe cold (fresh data root and
result store), with the real MobileNetV2 backbone of
../shared/backbones. Prints per recipe: wall and CPU (the command and its children), the
load average, and a per-stage breakdown from the Prefect task runs (each stage's first start
to last end, so concurrent fetch chunks count once; "outside tasks" is the rest: interpreter
start, imports, flow and task orchestration).

Recipes: `seed` (the seed's: one view, head only, 30 epochs, no early stopping, one loss)
and `default` (today's `RetrainConfig` defaults for training). `--incremental` adds the incremental
measurement: the seed recipe on 99% of the catalog, then on 100% against the same data root.

    .venv/bin/python benchmarks/pipeline.py [--shared ../shared] [--recipes seed default]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPES: dict[str, dict[str, Any]] = {
    "seed": {"recipe": "tutorial", "compare_losses": False},  # TrainConfig's tutorial recipe
    "default": {},
}


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


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, float]]:
    """`prefect server start` on a free loopback port: (API URL, seconds until healthy)."""
    from flows.demo import free_port

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.perf_counter() - started > 600:
                raise SystemExit("the Prefect server did not start")
            time.sleep(0.5)
        yield url, time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def dev_posters_and_backbone(shared: Path) -> tuple[Path, Path]:
    """The dev posters (catalog + posters/) and the real MobileNetV2 under ../shared."""
    dev = shared / "data" / "posters-dev"
    backbone = shared / "backbones" / "mobilenet_v2_100_224_feature_vector"
    if not dev.is_dir() or not backbone.is_dir():
        raise SystemExit(f"needs {dev} and {backbone}")
    return dev, backbone


def children_cpu() -> float:
    """CPU seconds of the finished children of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(config: dict[str, Any], work: Path, env: dict[str, str]) -> dict[str, Any]:
    """`posterflow run` of one config in a fresh process: wall, CPU, summary, stage spans."""
    path = work / f"config-{time.time_ns()}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    load, cpu, started = os.getloadavg()[0], children_cpu(), datetime.now(UTC)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", str(path),
                           "--json"], env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"posterflow run failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    spans = subprocess.run(  # the run's Prefect home, read in a process of its own
        [sys.executable, __file__, "--spans", summary["flow_run_id"], started.isoformat(),
         str(wall)], env=env, capture_output=True, text=True, check=True)
    return {"wall": wall, "cpu": cpu, "load": (load + os.getloadavg()[0]) / 2,
            "summary": summary, "stages": json.loads(spans.stdout.strip().splitlines()[-1])}


def stage_name(task_run_name: str) -> str:
    """The stage of a task run: its name less the chunk ("-0-of-2") or the random suffix."""
    chunk = re.sub(r"-\d+-of-\d+$", "", task_run_name)  # fetch chunks, shard parts
    return chunk if chunk != task_run_name else task_run_name.rsplit("-", 1)[0]


def stage_spans(flow_run_id: str, started: datetime, wall: float) -> dict[str, float]:
    """Seconds per stage (first start to last end of its task runs) and outside any task."""
    from uuid import UUID

    from flows.runs import task_runs

    spans: dict[str, tuple[datetime, datetime]] = {}
    for run in task_runs(UUID(flow_run_id)):
        if run.state and run.state.state_details.child_flow_run_id:
            continue  # the task run standing for a subflow spans several stages
        if run.start_time and run.end_time:
            name = stage_name(run.name)
            first, last = spans.get(name, (run.start_time, run.end_time))
            spans[name] = (min(first, run.start_time), max(last, run.end_time))
    seconds = {name: (end - start).total_seconds() for name, (start, end) in spans.items()}
    covered, cursor = 0.0, started
    for start, end in sorted(spans.values()):
        start = max(start, cursor)
        if end > start:
            covered += (end - start).total_seconds()
            cursor = end
    seconds["outside tasks (start-up, imports, orchestration)"] = wall - covered
    return seconds


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """One column per run: stages (largest first in the first run), wall, CPU, load."""
    labels = list(results)
    first = results[labels[0]]["stages"]
    names = sorted({n for r in results.values() for n in r["stages"]},
                   key=lambda n: -first.get(n, 0))
    print("| stage | " + " | ".join(f"{label} s" for label in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r['stages'].get(name, 0):.1f}"
                                          for r in results.values()) + " |")
    for key, title in (("wall", "**end to end, wall**"), ("cpu", "CPU s (command + children)"),
                       ("load", "load average during the run")):
        print(f"| {title} | " + " | ".join(f"{r[key]:.1f}" for r in results.values()) + " |")
    embed = [r["stages"].get("embed-posters", 0) / r["wall"] for r in results.values()]
    print("| embedding's share of wall | " + " | ".join(f"{e:.0%}" for e in embed) + " |")
    f1 = [r["summary"].get("val_macro_f1") or 0 for r in results.values()]
    print("| val macro F1 @0.5 | " + " | ".join(f"{v:.3f}" for v in f1) + " |")
    fetched = [sum(r["summary"].get("fetch_outcomes", {}).get(k, 0) for k in ("ok", "cached"))
               for r in results.values()]
    print("| posters fetched or cached | " + " | ".join(str(n) for n in fetched) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES),
                        default=["seed", "default"])
    parser.add_argument("--incremental", action="store_true",
                        help="Also the seed recipe on 99%%, then 100%% of the catalog.")
    parser.add_argument("--spans", nargs=3, help=argparse.SUPPRESS)  # FLOW_RUN STARTED WALL
    args = parser.parse_args()
    if args.spans:
        flow_run, started, wall = args.spans
        print(json.dumps(stage_spans(flow_run, datetime.fromisoformat(started), float(wall))))
        return
    dev, backbone = dev_posters_and_backbone(args.shared)
    from flows.demo import free_port, serve_folder

    work = Path(tempfile.mkdtemp(prefix="posterflow-bench-pipeline-"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"

    def config(recipe: str, csv_path: Path, data_root: Path) -> dict[str, Any]:
        return {"catalog_csv": str(csv_path), "storage": {"data_root": str(data_root)},
                "catalog": {"min_genre_fraction": 0.0265},
                "fetch": {"allow_hosts": ["127.0.0.1"]},
                "train": {"backbone": str(backbone), **RECIPES[recipe]}}

    def env(name: str) -> dict[str, str]:  # a fresh result store per data root: cold runs
        return {**os.environ, "PREFECT_API_URL": api_url, "TF_CPP_MIN_LOG_LEVEL": "2",
                "PREFECT_HOME": str(work / name / "prefect-home"), "PYTHONPATH": str(REPO)}

    results: dict[str, dict[str, Any]] = {}
    with serve_folder(str(dev / "posters"), port), \
            prefect_server(work / "server-home") as (api_url, server_start):
        print(f"prefect server healthy after {server_start:.1f} s (not in the runs below: "
              f"deployments run against a standing server)")
        rows = write_catalog(dev / "MovieGenre.csv", work / "MovieGenre.csv", base_url, 1.0)
        for recipe in args.recipes:
            results[f"{recipe} ({rows} rows, cold)"] = run_command(
                config(recipe, work / "MovieGenre.csv", work / recipe / "data"), work,
                env(recipe))
        if args.incremental:
            csv99 = work / "MovieGenre-99.csv"
            n99 = write_catalog(dev / "MovieGenre.csv", csv99, base_url, 0.99)
            for label, path in ((f"seed, {n99} rows (99%)", csv99),
                                (f"seed, then {rows} rows (+1%)", work / "MovieGenre.csv")):
                results[label] = run_command(config("seed", path, work / "inc" / "data"), work,
                                             env("inc"))
    print(f"machine: {os.cpu_count()} cores, shared with other engineers' jobs; work dir {work}")
    print_table(results)


if __name__ == "__main__":
    main()
