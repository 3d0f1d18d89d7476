"""The image backbone: resolve a TF Hub / Kaggle handle or a local SavedModel, and a stand-in.

A backbone is any TF Hub-style image feature-vector SavedModel: float32 [b, size, size, 3]
in [0, 1] -> float32 [b, dim]. Remote handles are downloaded once by `tensorflow_hub` into
its cache (``TFHUB_CACHE_DIR`` is honoured); local folders are used in place. Tests and the
demo use `build_standin_backbone`, a small random-weight model with the same contract, so
nothing ever downloads in CI.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow_hub as hub

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/4"
KAGGLE_MODELS = "https://www.kaggle.com/models/"
REMOTE_SCHEMES = ("http://", "https://", "gs://")  # what `tensorflow_hub` downloads
# Names of the numbered blocks of MobileNetV2 variables: Keras ("block_16_project") and
# TF-slim / TF Hub ("expanded_conv_16/project").
_BLOCK = re.compile(r"(?:block_|expanded_conv_)(\d+)")


def import_hub() -> Any:
    """`tensorflow_hub`, imported without setuptools' pkg_resources deprecation notice.

    tensorflow-hub 0.16 imports `pkg_resources` at import time; setuptools 80.9+ (within our
    `setuptools<81` pin) warns about that on every start, which is not the user's to act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        import tensorflow_hub

    return tensorflow_hub


class BackboneUnavailableError(RuntimeError):
    """The backbone handle cannot be resolved (offline and not cached, or not a SavedModel)."""


def _is_saved_model_dir(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a folder holding a SavedModel."""
    return (Path(path) / "saved_model.pb").is_file()


def _as_url(handle: str) -> str:
    """A handle as a URL `tensorflow_hub` downloads: Kaggle Models handles get their prefix."""
    if "://" in handle or handle.startswith("/"):
        return handle
    if handle.count("/") >= 4:  # owner/model/framework/variation/version
        return KAGGLE_MODELS + handle
    return handle


def is_remote(handle: str) -> bool:
    """True for a handle `tensorflow_hub` downloads (http(s)://, gs://, Kaggle Models)."""
    return _as_url(handle).startswith(REMOTE_SCHEMES) and not Path(handle).exists()


def _local_folder(path: str) -> str:
    """A local backbone folder, checked: it must exist and hold a SavedModel."""
    folder = Path(path)
    where = path if folder.is_absolute() else f"{path}, i.e. {folder.resolve()}"
    local = "a local path: nothing is downloaded"
    if not folder.exists():
        raise BackboneUnavailableError(f"backbone folder not found: {where} ({local})")
    if not _is_saved_model_dir(folder):
        raise BackboneUnavailableError(
            f"backbone {where} holds no saved_model.pb: not a SavedModel folder ({local})")
    return str(folder.resolve())


def resolve_backbone(handle_or_path: str) -> str:
    """A local SavedModel folder for a handle: the folder itself, or the TF Hub cache copy."""
    if not is_remote(handle_or_path):
        return _local_folder(handle_or_path)
    hub = import_hub()
    url = _as_url(handle_or_path)
    try:
        path = hub.resolve(url)
    except (OSError, ValueError) as exc:
        raise BackboneUnavailableError(
            f"cannot download backbone {url!r} ({exc}). Offline, point at a local copy of a "
            "feature-vector SavedModel, e.g. --backbone "
            "../shared/backbones/mobilenet_v2_100_224_feature_vector, or set TFHUB_CACHE_DIR "
            "to a TF Hub cache that holds it."
        ) from exc
    log.info("backbone %s resolved to %s", url, path)
    return str(path)


def backbone_layer(handle: str, trainable: bool = False) -> hub.KerasLayer:
    """The backbone as a tf_keras layer (`tensorflow_hub.KerasLayer`)."""
    hub = import_hub()
    return hub.KerasLayer(resolve_backbone(handle), trainable=trainable, name="backbone")


def _content_hash(folder: Path) -> str:
    """sha256 over the relative paths and bytes of every file in a SavedModel folder."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        if file.name == "fingerprint.pb":  # written at save time; not part of the model
            continue
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def backbone_id(handle: str) -> str:
    """A stable, readable id for the embedding cache folder: `<name>-<hash12>`.

    Local folders are named by their content (a retrained copy gets a new id); remote
    handles by the handle itself (TF Hub and Kaggle versions are immutable).
    """
    if _is_saved_model_dir(handle):
        folder = Path(handle).resolve()
        name, digest = folder.name, _content_hash(folder)
    else:
        url = _as_url(handle).rstrip("/")
        parts = [p for p in url.split("/") if p]
        name = "_".join(parts[-3:-1]) if parts[-1].isdigit() else parts[-1]
        digest = hashlib.sha256(url.encode()).hexdigest()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "backbone"
    return f"{name}-{digest[:12]}"


def block_index(variable_name: str) -> int | None:
    """The MobileNetV2 block number a variable belongs to, None outside numbered blocks."""
    match = _BLOCK.search(variable_name)
    return int(match.group(1)) if match else None


# He initialisation keeps a random ReLU network's activations at a usable scale (the Glorot
# default shrinks them ~10x per block, leaving features too small for a head to learn from).
HE = "he_normal"


def build_standin_backbone(
    path: str | os.PathLike[str], output_dim: int = 1280, image_size: int = 224, seed: int = 0
) -> Path:
    """Save a small random-weight MobileNetV2-shaped feature-vector SavedModel at `path`.

    Same contract as the real backbone (float32 [b, size, size, 3] in [0, 1] -> [b, dim]),
    same block names (``block_<i>_...``), a handful of inverted-residual blocks: fast on CPU.
    """
    import tensorflow as tf
    import tf_keras
    from tf_keras import layers

    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((image_size, image_size, 3), name="inputs")
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = layers.Conv2D(8, 3, strides=4, padding="same", use_bias=False, name="Conv1",
                      kernel_initializer=HE)(x)
    x = layers.BatchNormalization(name="bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for i, (channels, stride) in enumerate([(8, 1), (16, 2), (16, 1), (24, 2)], start=1):
        x = _inverted_residual(x, i, channels, stride)
    x = layers.Conv2D(output_dim, 1, use_bias=False, name="Conv_1", kernel_initializer=HE)(x)
    x = layers.BatchNormalization(name="Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    # Random weights give tiny, nearly equal features; normalising each vector to unit
    # variance leaves the differences between posters large enough for a head to learn.
    outputs = layers.LayerNormalization(center=False, scale=False, name="feature_vector")(x)
    model = tf_keras.Model(inputs, outputs, name="standin_mobilenet_v2")
    tf.saved_model.save(model, str(path))
    return Path(path)


def _inverted_residual(x: Any, index: int, channels: int, stride: int, expansion: int = 4) -> Any:
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project (+ residual)."""
    from tf_keras import layers

    name = f"block_{index}_"
    y = layers.Conv2D(x.shape[-1] * expansion, 1, use_bias=False, name=name + "expand",
                      kernel_initializer=HE)(x)
    y = layers.BatchNormalization(name=name + "expand_BN")(y)
    y = layers.ReLU(6.0, name=name + "expand_relu")(y)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=name + "depthwise", depthwise_initializer=HE)(y)
    y = layers.BatchNormalization(name=name + "depthwise_BN")(y)
    y = layers.ReLU(6.0, name=name + "depthwise_relu")(y)
    y = layers.Conv2D(channels, 1, use_bias=False, name=name + "project",
                      kernel_initializer=HE)(y)
    y = layers.BatchNormalization(name=name + "project_BN")(y)
    if stride == 1 and x.shape[-1] == channels:
        y = layers.Add(name=name + "add")([x, y])
    return y
