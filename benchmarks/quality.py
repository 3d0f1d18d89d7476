"""Benchmark: model quality of the seed's method, today's default and each lever, in one run.

Real posters of ../shared/data/posters-dev (15 genres at --min-genre-fraction 0.0265), the
ImageNet MobileNetV2 of ../shared/backbones, CPU. The test split is fixed (a hash of the
id, `tasks.catalog`) and never used for a choice: every selection (epochs, sweep, ensemble
members, thresholds) uses val; test is scored once per row, for the table.

1. Embed each candidate view once into the embedding cache (`--work`/embeddings, keyed by
   poster sha256 + backbone + view), timed; a rerun finds them cached (times of the run that
   embedded them are kept in embed_times.json).
2. Every row trains on those cached features with the code `tasks.train.train` runs
   (`head_inputs`, `select_head`), so each lever costs seconds to minutes of head training.
   Rows already in quality.json are kept unless named with `--rows`.
3. `--fine-tune N`: the top-N-blocks fine-tune on this CPU, measured on a budget
   (`--fine-tune-posters` training posters, one epoch) and its full cost extrapolated.

    .venv/bin/python benchmarks/quality.py [--work /tmp/posterflow-quality] [--rows NAME ...]
        [--fine-tune BLOCKS] [--served RUN/model]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train import BACKBONE, prepare_dataset  # noqa: E402

CANDIDATE_VIEWS = ["full", "top", "bottom", "flip", "pad", "top_left", "top_right", "bottom_left",
                   "bottom_right"]


def rows() -> dict[str, dict[str, Any]]:
    """Each row's TrainConfig fields (over the backbone and cache root), in table order.

    A sweep costs minutes on this CPU, so each lever is measured alone against one fixed,
    quick head (`lever`: lr 1e-3, hidden 1024, dropout 0.5, early stopping on val).
    """
    from tasks.train_config import HeadParams
    from tasks.views import CORNERS

    head = HeadParams(learning_rate=1e-3, epochs=100, hidden=1024, dropout=0.5)
    lever = {"views": ["full"], "ensemble": 1, "flip_augment": False, "view_examples": False,
             "shuffle_buffer": 1024, "sweep": False, "early_stopping": True, "patience": 10,
             "head": head}
    three = ["full", "top", "bottom"]
    return {
        "seed (as written)": {"recipe": "seed"},
        "main's default (seed head + early stopping)": {
            **lever, "head": HeadParams()},
        "main's --sweep (8 heads: lr x hidden x dropout)": {
            **lever, "sweep": True, "sweep_learning_rates": [1e-4, 1e-3],
            "sweep_hidden": [256, 1024], "sweep_dropout": [0.0, 0.5],
            "sweep_losses": ["soft_f1"]},
        "lever head (lr 1e-3, 1024, dropout 0.5, early stop)": lever,
        "+ weight decay 0.05 (AdamW)": {
            **lever, "head": head.model_copy(update={"weight_decay": 0.05})},
        "+ views full+flip, mean": {**lever, "views": ["full", "flip"], "combine": "mean"},
        "+ view pad (letterbox) instead of full": {**lever, "views": ["pad"]},
        "+ views full+top+bottom, mean": {**lever, "views": three, "combine": "mean"},
        "+ views full+top, concat": {**lever, "views": ["full", "top"], "combine": "concat"},
        "+ views full+top+bottom, concat": {**lever, "views": three, "combine": "concat"},
        "+ flip augmentation (feature space)": {**lever, "flip_augment": True},
        "+ loss BCE": {**lever, "head": head.model_copy(update={"loss": "bce"})},
        "+ loss ASL": {**lever, "head": head.model_copy(update={"loss": "asl"})},
        "+ ensemble of 5 seeds": {**lever, "ensemble": 5},
        "combined: 3 views mean + ensemble of 3 seeds": {
            **lever, "views": three, "combine": "mean", "ensemble": 3},
        "combined: 3 views mean + flip augmentation": {
            **lever, "views": three, "combine": "mean", "flip_augment": True},
        "combined: 3 views mean + sweep lr x dropout, 3 best": {
            **lever, "views": three, "combine": "mean", "sweep": True, "ensemble": 3,
            "sweep_learning_rates": [3e-4, 1e-3], "sweep_hidden": [1024],
            "sweep_dropout": [0.3, 0.6], "sweep_losses": ["soft_f1"]},
        "combined: 4 views (+pad) mean": {**lever, "views": [*three, "pad"], "combine": "mean"},
        "3 views mean, lever head (the first default), seed 1": {
            **lever, "views": three, "seed": 1},
        "3 views mean, lever head (the first default), seed 2": {
            **lever, "views": three, "seed": 2},
        "+ view examples, seed 1": {**lever, "views": three, "view_examples": True,
                                    "shuffle_buffer": 4096, "seed": 1},
        "+ view examples, seed 2": {**lever, "views": three, "view_examples": True,
                                    "shuffle_buffer": 4096, "seed": 2},
        "3 views mean, view examples, lever head (the previous default)": {"views": three},
        "previous default + ensemble of 3 seeds": {"views": three, "ensemble": 3},
        "+ 4 corner views (7 views mean, view examples)": {"views": [*three, *CORNERS]},
        "default recipe (TrainConfig(): 7 views mean, view examples, lever head)": {},
    }


def embed_views(dataset: str, emb_root: Path, views: list[str]) -> dict[str, dict]:
    """Embed each view once (cached across runs); {view: {seconds, cpu_seconds, embedded}}."""
    from tasks.embed import embed_dataset

    times_file = emb_root / "embed_times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    for view in views:
        start, cpu = time.perf_counter(), time.process_time()
        result = embed_dataset(dataset, str(emb_root), str(BACKBONE), views=[view])
        if result.embedded:
            times[view] = {"seconds": time.perf_counter() - start,
                           "cpu_seconds": time.process_time() - cpu,
                           "embedded": result.embedded, "load": os.getloadavg()[0]}
            times_file.write_text(json.dumps(times, indent=2))
        print(f"view {view}: {'embedded' if result.embedded else 'cached'}, "
              f"{times.get(view, {}).get('seconds', float('nan')):.0f} s", flush=True)
    return times


def score_row(dataset: str, emb_root: str, fields: dict[str, Any], labels: list[str]) -> dict:
    """Train as `tasks.train.train` does on cached features; val choices, test scored once."""
    import numpy as np

    from tasks.backbone import backbone_id
    from tasks.evaluate import best_thresholds, threshold_grid
    from tasks.head_inputs import head_inputs, training_inputs
    from tasks.model import macro_f1, micro_f1, per_label_scores
    from tasks.train import select_head
    from tasks.train_config import TrainConfig

    config = TrainConfig(backbone=str(BACKBONE), embeddings_root=emb_root,
                         compare_losses=False, **fields)
    bid = backbone_id(str(BACKBONE))
    splits = head_inputs(dataset, bid, config)
    start = time.perf_counter()
    with training_inputs(dataset, bid, config) as train_rows:
        chosen, sweep = select_head(train_rows, splits["val"], config)
    head_s = time.perf_counter() - start
    probs = {s: chosen.model.predict(splits[s][0], batch_size=1024, verbose=0)
             for s in ("val", "test")}
    y = {s: splits[s][1] for s in ("val", "test")}
    tuned = best_thresholds(threshold_grid(y["val"], probs["val"], labels), labels)
    per_label = per_label_scores(y["test"], probs["test"], labels)
    worst = sorted(per_label.items(), key=lambda kv: kv[1]["f1"])[:3]
    return {
        "views": config.views, "combine": config.combine, "head": chosen.params.model_dump(),
        "best_epoch": chosen.best_epoch, "sweep_runs": len(sweep), "head_s": head_s,
        **{f"{s}_macro_f1": macro_f1(y[s], probs[s]) for s in ("val", "test")},
        **{f"{s}_macro_f1_tuned": macro_f1(y[s], probs[s], tuned, labels)
           for s in ("val", "test")},
        "test_micro_f1": micro_f1(y["test"], probs["test"]),
        "worst3": [(name, round(s["f1"], 3)) for name, s in worst],
        "mean_prob_test": float(np.mean(probs["test"])),
    }


def fine_tune_budget(dataset: str, emb_root: str, blocks: int, posters: int) -> dict:
    """Fine-tune the top blocks for one epoch on `posters` training posters; time + val F1."""
    import tensorflow as tf

    from storage.datasets import load_dataset_info
    from tasks.backbone import backbone_id
    from tasks.head_inputs import head_inputs, training_inputs
    from tasks.images import make_dataset
    from tasks.model import macro_f1
    from tasks.train import fine_tune, select_head
    from tasks.train_config import TrainConfig

    fields = rows()["lever head (lr 1e-3, 1024, dropout 0.5, early stop)"]
    config = TrainConfig(backbone=str(BACKBONE), embeddings_root=emb_root, compare_losses=False,
                         fine_tune_blocks=blocks, fine_tune_epochs=1,
                         fine_tune_learning_rate=1e-5, **fields)
    bid = backbone_id(str(BACKBONE))
    splits = head_inputs(dataset, bid, config, ("val",))
    with training_inputs(dataset, bid, config) as train_rows:
        head, _ = select_head(train_rows, splits["val"], config)
    batches = -(-posters // config.batch_size)
    subset = make_dataset(dataset, "train", batch_size=config.batch_size,
                          shuffle_seed=config.seed).take(batches)
    start = time.perf_counter()
    tuned = fine_tune(dataset, head, splits["val"][1], config, train_data=subset)
    seconds = time.perf_counter() - start
    val_images = make_dataset(dataset, "val", batch_size=config.batch_size).map(lambda x, _: x)
    val_probs = tuned.model.predict(val_images, verbose=0)
    train_posters = load_dataset_info(dataset).splits["train"]
    del tf
    return {"blocks": blocks, "posters": batches * config.batch_size, "seconds": seconds,
            "head_val_macro_f1": head.val_macro_f1,
            "fine_tuned_val_macro_f1": macro_f1(splits["val"][1], val_probs),
            "extrapolated_epoch_s": seconds * train_posters / (batches * config.batch_size)}


def served_test_scores(model_dir: str, dataset: str) -> dict[str, float]:
    """Test macro F1 through the SavedModel's serving_default from raw poster bytes."""
    import numpy as np
    import tensorflow as tf

    from storage.shard_reader import read_records
    from tasks.export import load_model_assets
    from tasks.model import macro_f1

    assets = load_model_assets(model_dir)
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    probs, labels = [], []
    for batch in read_records(dataset, "test").batch(64).as_numpy_iterator():
        probs.append(serve(images=tf.constant(batch["image"]))["probabilities"].numpy())
        labels.append(batch["labels"])
    y, p = np.concatenate(labels), np.concatenate(probs)
    return {"served_test_macro_f1": macro_f1(y, p),
            "served_test_macro_f1_tuned": macro_f1(y, p, assets["thresholds"], assets["labels"]),
            "trained_test_macro_f1": assets["metrics"]["test"]["macro_f1"],
            "trained_test_macro_f1_tuned": assets["metrics"]["test"]["macro_f1_tuned"]}


def table(results: dict[str, dict], embed: dict[str, dict]) -> str:
    """The markdown table of all rows."""
    head = ("| recipe | val F1@0.5 | test F1@0.5 | val F1 tuned | test F1 tuned | test micro "
            "F1 | worst 3 labels (test F1@0.5) | embed s | head s |\n"
            "|---|---:|---:|---:|---:|---:|---|---:|---:|")
    lines = [head]
    for name, r in results.items():
        embed_s = sum(embed.get(v, {}).get("seconds", float("nan")) for v in r["views"])
        worst = ", ".join(f"{n} {f:.2f}" for n, f in r["worst3"])
        lines.append(f"| {name} | {r['val_macro_f1']:.4f} | {r['test_macro_f1']:.4f} | "
                     f"{r['val_macro_f1_tuned']:.4f} | {r['test_macro_f1_tuned']:.4f} | "
                     f"{r['test_micro_f1']:.4f} | {worst} | {embed_s:.0f} | "
                     f"{r['head_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/posterflow-quality")
    parser.add_argument("--rows", nargs="*", help="only these rows (default: all)")
    parser.add_argument("--fine-tune", type=int, default=0, metavar="BLOCKS")
    parser.add_argument("--fine-tune-posters", type=int, default=512)
    parser.add_argument("--served", metavar="MODEL_DIR",
                        help="only score the test split through this exported model")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from storage.datasets import load_dataset_info

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = prepare_dataset(work)
    info = load_dataset_info(dataset)
    print(f"dataset {dataset}: splits {info.splits}, {len(info.labels)} labels", flush=True)
    if args.served:
        print(json.dumps(served_test_scores(args.served, dataset), indent=2))
        return
    emb_root = work / "embeddings"
    embed = embed_views(dataset, emb_root, CANDIDATE_VIEWS)
    results_file = work / "quality.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name, fields in rows().items():
        if (name in results and not args.rows) or (args.rows and name not in args.rows):
            continue
        results[name] = score_row(dataset, str(emb_root), fields, list(info.labels))
        r = results[name]
        print(f"{name}: val {r['val_macro_f1']:.4f} test {r['test_macro_f1']:.4f} (tuned "
              f"{r['val_macro_f1_tuned']:.4f} / {r['test_macro_f1_tuned']:.4f}), head "
              f"{r['head_s']:.0f} s, chose {r['head']} epoch {r['best_epoch']}", flush=True)
        results_file.write_text(json.dumps(results, indent=2))
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          f"(shared); embedding times per view from the run that embedded it\n")
    print(table(results, embed))
    if args.fine_tune:
        ft = fine_tune_budget(dataset, str(emb_root), args.fine_tune, args.fine_tune_posters)
        (work / "fine_tune.json").write_text(json.dumps(ft, indent=2))
        print(f"\nfine-tune top {ft['blocks']} blocks, 1 epoch on {ft['posters']} train "
              f"posters: {ft['seconds']:.0f} s (a whole epoch: ~{ft['extrapolated_epoch_s']:.0f}"
              f" s); val macro F1 @0.5 {ft['head_val_macro_f1']:.4f} (head) -> "
              f"{ft['fine_tuned_val_macro_f1']:.4f}")


if __name__ == "__main__":
    main()
