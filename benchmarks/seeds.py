"""Benchmark: the default recipe's seed spread, and what an ensemble of its heads adds.

One head's val macro F1 moves by about 0.01 with the seed, as much as most
levers, so a recipe is judged by its mean over many seeds, not by one run. This trains a
recipe's head under seeds 0..N-1 on the cached features of `benchmarks/quality.py --work DIR`
(the code `tasks.train.train` runs: `head_inputs`, `select_head`), keeps each head's val and
test probabilities (`DIR/seeds/<recipe>/`; a rerun trains only missing seeds), and prints:
  - single heads: val macro F1 @0.5 mean, standard deviation, min and max over the seeds;
  - ensembles of k heads (probabilities averaged, as `TrainConfig.ensemble` does): the mean
    over every k-subset of the seeds, so the ensemble is compared with the single head's
    mean, not with one lucky seed;
and beside each the test figures, reported only: every choice is made on val.

    .venv/bin/python benchmarks/seeds.py --work /tmp/i11-bench [--seeds 9] [RECIPE ...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train import BACKBONE, prepare_dataset  # noqa: E402
from tasks.views import CORNERS  # noqa: E402

THREE = ["full", "top", "bottom"]
RECIPES: dict[str, dict[str, Any]] = {  # TrainConfig fields over its defaults
    "3 views (the previous default)": {"views": THREE},
    "3 views + flip": {"views": [*THREE, "flip"]},
    "3 views + flip and pad": {"views": [*THREE, "flip", "pad"]},
    "default: 3 views + 4 corners": {"views": [*THREE, *CORNERS]},
}
ENSEMBLE_SIZES = (3, 5)
SPLITS = ("val", "test")


def train_seeds(dataset: str, emb_root: str, fields: dict[str, Any], seeds: range,
                out: Path) -> None:
    """Train one head per missing seed; save its val and test probabilities and labels."""
    from tasks.backbone import backbone_id
    from tasks.head_inputs import head_inputs, training_inputs
    from tasks.train import select_head
    from tasks.train_config import TrainConfig

    config = TrainConfig(backbone=str(BACKBONE), embeddings_root=emb_root,
                         compare_losses=False, **fields)
    todo = [s for s in seeds if not (out / f"{s}.npz").exists()]
    if not todo:
        return
    bid = backbone_id(str(BACKBONE))
    splits = head_inputs(dataset, bid, config, SPLITS)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "labels.npz", **{s: splits[s][1] for s in SPLITS})
    with training_inputs(dataset, bid, config) as train_rows:
        for seed in todo:
            start = time.perf_counter()
            chosen, _ = select_head(train_rows, splits["val"],
                                    config.model_copy(update={"seed": seed}))
            np.savez(out / f"{seed}.npz", **{s: chosen.model.predict(
                splits[s][0], batch_size=1024, verbose=0) for s in SPLITS})
            print(f"{out.name} seed {seed}: epoch {chosen.best_epoch}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)


def spread(out: Path, seeds: range) -> dict[str, dict[str, list[float]]]:
    """{split: {"1": per-seed F1, "k": F1 of every k-subset's averaged probabilities}}."""
    from tasks.model import macro_f1

    labels = np.load(out / "labels.npz")
    probs = [np.load(out / f"{s}.npz") for s in seeds]
    scores: dict[str, dict[str, list[float]]] = {}
    for split in SPLITS:
        y = labels[split]
        scores[split] = {"1": [macro_f1(y, p[split]) for p in probs]}
        for k in ENSEMBLE_SIZES:
            scores[split][str(k)] = [
                macro_f1(y, np.mean([probs[i][split] for i in subset], axis=0))
                for subset in itertools.combinations(range(len(probs)), k)]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/posterflow-quality")
    parser.add_argument("--seeds", type=int, default=9)
    parser.add_argument("recipes", nargs="*", help=f"of {list(RECIPES)} (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work)
    dataset = prepare_dataset(work)
    seeds = range(args.seeds)
    lines = ["| recipe | heads | val F1@0.5 mean | val sd | val min / max | test F1@0.5 mean "
             "| test sd |\n|---|---|---:|---:|---|---:|---:|"]
    for name in args.recipes or list(RECIPES):
        out = work / "seeds" / re.sub(r"[^a-z0-9]+", "-", name).strip("-")
        train_seeds(dataset, str(work / "embeddings"), RECIPES[name], seeds, out)
        scores = spread(out, seeds)
        for k, val in scores["val"].items():
            test = scores["test"][k]
            heads = f"1 ({len(val)} seeds)" if k == "1" else f"{k} (all {len(val)} subsets)"
            lines.append(f"| {name} | {heads} | {np.mean(val):.4f} | {np.std(val, ddof=1):.4f} "
                         f"| {min(val):.4f} / {max(val):.4f} | {np.mean(test):.4f} "
                         f"| {np.std(test, ddof=1):.4f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
