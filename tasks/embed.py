"""Embed a dataset's posters once per (poster sha256, backbone, view) into the embedding cache.

The frozen backbone is the expensive part of training (about 99% of the seed's compute), and
its output for a poster never changes, so it runs once per poster and view instead of once
per epoch. For each view, records stream from the shards, posters that view's cache already
holds (or that were seen earlier in this run) are skipped before decoding, and features are
written in parts of `part_size` posters, so memory stays flat and a killed run keeps the
parts it finished. Views are embedded one after another: a view added to the recipe later
costs only its own pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from storage.embeddings import EmbeddingCache
from storage.fs import join
from tasks.backbone import backbone_id, backbone_layer
from tasks.images import IMAGE_SIZE, View, decode_pixels, poster_view
from tasks.progress_log import ProgressLog

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

EmbedProgress = Callable[[int, int], None]  # (records done, records x views to go through)


@dataclass(frozen=True)
class EmbedResult:
    """Where the features are and how many (poster, view) pairs this run embedded."""

    cache_dir: str  # <root>/<backbone_id>: one sub-folder per view
    backbone_id: str
    records: int
    embedded: int
    reused: int
    views: tuple[View, ...] = ("full",)


def in_part(sha256: str, part: int, parts: int) -> bool:
    """Whether a poster belongs to part `part` of `parts`: by its content hash, so a poster
    shared by two splits (or datasets) is always embedded by the same part."""
    return parts == 1 or int(sha256[:8], 16) % parts == part


def merge_results(results: Sequence[EmbedResult]) -> EmbedResult:
    """The parts' results as one: same cache and views, counts summed."""
    first = results[0]
    return EmbedResult(first.cache_dir, first.backbone_id, sum(r.records for r in results),
                       sum(r.embedded for r in results), sum(r.reused for r in results),
                       first.views)


def _new_posters(splits: list[tf.data.Dataset], known: set[str], on_record: Callable[[], None],
                 part: int = 0, parts: int = 1) -> Iterator[tuple[bytes, bytes]]:
    """(sha256, encoded image) of each poster of the part not in `known`, each once, across
    splits."""
    seen = set(known)
    for records in splits:
        for record in records.as_numpy_iterator():
            sha = record["sha256"].decode()
            if not in_part(sha, part, parts):
                continue
            on_record()
            if sha not in seen:
                seen.add(sha)
                yield record["sha256"], record["image"]


def embed_dataset(
    dataset_dir: str,
    embeddings_root: str,
    backbone: str,
    *,
    views: Sequence[View] = ("full",),
    batch_size: int = 64,
    part_size: int = 4096,
    image_size: int = IMAGE_SIZE,
    progress: EmbedProgress | None = None,
    part: int = 0,
    parts: int = 1,
) -> EmbedResult:
    """Compute and cache, for each view, the features of every poster its cache lacks (of
    part `part` of `parts` only: `in_part`; each part writes cache parts of its own)."""
    import tensorflow as tf

    from storage.datasets import load_dataset_info
    from storage.shard_reader import read_records

    info = load_dataset_info(dataset_dir)
    splits = sorted(info.splits)
    bid = backbone_id(backbone)
    layer = backbone_layer(backbone)
    # Opened (and verified) once, outside the generator, which runs on a TensorFlow thread;
    # each view's pass iterates them again.
    split_records = [read_records(dataset_dir, split) for split in splits]
    records = int(sum(info.splits.values())) if parts == 1 else sum(
        in_part(sha.decode(), part, parts) for split in split_records
        for sha in split.map(lambda r: r["sha256"]).as_numpy_iterator())
    counter = [0]
    report = ProgressLog(log, "embedding", records * len(views), "poster-views")

    def on_record() -> None:  # on a TensorFlow thread: no logging here (no Prefect context)
        counter[0] += 1
        if progress is not None:
            progress(counter[0], records * len(views))

    embedded = 0
    for view in views:
        cache = EmbeddingCache(embeddings_root, bid, view)
        known = cache.known()
        images = tf.data.Dataset.from_generator(
            lambda known=known: _new_posters(split_records, known, on_record, part, parts),
            output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string)),
        ).map(lambda sha, image, view=view: (sha, poster_view(decode_pixels(image), view,
                                                              image_size)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches = images.batch(batch_size).prefetch(2)
        for shas, vectors in _parts(batches, layer, part_size, lambda: report(counter[0])):
            cache.write(shas, vectors)
            embedded += len(shas)
    total = records * len(views)
    log.info("%d records x %d views, %d embedded, %d reused from %s", records, len(views),
             embedded, total - embedded, join(embeddings_root, bid))
    return EmbedResult(join(embeddings_root, bid), bid, records, embedded, total - embedded,
                       tuple(views))


def _parts(batches: Any, layer: Any, part_size: int, on_batch: Callable[[], None]
           ) -> Iterator[tuple[list[str], np.ndarray]]:
    """Run the backbone over batches and group its outputs into parts of ~part_size posters;
    `on_batch` after each batch (in the caller's thread)."""
    shas: list[str] = []
    vectors: list[np.ndarray] = []
    for sha_batch, image_batch in batches:
        vectors.append(layer(image_batch, training=False).numpy())
        on_batch()
        shas.extend(s.decode() for s in sha_batch.numpy())
        if len(shas) >= part_size:
            yield shas, np.concatenate(vectors)
            shas, vectors = [], []
    if shas:
        yield shas, np.concatenate(vectors)
