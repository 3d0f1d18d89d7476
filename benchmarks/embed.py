"""Benchmark: embedding posters, against the bare backbone, and fanned out over Dask workers.

Real posters (the first `--movies` rows of ../shared/data/posters-dev), the ImageNet
MobileNetV2 of ../shared/backbones, CPU, `--views` views. Rows, each on a cold cache:
- bare: read the shards, decode, cut each view, run the backbone in batches of 64; no
  cache lookups or writes (the least a pass can do);
- posterflow: `tasks.embed.embed_dataset`, one process (the default: one part);
- Dask 1 / 2 workers: the same function mapped over parts on a `distributed` LocalCluster
  of worker processes (one thread each), as the embed flow's `embed-posters` task is under
  `scale.task_runner: dask` (without the Prefect server's bookkeeping);
- decoding alone (no backbone): each view decoding the poster again, as the passes do,
  against one decode cutting every view, to size what a one-pass multi-view embed saves.
CPU seconds are this process's and its finished children's (`benchmarks.shards.timed`;
the backbone runs on this process's threads).

    POSTERFLOW_SHARED=../shared .venv/bin/python benchmarks/embed.py
        [--work /tmp/pf-embed] [--movies 600] [--views full,top,bottom]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.shards import timed  # noqa: E402
from benchmarks.train import BACKBONE, prepare_dataset  # noqa: E402


def bare(dataset: str, views: list[str]) -> None:
    """Decode, cut and embed every record once per view; keep nothing."""
    import tensorflow as tf

    from storage.shard_reader import read_records
    from tasks.backbone import backbone_layer
    from tasks.images import decode_pixels, poster_view

    layer = backbone_layer(str(BACKBONE))
    for view in views:
        for split in ("train", "val", "test"):
            images = read_records(dataset, split).map(
                lambda r, view=view: poster_view(decode_pixels(r["image"]), view),
                num_parallel_calls=tf.data.AUTOTUNE).batch(64).prefetch(2)
            for batch in images:
                layer(batch, training=False).numpy()


def decode_only(dataset: str, views: list[str], once: bool) -> None:
    """Cut every view of every poster without the backbone: decoding per view or once."""
    import tensorflow as tf

    from storage.shard_reader import read_records
    from tasks.images import decode_pixels, poster_view

    def all_views(record):
        pixels = decode_pixels(record["image"])
        return tf.stack([poster_view(pixels, view) for view in views])

    for split in ("train", "val", "test"):
        records = read_records(dataset, split)
        passes = [records.map(all_views, num_parallel_calls=tf.data.AUTOTUNE)] if once else [
            records.map(lambda r, view=view: poster_view(decode_pixels(r["image"]), view),
                        num_parallel_calls=tf.data.AUTOTUNE) for view in views]
        for data in passes:
            for _ in data.batch(64).prefetch(2):
                pass


def on_cluster(dataset: str, cache: str, views: list[str], workers: int) -> float:
    """Wall seconds to embed the dataset as `workers` parts on a fresh LocalCluster, from
    the cluster's readiness to the last part's return (worker start-up not included)."""
    from distributed import Client, LocalCluster

    from tasks.embed import embed_dataset

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("tensorflow"))  # imports before the clock starts
        start = time.perf_counter()
        futures = [client.submit(embed_dataset, dataset, cache, str(BACKBONE), views=views,
                                 part=part, parts=workers, pure=False)
                   for part in range(workers)]
        results = client.gather(futures)
        seconds = time.perf_counter() - start
    assert sum(r.embedded for r in results) > 0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pf-embed"))
    parser.add_argument("--movies", type=int, default=600)
    parser.add_argument("--views", default="full,top,bottom")
    args = parser.parse_args()
    views = args.views.split(",")

    from flows.cli import quiet

    quiet.configure(False)
    quiet.start_tensorflow()
    from storage.datasets import load_dataset_info
    from tasks.embed import embed_dataset

    dataset = prepare_dataset(args.work, args.movies)
    posters = sum(load_dataset_info(dataset).splits.values())
    pairs = posters * len(views)
    caches = args.work / "caches"
    shutil.rmtree(caches, ignore_errors=True)
    bare(dataset, views[:1])  # warm-up: the backbone's first call builds its graph
    rows = {"bare backbone": timed(lambda: bare(dataset, views)),
            "posterflow `embed_dataset`, 1 process": timed(lambda: embed_dataset(
                dataset, str(caches / "one"), str(BACKBONE), views=views))}
    cluster = {n: on_cluster(dataset, str(caches / f"dask{n}"), views, n) for n in (1, 2)}
    decode = {once: timed(lambda once=once: decode_only(dataset, views, once))
              for once in (False, True)}

    print(f"\n{posters} posters x {len(views)} views = {pairs} poster-views, batch 64, CPU\n")
    print("| pass | wall s | posters/s | CPU ms per poster-view | x bare (CPU) |\n"
          "|---|---:|---:|---:|---:|")
    bare_cpu = rows["bare backbone"][1]
    for name, (wall, cpu) in rows.items():
        print(f"| {name} | {wall:.1f} | {posters / wall:.1f} | {1000 * cpu / pairs:.1f} | "
              f"{bare_cpu / cpu:.2f} |")
    for n, wall in cluster.items():
        print(f"| Dask LocalCluster, {n} worker process{'es' if n > 1 else ''} | {wall:.1f} | "
              f"{posters / wall:.1f} | | |")
    (per_view_s, _), (once_s, _) = decode[False], decode[True]
    print(f"\ndecoding alone: a decode per view {per_view_s:.1f} s, one decode for all views "
          f"{once_s:.1f} s (saves {per_view_s - once_s:.1f} s = "
          f"{100 * (per_view_s - once_s) / rows['posterflow `embed_dataset`, 1 process'][0]:.0f}%"
          f" of posterflow's pass); 2 workers vs 1: {cluster[1] / cluster[2]:.2f}x")


if __name__ == "__main__":
    main()
