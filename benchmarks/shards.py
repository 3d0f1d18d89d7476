"""Shards stage throughput, each figure against its baseline, measured in one run.

1. Shard writing (`build_dataset`, MB of poster bytes per second) against a plain copy of the
   same poster bytes from the same store into the same number of files (read, write, fsync).
2. The tf.data input pipeline (`make_dataset`: read + verify + parse + decode + resize +
   shuffle + batch, images/s) against the MobileNetV2 forward rate (images/s) on this machine.

Targets: writing >= 0.5x the plain copy; input pipeline >= 4x the backbone.

Inputs: the real posters of ../shared/data/posters-dev when present (5,528 JPEGs), else
5,000 generated 182x268 JPEGs. Run: `.venv/bin/python benchmarks/shards.py [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
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

from storage.catalog import LabelVocabulary, write_catalog, write_labels  # noqa: E402
from storage.posters import PosterStore  # noqa: E402
from tasks.images import make_dataset  # noqa: E402
from tasks.shards import ShardConfig, build_dataset  # noqa: E402

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


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
    return statistics.median(batch / timed(lambda: model(images).numpy())
                             for _ in range(repeats)), name


def pipeline_rate(dataset_dir: str, batch: int, records: int, repeats: int) -> float:
    """Images/s through make_dataset (verify, shuffle with a seed, decode, batch), per epoch."""
    def epoch() -> None:
        for _images, _labels in make_dataset(dataset_dir, "train", batch, shuffle_seed=0):
            pass

    epoch()  # warm the page cache and the graph
    return statistics.median(records / timed(epoch) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog, store, total = make_inputs(root)
        mb = total / 1e6
        source = "posters-dev" if POSTERS_DEV.is_dir() else "generated"
        print(f"inputs: {len(PosterStore(store).read_index())} {source} posters, {mb:.1f} MB; "
              f"{os.cpu_count()} CPUs (shared); TF {tf.__version__}")
        warm = build_dataset(catalog, store, root / "warm", ShardConfig())  # page cache, TF
        rates: dict[str, list[float]] = {"copy": [], "shards": [], "shards gzip": []}
        for r in range(args.repeats):  # interleaved, so noise hits every variant alike
            runs = {
                "shards": lambda r=r: build_dataset(catalog, store, root / f"ds-{r}",
                                                    ShardConfig()),
                "copy": lambda r=r: plain_copy(store, root / f"copy-{r}", warm.shards),
                "shards gzip": lambda r=r: build_dataset(catalog, store, root / f"gz-{r}",
                                                         ShardConfig(gzip=True)),
            }
            for name, run in runs.items():
                rates[name].append(mb / timed(run))
            for folder in (f"ds-{r}", f"copy-{r}", f"gz-{r}"):
                shutil.rmtree(root / folder)
        copy = statistics.median(rates["copy"])
        print(f"\nshard write (median of {args.repeats}, MB of posters/s; "
              f"{warm.shards} shards):")
        for name, values in rates.items():
            rate = statistics.median(values)
            print(f"  {name:12s} {rate:8.1f} MB/s   {rate / copy:5.2f}x plain copy")
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
