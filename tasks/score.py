"""Batch scoring: genre probabilities of a dataset version's posters by a registered model.

A poster whose features the embedding cache holds for the model's backbone and each of its
views is scored by the head alone (the export's `serving_features`: no backbone pass); the
others go through `serving_default` on their encoded bytes. Both run the same head after
the same backbone, so their probabilities agree to float tolerance (tests check 1e-4).

Output (`storage.scores`): Parquet parts with `imdb_id`, `sha256`, `split`, `genres`
(predicted, most probable first), `probabilities` (one per label, the model's label order)
and `scored_from` ("features" or "images"); the model's name, version, labels and lineage
are in the folder's `_scores.json`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from storage.embeddings import EmbeddingCache
from storage.fs import exists, url_to_fs
from storage.scores import part_path, write_part

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

FEATURES, IMAGES = "features", "images"


@dataclass(frozen=True)
class ScoredPart:
    """One written part: its path and how many posters came from cached features or images."""

    path: str
    rows: int
    from_features: int
    from_images: int


@dataclass(frozen=True)
class Posters:
    """The posters of one part: ids, content hashes, splits and encoded bytes, in order."""

    imdb_ids: list[int]
    sha256s: list[str]
    splits: list[str]
    images: list[bytes]


def read_part(dataset_dir: str, splits: list[str], part: int, parts: int) -> Posters:
    """Every `parts`-th record of the splits (from `part`), in the records' order."""
    from storage.shard_reader import read_records

    ids, shas, names, images = [], [], [], []
    index = 0
    for split in splits:
        for record in read_records(dataset_dir, split).as_numpy_iterator():
            if index % parts == part:
                ids.append(int(record["imdb_id"]))
                shas.append(record["sha256"].decode())
                names.append(split)
                images.append(bytes(record["image"]))
            index += 1
    return Posters(ids, shas, names, images)


def cached_features(embeddings_root: str, backbone_id: str, views: list[str],
                    sha256s: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the posters cached in every view [n], their features [cached, views, dim])."""
    caches = [EmbeddingCache(embeddings_root, backbone_id, view) for view in views]
    known = set(sha256s)
    for cache in caches:
        known &= cache.known()
    mask = np.array([sha in known for sha in sha256s], bool)
    wanted = [sha for sha, hit in zip(sha256s, mask, strict=True) if hit]
    if not wanted:
        return mask, np.zeros((0, len(views), 0), np.float32)
    return mask, np.stack([cache.read(wanted) for cache in caches], axis=1)


def _batched(signature: Any, name: str, inputs: np.ndarray | list[bytes], batch_size: int
             ) -> tuple[np.ndarray, list[list[str]]]:
    """Run a serving signature over inputs in batches: (probabilities, genres per poster)."""
    import tensorflow as tf

    probs, genres = [], []
    for start in range(0, len(inputs), batch_size):
        out = signature(**{name: tf.constant(inputs[start:start + batch_size])})
        probs.append(out["probabilities"].numpy())
        genres += [[g.decode() for g in row if g] for row in out["genres"].numpy()]
    return np.concatenate(probs) if probs else np.zeros((0, 0), np.float32), genres


def score_posters(model: Any, posters: Posters, embeddings_root: str, lineage: dict[str, Any],
                  batch_size: int = 64) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """(probabilities [n, labels], genres per poster, mask of those scored from features)."""
    signatures = model.signatures
    mask = np.zeros(len(posters.sha256s), bool)
    if "serving_features" in signatures and lineage.get("backbone_id"):
        mask, features = cached_features(embeddings_root, lineage["backbone_id"],
                                         list(lineage["views"]), posters.sha256s)
    n = len(posters.sha256s)
    labels = int(signatures["serving_default"].structured_outputs["probabilities"].shape[-1])
    probs, genres = np.zeros((n, labels), np.float32), [[] for _ in range(n)]
    if mask.any():
        p, g = _batched(signatures["serving_features"], "features", features, batch_size)
        probs[mask] = p
        for i, row in zip(np.flatnonzero(mask), g, strict=True):
            genres[i] = row
    rest = np.flatnonzero(~mask)
    if len(rest):
        p, g = _batched(signatures["serving_default"], "images",
                        [posters.images[i] for i in rest], batch_size)
        probs[rest] = p
        for i, row in zip(rest, g, strict=True):
            genres[i] = row
    return probs, genres, mask


def scores_table(posters: Posters, probs: np.ndarray, genres: list[list[str]],
                 from_features: np.ndarray) -> pa.Table:
    """The part's rows as an Arrow table (the layout `storage.scores` documents)."""
    import pyarrow as pa

    width = probs.shape[1]
    return pa.table({
        "imdb_id": pa.array(posters.imdb_ids, pa.int64()),
        "sha256": pa.array(posters.sha256s, pa.string()),
        "split": pa.array(posters.splits, pa.string()),
        "genres": pa.array(genres, pa.list_(pa.string())),
        "probabilities": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(probs, np.float32).ravel()), width),
        "scored_from": pa.array([FEATURES if hit else IMAGES for hit in from_features],
                                pa.string()),
    })


def score_part(model_dir: str, dataset_dir: str, splits: list[str], part: int, parts: int,
               embeddings_root: str, out_dir: str, batch_size: int = 64) -> ScoredPart:
    """Score one part of a dataset version with the exported model in `model_dir` (local).

    A part an earlier (killed) run wrote is kept: parts are immutable and deterministic.
    """
    import tensorflow as tf

    from tasks.export import load_model_assets

    if exists(part_path(out_dir, part)):
        kept = _written_part(part_path(out_dir, part))
        log.info("part %d of %d was scored by an earlier run: kept", part + 1, parts)
        return kept

    lineage = load_model_assets(model_dir)["lineage"]
    posters = read_part(dataset_dir, splits, part, parts)
    model = tf.saved_model.load(model_dir)
    probs, genres, mask = score_posters(model, posters, embeddings_root, lineage, batch_size)
    path = write_part(out_dir, part, scores_table(posters, probs, genres, mask))
    hits = int(mask.sum())
    log.info("scored part %d of %d: %d posters (%d from cached features, %d from images)",
             part + 1, parts, len(mask), hits, len(mask) - hits)
    return ScoredPart(path, len(mask), hits, len(mask) - hits)


def _written_part(path: str) -> ScoredPart:
    """The counts of a part already on the store (read from its `scored_from` column)."""
    import pyarrow.parquet as pq

    fs, inner = url_to_fs(path)
    with fs.open(inner, "rb") as f:
        sources = pq.read_table(f, columns=["scored_from"]).column("scored_from").to_pylist()
    hits = sources.count(FEATURES)
    return ScoredPart(path, len(sources), hits, len(sources) - hits)
