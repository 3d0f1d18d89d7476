"""The head's inputs: each split's cached view features, combined as the recipe says.

Labels come from the shards (`storage.shard_reader.split_labels`), features from the
embedding cache (`storage.embeddings`), which must hold them (`tasks.embed`). The training
split is the large one (one row per poster and view with `view_examples`), so it is not
held in memory: `training_inputs` copies its features once, in the split's order, to a local
scratch file, and each epoch streams them back in chunks. Val and test are held combined
(one row per poster).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from storage.shard_reader import split_labels
from tasks.model import combine_views, view_examples
from tasks.train_config import Combine, TrainConfig
from tasks.views import View

Split = tuple[np.ndarray, np.ndarray]  # (features or images, labels)
# Posters per chunk read back from the scratch file: 512 x 7 views x 1,280 floats = 18 MiB,
# small beside the split, large enough that the Python generator costs nothing per row.
CHUNK_POSTERS = 512


class UnlabelledPostersError(ValueError):
    """Training posters without any genre: the dataset was ingested for scoring."""


@dataclass(frozen=True)
class TrainingRows:
    """The training examples as chunks, read anew from the start each epoch.

    `chunks()` yields (inputs [k, input_dim], labels [k, n_labels]), or with
    `has_alternate` (inputs, alternate inputs, labels): in the same order every time, so a
    seeded shuffle gives the same batches as the rows held in one array.
    """

    chunks: Callable[[], Iterator[tuple[np.ndarray, ...]]]
    rows: int
    input_dim: int
    n_labels: int
    has_alternate: bool = False

    @classmethod
    def of_arrays(cls, x: np.ndarray, y: np.ndarray, alternate: np.ndarray | None = None
                  ) -> TrainingRows:
        """Rows held in memory as one chunk (small inputs: tests, benchmarks' sweeps)."""
        chunk = (x, y) if alternate is None else (x, alternate, y)
        return cls(lambda: iter([chunk]), len(x), int(x.shape[1]), int(y.shape[1]),
                   alternate is not None)


def require_labels(dataset_dir: str, split: str, y: np.ndarray) -> None:
    """Refuse a split with posters that carry no genre: they would teach (or score) that
    every genre is absent."""
    unlabelled = int((y.sum(axis=1) == 0).sum()) if y.size else len(y)
    if unlabelled:
        raise UnlabelledPostersError(
            f"{unlabelled} of {len(y)} {split} posters of {dataset_dir} have no genre (a "
            "dataset ingested for scoring, catalog.unlabelled 'keep'): train on a dataset "
            "ingested with catalog.unlabelled 'reject'")


def view_features(cache_root: str, backbone: str, shas: Sequence[str], views: Sequence[View]
                  ) -> np.ndarray:
    """Cached features of the posters, float32 [n, views, dim], in the order asked."""
    from storage.embeddings import EmbeddingCache

    return np.stack([EmbeddingCache(cache_root, backbone, view).read(shas) for view in views],
                    axis=1)


def model_inputs(stacked: np.ndarray, combine: Combine) -> np.ndarray:
    """The head's input from per-view features [n, views, dim] (`tasks.model.combine_views`)."""
    return combine_views(stacked, combine).numpy()


def flipped_inputs(stacked: np.ndarray, flip: np.ndarray, views: Sequence[View],
                   combine: Combine) -> np.ndarray:
    """The head's input with the mirrored poster's features in the 'full' view's place."""
    swapped = stacked.copy()
    swapped[:, list(views).index("full")] = flip
    return model_inputs(swapped, combine)


def head_inputs(dataset_dir: str, backbone: str, config: TrainConfig,
                splits: Sequence[str] = ("val", "test")) -> dict[str, Split]:
    """Each split's (head inputs, labels) from the cache, one row per poster, in memory.

    The views are combined chunk by chunk from a scratch copy, so memory holds the
    combined inputs, not every view's. `config` must be `resolved` (its cache root known).
    For the training split's examples see `training_inputs`.
    """
    inputs: dict[str, Split] = {}
    with tempfile.TemporaryDirectory(prefix="posterflow-inputs-") as scratch:
        for split in splits:
            shas, y = split_labels(dataset_dir, split)
            require_labels(dataset_dir, split, y)
            stacked = write_stacked(os.path.join(scratch, f"{split}.f32"), config.cache_root,
                                    backbone, shas, config.views)
            chunks = [model_inputs(views, config.combine)
                      for views in stacked_chunks(stacked, CHUNK_POSTERS)]
            width = input_width(stacked.dim, config, per_view=False)
            inputs[split] = (np.concatenate(chunks) if chunks else
                             np.zeros((0, width), np.float32), y)
    return inputs


def input_width(dim: int, config: TrainConfig, *, per_view: bool) -> int:
    """The head's input width: one view's features (per-view examples, or their mean), or
    every view's side by side (concat)."""
    return dim if per_view or config.combine == "mean" else dim * len(config.views)


@contextmanager
def training_inputs(dataset_dir: str, backbone: str, config: TrainConfig,
                    chunk_posters: int = CHUNK_POSTERS) -> Iterator[TrainingRows]:
    """The training split's examples, streamed from a local scratch copy of its features
    (removed on exit): memory holds one chunk and one cache part, not the split.

    With `view_examples` one example per poster and view, else per poster (with the
    mirrored poster as alternate under `flip_augment`). `config` must be `resolved`.
    """
    shas, y = split_labels(dataset_dir, "train")
    require_labels(dataset_dir, "train", y)
    with tempfile.TemporaryDirectory(prefix="posterflow-train-") as scratch:
        stacked = write_stacked(os.path.join(scratch, "views.f32"), config.cache_root,
                                backbone, shas, config.views)
        flip = (write_stacked(os.path.join(scratch, "flip.f32"), config.cache_root, backbone,
                              shas, ["flip"]) if config.flip_augment else None)

        def chunks() -> Iterator[tuple[np.ndarray, ...]]:
            flips = stacked_chunks(flip, chunk_posters) if flip else None
            for start, views in zip(range(0, len(shas), chunk_posters),
                                    stacked_chunks(stacked, chunk_posters), strict=True):
                labels = y[start:start + len(views)]
                if config.view_examples:
                    yield view_examples(views, labels)
                elif flips is not None:
                    mirrored = next(flips)[:, 0]
                    yield (model_inputs(views, config.combine),
                           flipped_inputs(views, mirrored, config.views, config.combine), labels)
                else:
                    yield model_inputs(views, config.combine), labels

        width = input_width(stacked.dim, config, per_view=config.view_examples)
        rows = len(shas) * (len(config.views) if config.view_examples else 1)
        yield TrainingRows(chunks, rows, width, int(y.shape[1]),
                           has_alternate=flip is not None)


@dataclass(frozen=True)
class StackedFile:
    """float32 [posters, views, dim] in row-major order, in a local file."""

    path: str
    posters: int
    views: int
    dim: int


def write_stacked(path: str, cache_root: str, backbone: str, shas: Sequence[str],
                  views: Sequence[View]) -> StackedFile:
    """Copy the posters' cached features of each view to `path`, in the order of `shas`
    (a poster listed twice is written twice), one cache part in memory at a time."""
    import pandas as pd

    from storage.embeddings import EmbeddingCache

    codes, unique = pd.factorize(pd.Index(list(shas), dtype=object))
    order = np.argsort(codes, kind="stable")  # positions of each unique poster, grouped
    bounds = np.searchsorted(codes[order], np.arange(len(unique) + 1))
    dim = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for j, view in enumerate(views):
            for ids, vectors in EmbeddingCache(cache_root, backbone, view).scan(list(unique)):
                dim = vectors.shape[1]
                for i, vector in zip(ids, vectors, strict=True):
                    data = np.ascontiguousarray(vector, np.float32).tobytes()
                    for position in order[bounds[i]:bounds[i + 1]]:
                        os.pwrite(fd, data, (int(position) * len(views) + j) * dim * 4)
    finally:
        os.close(fd)
    return StackedFile(path, len(shas), len(views), dim)


def stacked_chunks(stacked: StackedFile, chunk_posters: int) -> Iterator[np.ndarray]:
    """The file's rows back as float32 [k, views, dim] chunks of up to `chunk_posters`."""
    with open(stacked.path, "rb") as f:
        for start in range(0, stacked.posters, chunk_posters):
            k = min(chunk_posters, stacked.posters - start)
            yield np.fromfile(f, np.float32, k * stacked.views * stacked.dim).reshape(
                k, stacked.views, stacked.dim)
