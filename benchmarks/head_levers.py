"""Benchmark: head levers on cached features, each over three seeds (mean and spread on val).

One seed moves val macro F1 by about 0.01 (benchmarks/seeds.py), as much as most levers, so this
screens each lever over seeds 0, 1 and 2 and prints the mean and standard deviation of val
macro F1 @0.5 (the choice) beside the test mean (reported, never chosen on). It reuses the
embedding cache of `benchmarks/quality.py --work DIR` (views full/top/bottom/flip/pad of
the real backbone) and trains a small tf_keras head per run: the lever head of quality.py
(Adam 1e-3, hidden 1024, dropout 0.5, macro soft-F1, early stopping on val macro F1 with
patience 10, best epoch restored), the three views' features averaged, plus one lever.
Levers kept are then implemented in `tasks` and measured again through `TrainConfig` by
quality.py; this script is the screen, not the recipe.

    .venv/bin/python benchmarks/head_levers.py --work /tmp/i11-bench [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train import BACKBONE, prepare_dataset  # noqa: E402

VIEWS = ["full", "top", "bottom", "flip", "pad"]
THREE = ["full", "top", "bottom"]
SEEDS = (0, 1, 2)
LEVERS: dict[str, dict[str, Any]] = {
    "3 views mean (the first default)": {},
    "+ random subset of views averaged (view dropout)": {"aug": "subset"},
    "+ Dirichlet-weighted mean of the views": {"aug": "dirichlet"},
    "+ view examples (each view its own example)": {"aug": "views"},
    "late fusion (head per view, probabilities averaged)": {"fusion": "late"},
    "+ standardised features": {"norm": "std"},
    "+ standardised features, lr 3e-4": {"norm": "std", "lr": 3e-4},
    "+ mixup (alpha 0.4)": {"mixup": 0.4},
    "+ label smoothing 0.1": {"smooth": 0.1},
    "+ L2-normalised features (x10)": {"norm": "l2"},
    "+ hidden 2048": {"hidden": 2048},
    "+ dropout 0.3 after the hidden layer": {"dropout2": 0.3},
    "+ batch 512": {"batch": 512},
    "+ lr x0.3 after 4 epochs without gain, patience 15": {"plateau": 4, "patience": 15},
    "+ averaged weights of the last 5 epochs (SWA)": {"swa": 5},
    "+ view examples, probabilities averaged over views": {"aug": "views", "eval": "late"},
    "+ view examples, standardised features, lr 3e-4": {"aug": "views", "norm": "std",
                                                        "lr": 3e-4},
    "+ view examples, lr 3e-4": {"aug": "views", "lr": 3e-4},
    "+ view examples, mixup (alpha 0.4)": {"aug": "views", "mixup": 0.4},
    "+ view examples, batch 768": {"aug": "views", "batch": 768},
}


def load_features(work: Path) -> dict[str, np.ndarray]:
    """{split_x: [n, 5 views, dim], split_y: [n, labels]} from quality.py's cache."""
    from storage.shard_reader import split_labels
    from tasks.backbone import backbone_id
    from tasks.head_inputs import view_features

    dataset = prepare_dataset(work)
    out = {}
    for split in ("train", "val", "test"):
        shas, y = split_labels(dataset, split)
        out[f"{split}_x"] = view_features(str(work / "embeddings"), backbone_id(str(BACKBONE)),
                                          shas, VIEWS)
        out[f"{split}_y"] = y
    return out


def build(lever: dict, n_views: int, dim: int, n_labels: int, train_x: np.ndarray) -> Any:
    """The lever head (optionally on standardised features, optionally per view)."""
    import tensorflow as tf
    import tf_keras

    late = lever.get("fusion") == "late"
    inputs = tf_keras.Input(shape=(n_views, dim) if late else (dim,))
    x = inputs
    if lever.get("norm") == "std":
        flat = train_x.reshape(-1, dim)
        x = tf_keras.layers.Normalization(mean=flat.mean(0),
                                          variance=(flat.std(0) + 1e-3) ** 2)(x)
    elif lever.get("norm") == "l2":
        x = tf_keras.layers.Rescaling(10.0)(tf_keras.layers.UnitNormalization(axis=-1)(x))
    x = tf_keras.layers.Dropout(0.5)(x)
    x = tf_keras.layers.Dense(lever.get("hidden", 1024), activation="relu")(x)
    if lever.get("dropout2"):
        x = tf_keras.layers.Dropout(lever["dropout2"])(x)
    x = tf_keras.layers.Dense(n_labels, activation="sigmoid")(x)
    if late:
        x = tf_keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=1))(x)
    return tf_keras.Model(inputs, x)


def train_data(lever: dict, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Shuffled batches (256) with the lever's feature-space augmentation."""
    import tensorflow as tf

    n_views, dim = x.shape[1], x.shape[2]
    late = lever.get("fusion") == "late"
    if lever.get("aug") == "views":
        data = tf.data.Dataset.from_tensor_slices(
            (x.reshape(-1, dim), np.repeat(y, n_views, axis=0))).shuffle(4096, seed=seed)
    else:
        data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1024, seed=seed)

    def subset(a: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        keep = tf.random.uniform([n_views]) < 0.67  # at least one view always kept
        keep = tf.tensor_scatter_nd_update(
            keep, [[tf.random.uniform([], 0, n_views, tf.int32)]], [True])
        w = tf.cast(keep, tf.float32)[:, None]
        return tf.reduce_sum(a * w, 0) / tf.reduce_sum(w), labels

    def dirichlet(a: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        g = tf.random.gamma([n_views], 1.0)
        return tf.reduce_sum(a * (g / tf.reduce_sum(g))[:, None], 0), labels

    augment = {"subset": subset, "dirichlet": dirichlet}.get(lever.get("aug", ""))
    if augment:
        data = data.map(augment)
    elif lever.get("aug") != "views" and not late:
        data = data.map(lambda a, labels: (tf.reduce_mean(a, 0), labels))
    data = data.batch(lever.get("batch", 256))
    if lever.get("mixup"):
        alpha = lever["mixup"]

        def mix(a: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            g1 = tf.random.gamma([], alpha)
            g2 = tf.random.gamma([], alpha)
            lam = g1 / (g1 + g2)
            lam = tf.maximum(lam, 1 - lam)
            perm = tf.random.shuffle(tf.range(tf.shape(a)[0]))
            return (lam * a + (1 - lam) * tf.gather(a, perm),
                    lam * labels + (1 - lam) * tf.gather(labels, perm))

        data = data.map(mix)
    if lever.get("smooth"):
        e = lever["smooth"]
        data = data.map(lambda a, labels: (a, labels * (1 - e) + 0.5 * e))
    return data.prefetch(tf.data.AUTOTUNE)


def run(lever: dict, feats: dict[str, np.ndarray], seed: int) -> dict[str, float]:
    """Train one head; early stopping on whole-split val macro F1 @0.5 (patience 10 unless
    the lever says otherwise), the best epoch's weights restored."""
    import tf_keras

    from tasks.model import macro_f1, macro_soft_f1

    idx = [VIEWS.index(v) for v in THREE]
    views = {s: feats[f"{s}_x"][:, idx] for s in ("train", "val", "test")}
    tf_keras.utils.set_random_seed(seed)
    model = build(lever, len(idx), views["train"].shape[2], feats["train_y"].shape[1],
                  views["train"])
    model.compile(optimizer=tf_keras.optimizers.Adam(lever.get("lr", 1e-3)), loss=macro_soft_f1)

    def predict(split: str) -> np.ndarray:
        x = views[split]
        if lever.get("fusion") == "late":
            return model.predict(x, batch_size=1024, verbose=0)
        if lever.get("eval") == "late":
            flat = model.predict(x.reshape(-1, x.shape[2]), batch_size=4096, verbose=0)
            return flat.reshape(len(x), len(idx), -1).mean(1)
        return model.predict(x.mean(1), batch_size=1024, verbose=0)

    state: dict[str, Any] = {"best": -1.0, "weights": None, "epoch": 0, "wait": 0}
    snapshots: list[list[np.ndarray]] = []

    class Select(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            weights = model.get_weights()
            if lever.get("swa"):
                snapshots.append(weights)
                del snapshots[:-lever["swa"]]
                model.set_weights([np.mean(w, 0) for w in zip(*snapshots, strict=True)])
            score = macro_f1(feats["val_y"], predict("val"))
            averaged = model.get_weights()
            model.set_weights(weights)
            if score > state["best"]:
                state.update(best=score, weights=averaged, epoch=epoch + 1, wait=0)
            else:
                state["wait"] += 1
                self.model.stop_training = state["wait"] >= lever.get("patience", 10)

    class Plateau(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if state["wait"] and state["wait"] % lever["plateau"] == 0:
                model.optimizer.learning_rate.assign(model.optimizer.learning_rate * 0.3)

    callbacks = [Select(), *([Plateau()] if lever.get("plateau") else [])]
    start = time.perf_counter()
    model.fit(train_data(lever, views["train"], feats["train_y"], seed), epochs=100, verbose=0,
              callbacks=callbacks)
    model.set_weights(state["weights"])
    return {"val": macro_f1(feats["val_y"], predict("val")),
            "test": macro_f1(feats["test_y"], predict("test")),
            "epoch": state["epoch"], "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/posterflow-quality")
    parser.add_argument("levers", nargs="*", help="only these levers (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work)
    feats = load_features(work)
    results_file = work / "head_levers.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in args.levers or list(LEVERS):
        for seed in SEEDS:
            key = f"{name}|{seed}"
            if key not in results:
                results[key] = run(LEVERS[name], feats, seed)
                results_file.write_text(json.dumps(results, indent=2))
            r = results[key]
            print(f"{name}, seed {seed}: val {r['val']:.4f} test {r['test']:.4f} "
                  f"(epoch {r['epoch']}, {r['seconds']:.0f} s)", flush=True)
    print("\n| lever (3 views, lever head) | val F1@0.5 mean | val sd | val per seed (0 / 1 / 2) "
          "| test F1@0.5 mean | head s per seed |\n|---|---:|---:|---|---:|---:|")
    for name in LEVERS:
        runs = [results.get(f"{name}|{s}") for s in SEEDS]
        if None in runs:
            continue
        val = [r["val"] for r in runs]
        print(f"| {name} | {np.mean(val):.4f} | {np.std(val):.4f} | "
              f"{' / '.join(f'{v:.4f}' for v in val)} | "
              f"{np.mean([r['test'] for r in runs]):.4f} | "
              f"{np.mean([r['seconds'] for r in runs]):.0f} |")


if __name__ == "__main__":
    main()
