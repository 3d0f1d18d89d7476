"""Benchmark: batch scoring of the dev catalog from cached features vs through the SavedModel.

Real posters of ../shared/data/posters-dev, the ImageNet MobileNetV2 of ../shared/backbones,
CPU. Both rows run `tasks.score.score_posters` with the same exported model (a head on the
default's views; its weights do not change the cost): once with the embedding cache
holding every view of every poster (the head alone, `serving_features`), once with an
empty cache (every poster through `serving_default`: decode, views, backbone, head). It
prints posters/s, the ratio and the largest difference between the two probabilities.

    POSTERFLOW_SHARED=../shared .venv/bin/python benchmarks/score.py [--work /tmp/pf-score]
        [--views full,top,bottom] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train import BACKBONE, prepare_dataset  # noqa: E402


def main() -> None:
    from tasks.train_config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/posterflow-score"))
    parser.add_argument("--views", default=",".join(TrainConfig().views))
    parser.add_argument("--repeats", type=int, default=3, help="runs of the cached row")
    args = parser.parse_args()
    views = args.views.split(",")

    from flows.cli import quiet

    quiet.configure(False)  # before TensorFlow loads: no C++ start-up lines
    import numpy as np
    import tensorflow as tf

    from storage.embeddings import EmbeddingCache
    from tasks.backbone import backbone_id
    from tasks.embed import embed_dataset
    from tasks.export import export_model, load_model_assets
    from tasks.model import build_head
    from tasks.score import read_part, score_posters

    args.work.mkdir(parents=True, exist_ok=True)
    dataset = prepare_dataset(args.work)
    embeddings = str(args.work / "embeddings")
    bid = backbone_id(str(BACKBONE))
    started = time.perf_counter()
    embed_dataset(dataset, embeddings, str(BACKBONE), views=views)
    print(f"embedding cache ready in {time.perf_counter() - started:.0f} s "
          f"({len(views)} views)", flush=True)
    posters = read_part(dataset, ["train", "val", "test"], 0, 1)
    cache = EmbeddingCache(embeddings, bid, "full")
    dim = cache.read(posters.sha256s[:1]).shape[1]
    model_dir = args.work / f"model-{len(views)}v"
    labels = [f"genre{i}" for i in range(15)]
    if not (model_dir / "saved_model.pb").exists():
        export_model(model_dir, backbone_handle=str(BACKBONE),
                     head=build_head(len(labels), hidden=1024, input_dim=dim), labels=labels,
                     thresholds={}, metrics={}, lineage={"backbone_id": bid}, views=views,
                     combine="mean")
    lineage = load_model_assets(model_dir)["lineage"]
    model = tf.saved_model.load(str(model_dir))

    def timed(root: str) -> tuple[float, np.ndarray, int]:
        start = time.perf_counter()
        probs, _, hits = score_posters(model, posters, root, lineage, batch_size=64)
        return time.perf_counter() - start, probs, int(hits.sum())

    n = len(posters.sha256s)
    cached = [timed(embeddings) for _ in range(args.repeats)]
    print(f"cached features: {[round(c[0], 2) for c in cached]} s", flush=True)
    served_s, served, hits = timed(str(args.work / "no-cache"))
    assert hits == 0 and all(c[2] == n for c in cached)
    cached_s = statistics.median(c[0] for c in cached)
    diff = float(np.abs(cached[0][1] - served).max())
    print(f"\n{n} posters x {len(views)} views, 1 process, batch 64\n")
    print("| path | s | posters/s | x SavedModel |\n|---|---:|---:|---:|")
    print(f"| SavedModel `serving_default` (images) | {served_s:.1f} | {n / served_s:.1f} | 1.0 |")
    print(f"| cached features (`serving_features`), median of {args.repeats} | {cached_s:.2f} | "
          f"{n / cached_s:.0f} | {served_s / cached_s:.0f} |")
    print(f"\nlargest |probability difference| between the paths: {diff:.2e}")


if __name__ == "__main__":
    main()
