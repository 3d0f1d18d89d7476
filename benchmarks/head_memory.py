"""Benchmark: peak memory of head training, streamed vs held in memory, at 1x and 4x the posters.

Real posters of ../shared/data/posters-dev, their cached ImageNet MobileNetV2 features for
the default recipe's seven views, CPU. Each row is its own child process (peak RSS from
`os.wait4`), training the default recipe's head (one example per poster and view) for
`--epochs` epochs without early stopping:
- streamed: `tasks.train.fit_model` as the train stage runs it: the training split's
  features copied once to a local scratch file and streamed back in chunks each epoch
  (`tasks.head_inputs.training_inputs`);
- in memory (the baseline, the way training read them before): the split's features of
  every view read into one array, then `view_examples`.
4x is the dataset with every shard repeated four times (same posters: the cache holds
their features once, training reads four times the examples).

    POSTERFLOW_SHARED=../shared .venv/bin/python benchmarks/head_memory.py
        [--work /tmp/pf-score] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train import BACKBONE, prepare_dataset, replicate, run_child  # noqa: E402


def config_for(work: Path, epochs: int):  # -> TrainConfig (imported in the child)
    from tasks.train_config import HeadParams, TrainConfig

    default = TrainConfig()
    return TrainConfig(backbone=str(BACKBONE), embeddings_root=str(work / "embeddings"),
                       early_stopping=False, compare_losses=False, ensemble=1,
                       head=HeadParams(**{**default.head.model_dump(), "epochs": epochs}))


def child(kind: str, dataset: str, work: Path, epochs: int) -> dict:
    """Train one head; what it read and how long it took."""
    import numpy as np

    from storage.shard_reader import split_labels
    from tasks.backbone import backbone_id
    from tasks.head_inputs import TrainingRows, head_inputs, view_features
    from tasks.model import view_examples
    from tasks.train import fit_model, select_head

    config = config_for(work, epochs)
    bid = backbone_id(str(BACKBONE))
    start = time.perf_counter()
    if kind == "streamed":
        fit_dir = work / "head-memory" / f"fit-{os.getpid()}"
        saved = fit_model(dataset, str(fit_dir), config, backbone_id=bid)
        score = saved.val_macro_f1
    else:
        shas, y = split_labels(dataset, "train")
        x, labels = view_examples(view_features(config.cache_root, bid, shas, config.views), y)
        val = head_inputs(dataset, bid, config, ("val",))["val"]
        chosen, _ = select_head(TrainingRows.of_arrays(x, labels), val, config)
        score = chosen.val_macro_f1
    shas, _ = split_labels(dataset, "train")
    examples = len(shas) * len(config.views)
    return {"seconds": time.perf_counter() - start, "examples": examples,
            "feature_mib": examples * 1280 * 4 / 2**20, "val_macro_f1": float(np.float64(score))}


def main() -> None:
    if sys.argv[1:2] == ["child"]:  # `head_memory.py child KIND DATASET WORK EPOCHS`
        from flows.cli import quiet

        quiet.configure(False)
        quiet.start_tensorflow()  # TensorFlow's start-up lines held back, as the CLI does
        kind, dataset, work, epochs = sys.argv[2:]
        print("RESULT " + json.dumps(child(kind, dataset, Path(work), int(epochs))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pf-score"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from tasks.embed import embed_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    dataset = prepare_dataset(args.work)
    dataset4x = replicate(Path(dataset), args.work / "replicated", 4)
    config = config_for(args.work, args.epochs)
    started = time.perf_counter()
    embed_dataset(dataset, config.cache_root, str(BACKBONE), views=config.views)
    print(f"embedding cache ready in {time.perf_counter() - started:.0f} s", flush=True)
    rows = {}
    for kind in ("in memory", "streamed"):
        for scale, path in (("1x", dataset), ("4x", dataset4x)):
            rows[kind, scale] = run_child(kind, path, str(args.work), str(args.epochs),
                                          script=__file__)
            print(f"{kind} {scale}: {rows[kind, scale][1]:.0f} MiB", flush=True)
    one, four = rows["streamed", "1x"][0], rows["streamed", "4x"][0]
    print(f"\ndefault recipe, {len(config.views)} views, {args.epochs} epochs; training "
          f"examples 1x {one['examples']:,} ({one['feature_mib']:.0f} MiB of features), "
          f"4x {four['examples']:,} ({four['feature_mib']:.0f} MiB)\n")
    print("| training split | peak RSS 1x (MiB) | peak RSS 4x (MiB) | 4x - 1x (MiB) | "
          "s 1x | s 4x | val macro F1 1x |\n|---|---:|---:|---:|---:|---:|---:|")
    for kind in ("in memory", "streamed"):
        (r1, m1), (r4, m4) = rows[kind, "1x"], rows[kind, "4x"]
        print(f"| {kind} | {m1:.0f} | {m4:.0f} | {m4 - m1:.0f} | {r1['seconds']:.0f} | "
              f"{r4['seconds']:.0f} | {r1['val_macro_f1']:.4f} |")
    growth = [rows[k, "4x"][1] - rows[k, "1x"][1] for k in ("in memory", "streamed")]
    print(f"\ngrowth from 1x to 4x: streamed {growth[1]:.0f} MiB vs in memory "
          f"{growth[0]:.0f} MiB (the 3x more features: "
          f"{four['feature_mib'] - one['feature_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
