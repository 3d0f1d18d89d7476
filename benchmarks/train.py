"""Benchmark: the seed's training loop vs posterflow's cached-feature training, in one run.

Measures on the real posters in ../shared/data/posters-dev with the ImageNet MobileNetV2 in
../shared/backbones (CPU; TensorFlow does not run on the lent GPU machine):
1. the seed's loop as written (tf.data over JPEG files, cache/shuffle(1024)/batch(256)/
   prefetch, hub layer inside the model, Adam 1e-5, soft-F1 loss): `--seed-epochs` epochs
   (default 3) timed and extrapolated to 30 when fewer are run (said in the output);
2. posterflow with the same hyperparameters: embed once (cold cache) + 30 epochs on features;
3. posterflow with model selection (sweep + early stopping, warm cache): val/test macro F1;
4. peak RSS of (2) on the 5,528 posters and on a 4x replicated dataset (same poster bytes,
   new shard files, so the cache holds 5,528 features and training reads 4x records).
Every measurement runs in its own child process (peak RSS from `os.wait4`).

    .venv/bin/python benchmarks/train.py [--work /tmp/posterflow-bench] [--seed-epochs 3]

Inputs are built with the real stages: catalog (validate_catalog), a poster store filled
from the local files (the fetch stage's store format), shards (build_dataset).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("POSTERFLOW_SHARED", REPO.parent / "shared"))
POSTERS = SHARED / "data" / "posters-dev"
BACKBONE = SHARED / "backbones" / "mobilenet_v2_100_224_feature_vector"
SEED_EPOCHS_FULL = 30


def prepare(work: Path) -> tuple[str, str]:
    """The dev posters' dataset and a 4x replicated copy; reused across runs."""
    dataset = prepare_dataset(work)
    return dataset, replicate(Path(dataset), work / "datasets-4x", 4)


def prepare_dataset(work: Path, movies: int | None = None) -> str:
    """Catalog -> poster store -> dataset of the dev posters (15 genres); reused across runs.

    `movies`: only the catalog's first rows (a smaller dataset, in `work` of its own)."""
    import pandas as pd
    from PIL import Image

    from storage.posters import PosterStore
    from tasks.catalog import CatalogConfig, validate_catalog
    from tasks.shards import build_dataset

    catalog_dir = work / "catalog"
    source = POSTERS / "MovieGenre.csv"
    if movies is not None:
        work.mkdir(parents=True, exist_ok=True)
        lines = source.read_bytes().splitlines(keepends=True)
        (work / "MovieGenre.csv").write_bytes(b"".join(lines[:movies + 1]))
        source = work / "MovieGenre.csv"
    if not (catalog_dir / "summary.json").exists():
        validate_catalog(source, catalog_dir, CatalogConfig(min_genre_fraction=0.0265)).check()
    store = PosterStore(work / "posters")
    if not (work / "posters" / "filled").exists():
        rows = []
        now = dt.datetime.now(dt.UTC)
        for row in pd.read_parquet(catalog_dir / "catalog.parquet").itertuples():
            data = (POSTERS / "posters" / f"{row.imdb_id}.jpg").read_bytes()
            width, height = Image.open(POSTERS / "posters" / f"{row.imdb_id}.jpg").size
            rows.append({"imdb_id": row.imdb_id, "url": row.poster_url, "sha256": store.put(data),
                         "bytes": len(data), "width": width, "height": height,
                         "format": "jpeg", "fetched_at": now})
        store.append_index(rows)
        (work / "posters" / "filled").touch()
    return build_dataset(catalog_dir, work / "posters", work / "datasets").path


def replicate(dataset: Path, out_root: Path, times: int) -> str:
    """A dataset version with every shard repeated `times` times (same records)."""
    from storage import datasets

    info = datasets.load_dataset_info(dataset)
    out = out_root / f"{info.version}x{times}"
    if (out / datasets.DATASET_JSON).exists():
        return str(out)
    out.mkdir(parents=True)
    manifest = datasets.read_manifest(dataset)
    rows = []
    for split, shards in manifest.groupby("split"):
        count = len(shards) * times
        for k in range(times):
            for row in shards.itertuples():
                index = k * len(shards) + row.index
                name = datasets.shard_name(split, index, count, info.compression)
                shutil.copyfile(dataset / row.shard, out / name)
                rows.append({**row._asdict(), "shard": name, "index": index, "count": count})
    for row in rows:
        row.pop("Index")
    datasets.write_manifest(out, rows)
    datasets.write_dataset_info(datasets.DatasetInfo(**{
        **info.__dict__, "path": str(out), "version": f"{info.version}x{times}",
        "splits": {k: v * times for k, v in info.splits.items()}}))
    return str(out)


# --- children: each prints one "RESULT {json}" line ------------------------------------------


def child_seed(dataset: str, epochs: int) -> dict:
    """The seed's loop as written (its create_dataset, model and fit), over JPEG files."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from storage.datasets import load_dataset_info
    from storage.shard_reader import read_records
    from tasks.backbone import import_hub
    from tasks.model import macro_f1, macro_soft_f1

    hub = import_hub()
    labels = load_dataset_info(dataset).labels

    def files(split: str) -> tuple[list[str], np.ndarray]:
        rows = list(read_records(dataset, split).map(lambda r: (r["imdb_id"], r["labels"]))
                    .as_numpy_iterator())
        return ([str(POSTERS / "posters" / f"{i}.jpg") for i, _ in rows],
                np.stack([y for _, y in rows]))

    def parse_function(filename: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.image.decode_jpeg(tf.io.read_file(filename), channels=3)
        return tf.image.resize(image, [224, 224]) / 255.0, label

    def create_dataset(filenames: list[str], y: np.ndarray, is_training: bool = True
                       ) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((filenames, y))
        ds = ds.map(parse_function, num_parallel_calls=tf.data.AUTOTUNE)
        if is_training:
            ds = ds.cache().shuffle(buffer_size=1024)
        return ds.batch(256).prefetch(buffer_size=tf.data.AUTOTUNE)

    def seed_macro_f1(y: tf.Tensor, y_hat: tf.Tensor, thresh: float = 0.5) -> tf.Tensor:
        y_pred = tf.cast(tf.greater(y_hat, thresh), tf.float32)
        tp = tf.cast(tf.math.count_nonzero(y_pred * y, axis=0), tf.float32)
        fp = tf.cast(tf.math.count_nonzero(y_pred * (1 - y), axis=0), tf.float32)
        fn = tf.cast(tf.math.count_nonzero((1 - y_pred) * y, axis=0), tf.float32)
        return tf.reduce_mean(2 * tp / (2 * tp + fn + fp + 1e-16))

    x_train, y_train = files("train")
    x_val, y_val = files("val")
    model = tf_keras.Sequential([
        hub.KerasLayer(str(BACKBONE), trainable=False, input_shape=(224, 224, 3)),
        tf_keras.layers.Dense(1024, activation="relu", name="hidden_layer"),
        tf_keras.layers.Dense(len(labels), activation="sigmoid", name="output"),
    ])
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate=1e-5), loss=macro_soft_f1,
                  metrics=[seed_macro_f1])
    ends: list[float] = []
    cpu_ends: list[float] = []
    timer = tf_keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: (
        ends.append(time.perf_counter()), cpu_ends.append(time.process_time())))
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(create_dataset(x_train, y_train), epochs=epochs, verbose=0, callbacks=[timer],
              validation_data=create_dataset(x_val, y_val, is_training=False))
    epoch_s = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
    epoch_cpu_s = [b - a for a, b in zip([cpu_start, *cpu_ends[:-1]], cpu_ends, strict=True)]
    probs = model.predict(create_dataset(x_val, y_val, is_training=False), verbose=0)
    return {"epochs_run": epochs, "epoch_s": epoch_s, "epoch_cpu_s": epoch_cpu_s,
            "measured_s": ends[-1] - start,
            "val_macro_f1": macro_f1(y_val, probs), "train_posters": len(x_train)}


def child_posterflow(dataset: str, emb_root: str, epochs: int) -> dict:
    """posterflow with the seed's hyperparameters: embed (cold cache) + epochs on features."""
    from storage.embeddings import EmbeddingCache
    from storage.shard_reader import split_labels
    from tasks.embed import embed_dataset
    from tasks.head_inputs import TrainingRows
    from tasks.train import fit_head
    from tasks.train_config import HeadParams, TrainConfig

    config = TrainConfig(backbone=str(BACKBONE), early_stopping=False, compare_losses=False,
                         head=HeadParams(learning_rate=1e-5, epochs=epochs, hidden=1024))
    start, cpu_start = time.perf_counter(), time.process_time()
    embedded = embed_dataset(dataset, emb_root, config.backbone)
    embed_s, embed_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    cache = EmbeddingCache(emb_root, embedded.backbone_id)
    splits = {}
    for split in ("train", "val"):
        shas, y = split_labels(dataset, split)
        splits[split] = (cache.read(shas), y)
    fitted = fit_head(TrainingRows.of_arrays(*splits["train"]), splits["val"], config.head,
                      config)
    total_s, total_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    return {"embed_s": embed_s, "train_s": total_s - embed_s, "total_s": total_s,
            "embed_cpu_s": embed_cpu_s, "total_cpu_s": total_cpu_s,
            "embedded": embedded.embedded, "records": embedded.records,
            "val_macro_f1": fitted.val_macro_f1,
            "val_macro_f1_by_epoch": fitted.history["val_macro_f1"]}


def child_select(dataset: str, emb_root: str, out: str) -> dict:
    """posterflow with model selection (sweep + early stopping), full train() incl. report."""
    from tasks.train import train
    from tasks.train_config import TrainConfig

    config = TrainConfig(backbone=str(BACKBONE), embeddings_root=emb_root, sweep=True,
                         sweep_epochs=60, patience=8, views=["full"], compare_losses=True)
    start = time.perf_counter()
    result = train(dataset, out, config)
    return {"total_s": time.perf_counter() - start, "head": result.params["head"],
            "best_epoch": result.params["best_epoch"],
            "val_macro_f1": result.metrics["val"]["macro_f1"],
            "val_macro_f1_tuned": result.metrics["val"]["macro_f1_tuned"],
            "test_macro_f1": result.metrics["test"]["macro_f1"],
            "test_macro_f1_tuned": result.metrics["test"]["macro_f1_tuned"],
            "sweep": result.sweep}


def run_child(*args: str, script: str = __file__) -> tuple[dict, float]:
    """Run `script` (default this one) as `script child ARGS...`; return the result it
    prints on its "RESULT {json}" line and its peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, script, "child", *args],
                            stdout=subprocess.PIPE, text=True, env={**os.environ,
                            "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed with {proc.returncode}")
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/posterflow-bench")
    parser.add_argument("--seed-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    dataset, dataset4x = prepare(work)
    print(f"inputs ready in {time.perf_counter() - t:.0f} s: {dataset} and {dataset4x}")
    for name in ("emb-1x", "emb-4x", "select"):
        shutil.rmtree(work / name, ignore_errors=True)

    seed, seed_rss = run_child("seed", dataset, str(args.seed_epochs))
    ours, ours_rss = run_child("posterflow", dataset, str(work / "emb-1x"), str(args.epochs))
    ours4x, ours4x_rss = run_child("posterflow", dataset4x, str(work / "emb-4x"),
                                   str(args.epochs))
    select, select_rss = run_child("select", dataset, str(work / "emb-1x"), str(work / "select"))

    seed_30, seed_30_cpu = (extrapolate(seed[key]) for key in ("epoch_s", "epoch_cpu_s"))
    extrapolated = args.seed_epochs < SEED_EPOCHS_FULL
    k = args.seed_epochs
    print(f"\nmachine: {os.cpu_count()} CPUs, shared with other engineers while measuring; "
          f"backbone {BACKBONE.name}; {seed['train_posters']} train posters")
    print(f"seed loop: epochs {[round(s, 1) for s in seed['epoch_s']]} s; "
          f"{'EXTRAPOLATED' if extrapolated else 'measured'} 30-epoch wall time "
          f"{seed_30:.0f} s (first epoch + 29 x median of the later ones)")
    print(f"posterflow (same hyperparameters): embed {ours['embed_s']:.0f} s + "
          f"{args.epochs} epochs {ours['train_s']:.1f} s = {ours['total_s']:.0f} s")
    print(f"speed-up (30 epochs): wall {seed_30 / ours['total_s']:.1f}x; CPU time (less "
          f"sensitive to the shared machine's load): seed {seed_30_cpu:.0f} CPU-s vs "
          f"posterflow {ours['total_cpu_s']:.0f} CPU-s (embed {ours['embed_cpu_s']:.0f}) = "
          f"{seed_30_cpu / ours['total_cpu_s']:.1f}x")
    print(f"val macro F1 @0.5 after {k} epochs: seed {seed['val_macro_f1']:.4f}, posterflow "
          f"{ours['val_macro_f1_by_epoch'][k - 1]:.4f}; posterflow after {args.epochs}: "
          f"{ours['val_macro_f1']:.4f}")
    print(f"posterflow with model selection ({len(select['sweep'])} sweep runs, "
          f"{select['total_s']:.0f} s incl. report + export): chose {select['head']} "
          f"(best epoch {select['best_epoch']}); val macro F1 @0.5 "
          f"{select['val_macro_f1']:.4f} (per-label tuned {select['val_macro_f1_tuned']:.4f}); "
          f"test @0.5 {select['test_macro_f1']:.4f} (tuned {select['test_macro_f1_tuned']:.4f})")
    print(f"peak RSS: seed {seed_rss:.0f} MiB ({k} epochs); posterflow 1x "
          f"({ours['records']} records) {ours_rss:.0f} MiB; 4x ({ours4x['records']} records) "
          f"{ours4x_rss:.0f} MiB; model selection {select_rss:.0f} MiB")
    results = {"seed": seed, "seed_30_s": seed_30, "seed_30_cpu_s": seed_30_cpu,
               "seed_extrapolated": extrapolated,
               "posterflow": ours, "posterflow_4x": ours4x, "select": select,
               "rss_mib": {"seed": seed_rss, "posterflow": ours_rss, "posterflow_4x": ours4x_rss,
                           "select": select_rss}}
    (work / "results.json").write_text(json.dumps(results, indent=2))


def extrapolate(epoch_s: list[float]) -> float:
    """30-epoch time: the first epoch (decodes and caches) + 29 x median of the later ones."""
    later = epoch_s[1:] or epoch_s
    return epoch_s[0] + (SEED_EPOCHS_FULL - 1) * statistics.median(later)


def child(argv: list[str]) -> None:
    """Entry of a child process."""
    kind, *rest = argv
    if kind == "seed":
        result = child_seed(rest[0], int(rest[1]))
    elif kind == "posterflow":
        result = child_posterflow(rest[0], rest[1], int(rest[2]))
    else:
        result = child_select(*rest)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2:])
    else:
        main()
