"""Export the whole model (backbone + head) as a self-contained SavedModel, and predict with it.

The SavedModel serves raw encoded posters: `serving_default(images: string[b])` decodes them
in the graph and cuts the recipe's views with `tasks.images` (the very functions embedding
used), runs the backbone on every view, combines the views' features as training did
(`tasks.model.combine_views`), runs the head (or the ensemble of heads) and applies the
per-label thresholds tuned on val. It returns `probabilities` float32 [b, n] and `genres`
string [b, n]: the predicted genre names, most probable first, padded with "".
`serving_images(images: float32[b, h, w, 3])` does the same from decoded posters in [0, 1]
(one size per batch; the views are cut from them). `serving_features(features: float32[b,
views, dim])` starts after the backbone, from the embedding cache's features of the recipe's
views in order (batch scoring, `tasks.score`; not for a fine-tuned head, which takes images).
Labels, thresholds, metrics and lineage
ship inside as assets, so the folder alone (with only TensorFlow installed) is enough to serve
or audit it.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.fs import atomic_write_json, exists, join, read_json, staged_dir, url_to_fs
from storage.model_export import ASSETS, SAVED_MODEL, asset_path
from tasks.images import IMAGE_SIZE, View, decode_pixels, poster_view
from tasks.model import combine_views
from tasks.train_config import Combine

if TYPE_CHECKING:
    import tensorflow as tf
    import tf_keras

    from storage.fits import SavedFit
    from tasks.evaluate import Evaluation
    from tasks.train_config import TrainConfig

log = logging.getLogger(__name__)

UNTUNED_THRESHOLD = 0.5


def code_revision() -> str:
    """`git describe` of the code that runs (with -dirty for local edits), else "unknown"."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def full_thresholds(labels: Sequence[str], thresholds: Mapping[str, float]) -> dict[str, float]:
    """A threshold for every label (0.5 where untuned); unknown names or values off [0, 1] fail."""
    unknown = sorted(set(thresholds) - set(labels))
    if unknown:
        raise ValueError(f"thresholds name labels the model does not have: {unknown}")
    bad = {k: v for k, v in thresholds.items() if not 0.0 <= float(v) <= 1.0}
    if bad:
        raise ValueError(f"thresholds must lie in [0, 1], got {bad}")
    return {name: float(thresholds.get(name, UNTUNED_THRESHOLD)) for name in labels}


class PosterModel:
    """Views of decoded posters -> probabilities: the frozen backbone on each view, then the head.

    A head that already takes images (fine-tune mode, backbone inside, full view only) is
    applied to the view as it is.
    """

    def __init__(self, backbone_handle: str, head: tf_keras.Model, views: Sequence[View],
                 combine: Combine, image_size: int = IMAGE_SIZE) -> None:
        from tasks.backbone import backbone_layer

        self.head, self.views, self.combine = head, list(views), combine
        self.image_size = image_size
        self.takes_images = len(head.inputs[0].shape) == 4
        if self.takes_images and self.views != ["full"]:
            raise ValueError("a head that takes images serves the full view only")
        self.backbone = None if self.takes_images else backbone_layer(backbone_handle)

    def __call__(self, view_pixels: tf.Tensor) -> tf.Tensor:
        """float32 [b, views, size, size, 3] in [0, 1] -> probabilities [b, labels]."""
        import tensorflow as tf

        size = self.image_size
        if self.takes_images:
            return self.head(view_pixels[:, 0], training=False)
        flat = tf.reshape(view_pixels, [-1, size, size, 3])
        features = self.backbone(flat, training=False)
        return self.from_features(tf.reshape(features, [-1, len(self.views), features.shape[-1]]))

    def from_features(self, stacked: tf.Tensor) -> tf.Tensor:
        """The backbone's features of each view [b, views, dim] -> probabilities [b, labels]."""
        return self.head(combine_views(stacked, self.combine), training=False)

    @property
    def feature_dim(self) -> int:
        """The backbone's feature size (the head's input, per view when views are concatenated)."""
        width = int(self.head.inputs[0].shape[-1])
        return width if self.combine == "mean" else width // len(self.views)


def predicted_genres(probs: tf.Tensor, thresholds: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """string [b, n]: labels with probability > threshold, most probable first, padded with ""."""
    import tensorflow as tf

    chosen = probs > thresholds
    order = tf.argsort(tf.where(chosen, probs, -1.0), axis=-1, direction="DESCENDING",
                       stable=True)
    names = tf.gather(labels, order)
    return tf.where(tf.gather(chosen, order, batch_dims=1), names, "")


def serving_module(
    model: PosterModel, labels: Sequence[str], thresholds: Sequence[float],
    asset_paths: Sequence[str],
) -> tf.Module:
    """The tf.Module that is saved: the model, its assets and the two serving signatures."""
    import tensorflow as tf

    module = tf.Module()
    module.head, module.backbone = model.head, model.backbone
    module.assets = [tf.saved_model.Asset(p) for p in asset_paths]
    label_names = tf.constant(list(labels), tf.string)
    cutoffs = tf.constant(list(thresholds), tf.float32)
    size = model.image_size
    views_spec = tf.TensorSpec([len(model.views), size, size, 3], tf.float32)

    def scores(view_pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        probs = model(view_pixels)
        return {"probabilities": probs, "genres": predicted_genres(probs, cutoffs, label_names)}

    def cut_views(pixels: tf.Tensor) -> tf.Tensor:  # [h, w, 3] in [0, 255]
        return tf.stack([poster_view(pixels, view, size) for view in model.views])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                name="images")])
    def serving_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return scores(tf.map_fn(lambda image: cut_views(image * 255.0), images,
                                fn_output_signature=views_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serving_default(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return scores(tf.map_fn(lambda data: cut_views(decode_pixels(data)), images,
                                fn_output_signature=views_spec))

    module.serving_default, module.serving_images = serving_default, serving_images
    if not model.takes_images:
        @tf.function(input_signature=[tf.TensorSpec([None, len(model.views), model.feature_dim],
                                                    tf.float32, name="features")])
        def serving_features(features: tf.Tensor) -> dict[str, tf.Tensor]:
            probs = model.from_features(features)
            return {"probabilities": probs,
                    "genres": predicted_genres(probs, cutoffs, label_names)}

        module.serving_features = serving_features
    return module


def export_model(
    out_dir: str | Path,
    *,
    backbone_handle: str,
    head: tf_keras.Model,
    labels: list[str],
    thresholds: dict[str, float],
    metrics: dict,
    lineage: dict,
    image_size: int = IMAGE_SIZE,
    views: Sequence[View] = ("full",),
    combine: Combine = "mean",
) -> str:
    """Write backbone + head + signatures + assets as one SavedModel, staged then published.

    `out_dir` is a local path or fsspec URL: TensorFlow saves into a local staging folder,
    which is renamed into place, or uploaded with `saved_model.pb` last on object stores.
    """
    import tensorflow as tf

    out = str(out_dir)
    if exists(join(out, SAVED_MODEL)):
        raise FileExistsError(f"{out} already exists: export to a new folder (models are "
                              "immutable)")
    n_out = head.outputs[0].shape[-1]
    if n_out != len(labels):
        raise ValueError(f"the head predicts {n_out} labels, but {len(labels)} label names "
                         "were given")
    cutoffs = full_thresholds(labels, thresholds)
    assets = {
        "labels": {"labels": list(labels)},
        "thresholds": cutoffs,
        "metrics": metrics,
        "lineage": {"backbone_handle": backbone_handle, "code_revision": code_revision(),
                    "exported_at": dt.datetime.now(dt.UTC).isoformat(),
                    "tensorflow_version": tf.__version__, "image_size": image_size,
                    "views": list(views), "combine": combine, **lineage},
    }
    model = PosterModel(backbone_handle, head, views, combine, image_size)
    with tempfile.TemporaryDirectory() as tmp, staged_dir(out, SAVED_MODEL) as stage:
        paths = [join(tmp, f"{name}.json") for name in ASSETS]
        for path, name in zip(paths, ASSETS, strict=True):
            atomic_write_json(path, assets[name])
        module = serving_module(model, labels, [cutoffs[n] for n in labels], paths)
        signatures = {"serving_default": module.serving_default,
                      "serving_images": module.serving_images}
        if hasattr(module, "serving_features"):
            signatures["serving_features"] = module.serving_features
        tf.saved_model.save(module, stage, signatures=signatures)
    log.info("exported %d-label model to %s", len(labels), out)
    return out


def load_model_assets(model_dir: str | Path) -> dict[str, Any]:
    """The JSON assets of an exported model: labels (list), thresholds, metrics, lineage."""
    assets = {name: read_json(asset_path(model_dir, name)) for name in ASSETS}
    assets["labels"] = assets["labels"]["labels"]
    return assets


def predict_files(model_dir: str | Path, paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Predict each image file through the model's serving signature: file, genres, probabilities.

    A file that cannot be read or decoded, or whose header declares more pixels than fetch
    accepts, yields {"file", "error"} instead of stopping the rest.
    """
    import tensorflow as tf
    from PIL import Image

    from tasks.poster_checks import MAX_PIXELS, header_size

    labels = load_model_assets(model_dir)["labels"]
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            fs, inner = url_to_fs(path)
            data = fs.cat_file(inner)
            size = header_size(data)
            if size is not None and size[0] * size[1] > MAX_PIXELS:  # before a costly decode
                results.append({"file": str(path), "error": f"{size[0]}x{size[1]} exceeds "
                                                            f"the {MAX_PIXELS:,} pixel cap"})
                continue
            out = serve(images=tf.constant([data]))
        except Image.DecompressionBombError as exc:
            results.append({"file": str(path), "error": f"over the pixel cap: {exc}"})
            continue
        except OSError as exc:
            results.append({"file": str(path), "error": f"cannot read the file: {exc}"})
            continue
        except tf.errors.InvalidArgumentError:
            results.append({"file": str(path), "error": f"not a decodable JPEG/PNG/GIF/BMP/WebP "
                                                        f"image ({len(data)} bytes)"})
            continue
        probs = out["probabilities"].numpy()[0]
        results.append({
            "file": str(path),
            "genres": [g.decode() for g in out["genres"].numpy()[0] if g],
            "probabilities": {name: round(float(p), 6) for name, p in zip(labels, probs,
                                                                          strict=True)},
        })
    return results


def export_fit(saved: SavedFit, evaluation: Evaluation, model_dir: str, config: TrainConfig, *,
               flow_run_id: str | None = None) -> str:
    """Export a fit's final model with the evaluation's thresholds and metrics as a SavedModel.

    Staged locally, then renamed into place or uploaded (`export_model`).
    """
    from storage.fits import load_head, read_fit_spec
    from tasks.fine_tune import final_model

    spec = read_fit_spec(saved.fit_dir)
    head = final_model(saved.fit_dir, spec, load_head(saved.fit_dir, spec["models"]["selected"]),
                       config)
    lineage = {"dataset_version": saved.dataset_version, "backbone_id": saved.backbone_id,
               "params": saved.params, "flow_run_id": flow_run_id}
    return export_model(model_dir, backbone_handle=config.backbone, head=head,
                        labels=list(evaluation.metrics["labels"]),
                        thresholds=evaluation.thresholds, metrics=evaluation.metrics,
                        lineage=lineage, image_size=config.image_size, views=config.views,
                        combine=config.combine)
