"""Shards stage throughput, each figure against its baseline, measured in one run.

1. Shard writing (MB of poster bytes per second of wall time, and CPU per record of this
   process and its children) against a plain copy of the same poster bytes from the same
   store into the same number of files (read, write, fsync): the writer before the single-pass
   hash
   (kept below as `today_build`: fsspec reads, protobuf Example, tf.io.TFRecordWriter, a
   second read of each shard for its sha256; timed in its own process, as TensorFlow once
   used slows whatever runs after it in the same one), and `build_dataset` in this process
   (`processes=1`, the default below CHILD_MIN_BYTES per process) and with one writer
   process per core (forced). Printed per method: records/s and MB/s (medians of wall time),
   the ratio to the copy, CPU us per record and the copy's CPU per record over it. Every
   timed run starts after an `os.sync()` and a read of every poster, so none pays for
   another's disk writeback or for posters evicted from the page cache.
2. The tf.data input pipeline (`make_dataset`: read + verify + parse + decode + resize +
   shuffle + batch, images/s) against the MobileNetV2 forward rate (images/s) where it runs.

Targets: writing >= 0.5x the plain copy; input pipeline >= 4x the backbone.

Inputs: the real posters of ../shared/data/posters-dev when present (5,528 JPEGs), else
5,000 generated 182x268 JPEGs. Run: `.venv/bin/python benchmarks/shards.py [--repeats 5]
[--shard-mb 100] [--write-only]`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from storage import fs  # noqa: E402
from storage.catalog import LabelVocabulary, write_catalog, write_labels  # noqa: E402
from storage.posters import PosterStore  # noqa: E402
from storage.records import PosterRecord  # noqa: E402
from tasks.images import make_dataset  # noqa: E402
from tasks.shards import (  # noqa: E402
    ShardConfig,
    _label_counts,
    _Plan,
    build_dataset,
    finalize_dataset,
    plan_dataset,
)

SHARED = Path(os.environ.get("POSTERFLOW_SHARED", REPO.parent / "shared"))
POSTERS_DEV = SHARED / "data" / "posters-dev"
BACKBONE = SHARED / "backbones" / "mobilenet_v2_100_224_feature_vector"
SPLITS = ["train"] * 8 + ["val", "test"]


def _posters() -> Iterator[tuple[int, list[str], bytes]]:
    """(imdb_id, genres, encoded poster): posters-dev when present, else generated."""
    if POSTERS_DEV.is_dir():
        csv = pd.read_csv(POSTERS_DEV / "MovieGenre.csv")
        for imdb_id, genre in zip(csv["imdbId"], csv["Genre"], strict=True):
            yield int(imdb_id), sorted(str(genre).split("|")), (
                POSTERS_DEV / "posters" / f"{imdb_id}.jpg").read_bytes()
        return
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(5000):
        base = rng.integers(0, 256, (1, 1, 3))
        noise = rng.integers(-40, 40, (268, 182, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buf, "JPEG",
                                                                            quality=90)
        yield i + 1, ["Drama" if i % 2 else "Comedy"], buf.getvalue()


def make_inputs(root: Path) -> tuple[Path, Path, int]:
    """Write a catalog folder and a poster store (per the contracts); return total bytes."""
    store = PosterStore(root / "posters")
    rows, index, total = [], [], 0
    for n, (imdb_id, genres, data) in enumerate(_posters(), start=1):
        rows.append({"row_number": n, "imdb_id": imdb_id, "genres": genres,
                     "poster_url": f"http://127.0.0.1:8799/{imdb_id}.jpg",
                     "split": SPLITS[n % len(SPLITS)], "title": None, "score": None,
                     "imdb_link": None})
        index.append({"imdb_id": imdb_id, "url": rows[-1]["poster_url"], "sha256": store.put(data),
                      "bytes": len(data), "width": 182, "height": 268, "format": "jpeg",
                      "fetched_at": datetime.now(UTC)})
        total += len(data)
    store.append_index(index)
    store.compact_index()
    catalog = root / "catalogs" / "benchmark"
    catalog.mkdir(parents=True)
    frame = pd.DataFrame(rows)
    write_catalog(catalog, frame)
    labels = sorted({g for gs in frame["genres"] for g in gs})
    counts = {g: int(sum(g in gs for gs in frame["genres"])) for g in labels}
    write_labels(catalog, LabelVocabulary(labels, counts, {}, 1, len(frame)))
    return catalog, root / "posters", total


def plain_copy(store_root: Path, out: Path, files: int) -> None:
    """Baseline: the same poster bytes, read from the store, appended into `files` files."""
    store = PosterStore(store_root)
    shas = store.read_index()["sha256"].tolist()
    out.mkdir(parents=True)
    for i in range(files):
        with open(out / f"copy-{i:05d}", "wb") as f:
            for sha in shas[i::files]:
                with open(store.path(sha), "rb") as src:
                    shutil.copyfileobj(src, f)
            f.flush()
            os.fsync(f.fileno())


def read_posters(store_root: Path) -> None:
    """Read every stored poster (untimed): each variant starts with them in the page cache."""
    for path in (store_root / "objects").glob("*/*"):
        path.read_bytes()


def today_build(catalog: Path, store_root: Path, out: Path, config: ShardConfig) -> None:
    """The shard writer before the single-pass hash, on the same plan and publishing steps."""
    import tensorflow as tf

    from storage.datasets import shard_name

    plan = plan_dataset(catalog, store_root, out, config)
    planned, store, rows = _Plan.load(plan), PosterStore(store_root), []
    n = len(planned.labels)
    for split, shard, records in planned.shards():
        count = planned.shard_counts[split]
        url = fs.join(plan.staging, shard_name(split, shard, count, config.compression))
        ids, shas, idx = (records[c].tolist() for c in ("imdb_id", "sha256", "label_idx"))
        with fs.staged_file(url) as local, tf.io.TFRecordWriter(
                local, tf.io.TFRecordOptions(compression_type=config.compression)) as writer:
            for start in range(0, len(shas), 256):
                images = store.get_many(shas[start:start + 256])
                for i, image in enumerate(images, start=start):
                    assert fs.sha256_bytes(image) == shas[i]
                    labels = np.zeros(n, np.float32)
                    labels[idx[i]] = 1.0
                    writer.write(_tf_serialize(PosterRecord(int(ids[i]), image, shas[i], labels)))
        rows.append({"shard": url.rsplit("/", 1)[-1], "split": split, "index": shard,
                     "count": count, "records": len(records), "bytes": os.path.getsize(url),
                     "sha256": fs.sha256_file(url),  # the second read
                     "label_counts": _label_counts(records["label_idx"], n)})
    finalize_dataset(plan, rows)


def _tf_serialize(record: PosterRecord) -> bytes:
    """Today's record encoding: protobuf objects (the same bytes as `serialize`)."""
    import tensorflow as tf

    feature = {
        "imdb_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[record.imdb_id])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.image])),
        "sha256": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.sha256.encode()])),
        "labels": tf.train.Feature(float_list=tf.train.FloatList(value=record.labels.tolist())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (with children) of one call."""
    cpu, start = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - start, cpu_seconds() - cpu


def backbone_rate(batch: int, repeats: int) -> tuple[float, str]:
    """MobileNetV2 forward images/s on [batch,224,224,3] inputs, and which model ran."""
    import tensorflow as tf

    images = tf.random.uniform([batch, 224, 224, 3])
    if BACKBONE.is_dir():
        model, name = tf.saved_model.load(str(BACKBONE)), "shared MobileNetV2 SavedModel"
    else:  # the same architecture and FLOPs, random weights (no download needed)
        keras_model = tf.keras.applications.MobileNetV2(weights=None, include_top=False,
                                                        pooling="avg")
        model, name = tf.function(lambda x: keras_model(x, training=False)), "Keras MobileNetV2"
    model(images)  # trace and warm up
    return statistics.median(batch / timed(lambda: model(images).numpy())[0]
                             for _ in range(repeats)), name


def pipeline_rate(dataset_dir: str, batch: int, records: int, repeats: int) -> float:
    """Images/s through make_dataset (verify, shuffle with a seed, decode, batch), per epoch."""
    def epoch() -> None:
        for _images, _labels in make_dataset(dataset_dir, "train", batch, shuffle_seed=0):
            pass

    epoch()  # warm the page cache and the graph
    return statistics.median(records / timed(epoch)[0] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shard-mb", type=float, default=100.0, help="ShardConfig target.")
    parser.add_argument("--write-only", action="store_true", help="Skip the input pipeline.")
    parser.add_argument("--today-in", nargs=3, metavar=("CATALOG", "STORE", "OUT"),
                        help=argparse.SUPPRESS)  # the child process that times `today_build`
    args = parser.parse_args()
    config = ShardConfig(target_shard_bytes=int(args.shard_mb * 1e6))
    if args.today_in:
        catalog, store, out = map(Path, args.today_in)
        today_build(catalog, store, out / "warm", config)  # TF imported, graph warm
        wall, cpu = timed(lambda: today_build(catalog, store, out / "run", config))
        print(json.dumps({"wall": wall, "cpu": cpu}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog, store, total = make_inputs(root)
        records = len(PosterStore(store).read_index())
        mb = total / 1e6
        source = "posters-dev" if POSTERS_DEV.is_dir() else "generated"
        print(f"inputs: {records} {source} posters, {mb:.1f} MB; {os.cpu_count()} CPUs "
              f"(shared; load average {os.getloadavg()[0]:.1f}); "
              f"TF {importlib.metadata.version('tensorflow')}")
        warm = build_dataset(catalog, store, root / "warm", config)  # page cache

        def in_process(fn: Callable[[Path], object]) -> Callable[[Path], tuple[float, float]]:
            return lambda out: timed(lambda: fn(out))

        def today(out: Path) -> tuple[float, float]:
            """In its own process: TensorFlow's thread pools, once used, slowed every
            variant timed after them in this one by ~15% (CPU per record too)."""
            done = subprocess.run(
                [sys.executable, __file__, "--shard-mb", str(args.shard_mb), "--today-in",
                 str(catalog), str(store), str(out)], check=True, capture_output=True)
            timing = json.loads(done.stdout.decode().strip().splitlines()[-1])
            return timing["wall"], timing["cpu"]

        methods: dict[str, Callable[[Path], tuple[float, float]]] = {
            "plain copy": in_process(lambda out: plain_copy(store, out, warm.shards)),
            "before the single-pass hash": today,
            "build_dataset, 1 process": in_process(lambda out: build_dataset(
                catalog, store, out, config, processes=1)),
            f"build_dataset, {os.cpu_count()} processes (forced)": in_process(
                lambda out: build_dataset(catalog, store, out, config,
                                          processes=os.cpu_count())),
            "plan_dataset only (its fixed part)": in_process(lambda out: plan_dataset(
                catalog, store, out, config)),
        }
        walls: dict[str, list[float]] = {name: [] for name in methods}
        cpus: dict[str, list[float]] = {name: [] for name in methods}
        for r in range(args.repeats):  # interleaved, so noise hits every variant alike
            for n, (name, run) in enumerate(methods.items()):
                out = root / f"run-{r}-{n}"
                os.sync()  # no variant pays for the disk writeback of another's files
                read_posters(store)  # nor for posters evicted from the page cache meanwhile
                wall, cpu = run(out)
                walls[name].append(wall)
                cpus[name].append(cpu)
                shutil.rmtree(out, ignore_errors=True)
        copy = mb / statistics.median(walls["plain copy"])
        print(f"\nshard write (median of {args.repeats}; {warm.shards} shards of "
              f"{args.shard_mb:g} MB target; load average now {os.getloadavg()[0]:.1f}):")
        print(f"  {'method':34s} {'records/s':>10s} {'MB/s':>8s} {'x copy':>7s} "
              f"{'CPU us/record':>14s} {'x copy CPU':>10s}")
        copy_cpu = statistics.median(cpus["plain copy"]) / records * 1e6
        for name in methods:
            wall = statistics.median(walls[name])
            cpu_us = statistics.median(cpus[name]) / records * 1e6
            print(f"  {name:34s} {records / wall:10.0f} {mb / wall:8.1f} "
                  f"{mb / wall / copy:6.2f}x {cpu_us:14.1f} {copy_cpu / cpu_us:9.2f}x")
        if args.write_only:
            return
        train = warm.splits["train"]
        pipe = pipeline_rate(warm.path, args.batch, train, args.repeats)
        fwd, name = backbone_rate(args.batch, args.repeats)
        print(f"\ninput pipeline vs backbone (median of {args.repeats}, batch {args.batch}, "
              f"{train} train images):")
        print(f"  make_dataset (read+verify+decode+resize) {pipe:8.1f} images/s   "
              f"{pipe / fwd:5.2f}x backbone")
        print(f"  {name} forward {fwd:8.1f} images/s")


if __name__ == "__main__":
    main()
