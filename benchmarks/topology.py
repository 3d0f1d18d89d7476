"""The same retrain in four topologies: local or s3 root, threads or Dask, in one run.

Serves the first `--rows` rows of ../shared/data/posters-dev with `posterflow mirror`'s
server on a loopback port, starts moto's S3 server on another (the S3-compatible server
s3fs's own tests use; every S3 request is a real HTTP request on loopback) and one
`prefect server start` (as a deployment has; its start-up is not counted). Then, each cold
(fresh data root, result store and worker cache), times `posterflow run --config` with:

- `local, threads`: catalog and data root on local disk, the fan-out on Prefect's threads;
- `local, dask`: the same on a `distributed.LocalCluster` of worker processes;
- `s3, threads` / `s3, dask`: catalog CSV and data root in a bucket on the S3 server.

Every run uses the same scale (`--workers` threads or Dask worker processes, as many fetch
chunks and shard parts), the real MobileNetV2 of ../shared/backbones and the `--recipe`
(default: the seed's one-view recipe, so the embedding does not hide the topology's cost).
Prints one column per topology: the per-stage spans from the Prefect task runs (as
benchmarks/pipeline.py), wall, CPU, and each run's wall as a ratio of `local, threads`.
Then the cached rerun check: `s3, dask` once more (every stage must be Cached and
nothing registered), and registry version 1 downloaded from the bucket and served by plain
TensorFlow.

    .venv/bin/python benchmarks/topology.py [--shared ../shared] [--rows 900] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # this process loads the model at the end

from benchmarks.pipeline import (  # noqa: E402  (after the path insert, as a script)
    RECIPES,
    dev_posters_and_backbone,
    prefect_server,
    print_table,
    run_command,
    stage_name,
    write_catalog,
)

TOPOLOGIES = (("local", "threads"), ("local", "dask"), ("s3", "threads"), ("s3", "dask"))
BUCKET = "posterflow-bench"
# The stages whose task runs are cached on their inputs' content (the rest are cheap reads).
CACHED_STAGES = ("validate-catalog", "fetch-posters", "build-dataset-part", "publish-dataset",
                 "embed-posters", "fit-model", "evaluate-model", "export-model",
                 "register-model")


def start_s3() -> tuple[Any, dict[str, str]]:
    """moto's S3 server on a free loopback port with one bucket; the AWS_* variables for it."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(aws)  # this process uploads the catalog and reads the registry
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": aws["AWS_ENDPOINT_URL"]}).mkdir(BUCKET)
    return server, aws


def retrain_config(catalog: str, data_root: str, runner: str, workers: int, backbone: Path,
                   recipe: str) -> dict[str, Any]:
    """The run's config: only the roots and the task runner differ between topologies."""
    return {"catalog_csv": catalog, "storage": {"data_root": data_root},
            "catalog": {"min_genre_fraction": 0.0265},
            "fetch": {"allow_hosts": ["127.0.0.1"]},
            "scale": {"task_runner": runner, "max_workers": workers, "fetch_chunks": workers,
                      "shard_parts": workers},
            "train": {"backbone": str(backbone), **RECIPES[recipe]}}


def served_by_plain_tensorflow(registry_path: str, poster: Path, work: Path) -> int:
    """Download a registry version from the bucket; rows `serving_default` scores for a poster."""
    import tensorflow as tf

    from storage import fs

    fsys, path = fs.url_to_fs(registry_path)
    local = work / "downloaded-model"
    fsys.get(path.rstrip("/") + "/", str(local), recursive=True)
    serve = tf.saved_model.load(str(local)).signatures["serving_default"]
    return int(serve(images=tf.constant([poster.read_bytes()]))["probabilities"].shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--rows", type=int, default=900, help="Catalog rows (real posters).")
    parser.add_argument("--workers", type=int, default=2,
                        help="Threads / Dask workers, fetch chunks and shard parts.")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="seed")
    args = parser.parse_args()
    dev, backbone = dev_posters_and_backbone(args.shared)
    from flows.config import RegistryConfig
    from flows.demo import free_port, serve_folder
    from storage import fs
    from storage.registry import Registry

    work = Path(tempfile.mkdtemp(prefix="posterflow-bench-topology-"))
    port = free_port()
    s3_server, aws = start_s3()
    local_csv = work / "MovieGenre.csv"
    total = (dev / "MovieGenre.csv").read_bytes().count(b"\n") - 1  # less the header
    rows = write_catalog(dev / "MovieGenre.csv", local_csv, f"http://127.0.0.1:{port}",
                         min(1.0, args.rows / total))
    s3_csv = f"s3://{BUCKET}/catalog/MovieGenre.csv"
    fs.url_to_fs(s3_csv)[0].put_file(str(local_csv), s3_csv)

    def env(name: str, api_url: str) -> dict[str, str]:  # cold: own result store and cache
        return {**os.environ, **aws, "PREFECT_API_URL": api_url, "TF_CPP_MIN_LOG_LEVEL": "2",
                "PREFECT_HOME": str(work / name / "prefect-home"), "PYTHONPATH": str(REPO),
                "POSTERFLOW_CACHE_DIR": str(work / name / "worker-cache")}

    results: dict[str, dict[str, Any]] = {}
    try:
        with serve_folder(str(dev / "posters"), port), \
                prefect_server(work / "server-home") as (api_url, server_start):
            print(f"{rows} catalog rows; prefect server healthy after {server_start:.1f} s "
                  f"(not counted); S3 server {aws['AWS_ENDPOINT_URL']}; work dir {work}")
            for root, runner in TOPOLOGIES:
                name = f"{root}-{runner}"
                catalog = s3_csv if root == "s3" else str(local_csv)
                data_root = f"s3://{BUCKET}/{name}/data" if root == "s3" else str(work / name)
                config = retrain_config(catalog, data_root, runner, args.workers, backbone,
                                        args.recipe)
                results[f"{root}, {runner}"] = run_command(config, work, env(name, api_url))
            rerun = run_command(config, work, env(name, api_url))  # s3, dask once more
            first = results["s3, dask"]["summary"]
            registry = Registry(f"s3://{BUCKET}/{name}/data/registry")
            versions = registry.versions(RegistryConfig().model_name)
            poster = next((dev / "posters").glob("*.jpg"))
            served_rows = served_by_plain_tensorflow(first["registry_path"], poster, work)
    finally:
        s3_server.stop()
    base = results["local, threads"]["wall"]
    ratios = [f"{r['wall'] / base:.2f}x" for r in results.values()]
    results["s3, dask, run again"] = rerun
    print_table(results)
    print("| wall / (local, threads) | " + " | ".join(ratios) + " | |")
    states = dict(rerun["summary"]["stages"])
    ran_again = sorted(n for n, state in states.items()
                       if stage_name(n) in CACHED_STAGES and state != "Cached")
    print(f"\ns3, dask, run again: cached stages that ran again: {ran_again or 'none'}; "
          f"registry versions in the bucket: {versions} (the first run registered "
          f"v{first['version']}, {first['alias']}); v{first['version']} downloaded and served "
          f"by plain TensorFlow: {served_rows} row of probabilities")

if __name__ == "__main__":
    main()
