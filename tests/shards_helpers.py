"""Test inputs for the shards stage: a tiny catalog folder and poster store, per the contracts."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from storage.catalog import LabelVocabulary, write_catalog, write_labels
from storage.posters import PosterStore

LABELS = ["Action", "Comedy", "Drama"]
SPLIT_OF = ["train"] * 6 + ["val", "val", "test", "test"]


def jpeg(seed: int, size: tuple[int, int] = (36, 54)) -> bytes:
    """A small, distinct JPEG poster."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def genres_of(i: int) -> list[str]:
    """A deterministic, non-empty genre set for movie i."""
    return sorted({LABELS[i % 3], LABELS[(i // 3) % 3]})


def write_inputs(
    root: Path, n: int = 40, unfetched: tuple[int, ...] = (), image_size: tuple[int, int] = (36, 54)
) -> tuple[Path, Path]:
    """Write catalogs/<hash>/{catalog.parquet,labels.json} and posters/ for n movies.

    Movies whose position is in `unfetched` get no poster (as if their fetch failed).
    """
    catalog_dir = root / "catalogs" / "0123456789abcdef"
    catalog_dir.mkdir(parents=True)
    ids = [100_000 + i for i in range(n)]
    write_catalog(catalog_dir, pd.DataFrame({
        "row_number": np.arange(1, n + 1, dtype=np.int64),
        "imdb_id": np.array(ids, np.int64),
        "genres": [genres_of(i) for i in range(n)],
        "poster_url": [f"http://127.0.0.1:1/{m}.jpg" for m in ids],
        "split": [SPLIT_OF[i % len(SPLIT_OF)] for i in range(n)],
        "title": [f"Movie {m}" for m in ids],
        "score": [5.0] * n,
        "imdb_link": [f"http://www.imdb.com/title/tt{m:07d}" for m in ids],
    }))
    counts = {g: sum(g in genres_of(i) for i in range(n)) for g in LABELS}
    write_labels(catalog_dir, LabelVocabulary(LABELS, counts, {}, min_count=1, movies=n))
    (root / "posters").mkdir()
    store = PosterStore(root / "posters")
    index = []
    for i, imdb_id in enumerate(ids):
        if i in unfetched:
            continue
        data = jpeg(i, image_size)
        index.append({"imdb_id": imdb_id, "url": f"http://127.0.0.1:1/{imdb_id}.jpg",
                      "sha256": store.put(data), "bytes": len(data), "width": image_size[0],
                      "height": image_size[1], "format": "jpeg",
                      "fetched_at": datetime(2026, 1, 1, tzinfo=UTC)})
    store.append_index(index)
    store.compact_index()
    return catalog_dir, root / "posters"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), for "nothing changed" checks."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
