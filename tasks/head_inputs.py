"""The head's inputs: each split's cached view features, combined as the recipe says.

Labels come from the shards (`storage.shard_reader.split_labels`), features from the
embedding cache (`storage.embeddings`), which must hold them (`tasks.embed`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from storage.shard_reader import split_labels
from tasks.model import combine_views, view_examples
from tasks.train_config import Combine, TrainConfig
from tasks.views import View

Split = tuple[np.ndarray, np.ndarray]  # (features or images, labels)


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


class UnlabelledPostersError(ValueError):
    """Training posters without any genre: the dataset was ingested for scoring."""


def require_labels(dataset_dir: str, split: str, y: np.ndarray) -> None:
    """Refuse a split with posters that carry no genre: they would teach (or score) that
    every genre is absent."""
    unlabelled = int((y.sum(axis=1) == 0).sum()) if y.size else len(y)
    if unlabelled:
        raise UnlabelledPostersError(
            f"{unlabelled} of {len(y)} {split} posters of {dataset_dir} have no genre (a "
            "dataset ingested for scoring, catalog.unlabelled 'keep'): train on a dataset "
            "ingested with catalog.unlabelled 'reject'")


def head_inputs(dataset_dir: str, backbone: str, config: TrainConfig,
                splits: Sequence[str] = ("train", "val", "test"),
                ) -> tuple[dict[str, Split], np.ndarray | None]:
    """Each split's (head inputs, labels) from the cache, and the flipped training inputs.

    `config` must be `resolved` (its cache root known). With `view_examples` the training
    split has one row per poster and view.
    """
    inputs: dict[str, Split] = {}
    alternate = None
    for split in splits:
        shas, y = split_labels(dataset_dir, split)
        require_labels(dataset_dir, split, y)
        stacked = view_features(config.cache_root, backbone, shas, config.views)
        inputs[split] = (model_inputs(stacked, config.combine), y)
        if split == "train" and config.view_examples:
            inputs[split] = view_examples(stacked, y)
        if split == "train" and config.flip_augment:
            flip = view_features(config.cache_root, backbone, shas, ["flip"])[:, 0]
            alternate = flipped_inputs(stacked, flip, config.views, config.combine)
    return inputs, alternate
