"""One-poster predict latency through the exported SavedModel vs a bare backbone forward.

Exports a model (the real backbone + a seeded random head: latency does not depend on the
head's weights) and times, on the same real posters, interleaved call by call so machine
noise hits all three alike:
  served bytes   `serving_default` on one encoded JPEG (decode, resize, backbone, head, thresholds)
  served pixels  `serving_images` on one decoded [1, 224, 224, 3] image
  bare backbone  the backbone SavedModel alone on the same decoded image (the baseline)
Prints p50 / p95 in milliseconds and each median's ratio to the baseline's.

    .venv/bin/python benchmarks/predict.py [--backbone DIR] [--posters DIR] [--calls 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
BACKBONE = SHARED / "backbones" / "mobilenet_v2_100_224_feature_vector"
POSTERS = SHARED / "data" / "posters-dev" / "posters"
N_LABELS = 15  # the kept genres of posters-dev


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    p50, p95 = np.percentile(np.asarray(samples) * 1e3, [50, 95])
    return float(p50), float(p95)


def main() -> None:
    """Export, warm up, time the three paths interleaved, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", type=Path, default=BACKBONE)
    parser.add_argument("--posters", type=Path, default=POSTERS)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    import tensorflow as tf
    import tf_keras

    from tasks.export import export_model
    from tasks.images import decode_image
    from tasks.model import build_head

    files = sorted(args.posters.glob("*.jpg"))[: args.calls]
    if not files:
        raise SystemExit(f"no *.jpg posters in {args.posters}")
    posters = [f.read_bytes() for f in files]
    tf_keras.utils.set_random_seed(0)
    labels = [f"genre_{i:02d}" for i in range(N_LABELS)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = export_model(Path(tmp) / "model", backbone_handle=str(args.backbone),
                                 head=build_head(N_LABELS), labels=labels, thresholds={},
                                 metrics={}, lineage={"benchmark": "predict"})
        served = tf.saved_model.load(str(model_dir))
        backbone = tf.saved_model.load(str(args.backbone))
        pixels = [decode_image(tf.constant(p))[tf.newaxis] for p in posters]
        paths = {
            "served bytes": lambda i: served.signatures["serving_default"](
                images=tf.constant([posters[i]])),
            "served pixels": lambda i: served.signatures["serving_images"](images=pixels[i]),
            "bare backbone": lambda i: backbone(pixels[i]),
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(args.warmup):
            for call in paths.values():
                call(i % len(posters))
        for i in range(len(posters)):
            for name, call in paths.items():
                start = time.perf_counter()
                out = call(i)
                _ = [t.numpy() for t in (out.values() if isinstance(out, dict) else [out])]
                times[name].append(time.perf_counter() - start)

    base_p50 = percentiles(times["bare backbone"])[0]
    print(f"one-poster predict latency: {len(posters)} real posters, batch 1, "
          f"TensorFlow {tf.__version__}, CPU")
    print(f"{'path':<16}{'p50 ms':>10}{'p95 ms':>10}{'p50 / backbone':>17}")
    for name, samples in times.items():
        p50, p95 = percentiles(samples)
        print(f"{name:<16}{p50:>10.2f}{p95:>10.2f}{p50 / base_p50:>16.2f}x")


if __name__ == "__main__":
    main()
