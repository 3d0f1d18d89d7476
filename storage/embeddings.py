"""The embedding cache: backbone features by (poster sha256, backbone id, view), as Parquet parts.

Layout: `<root>/<backbone_id>/<view>/part-<hash>.parquet` (a view is a crop of the poster,
`tasks.images.View`), columns `sha256` string and `embedding`
fixed_size_list<float32>[dim]. Parts are immutable and written atomically; a part is named
by the hash of its sha256 list, so rewriting the same posters is a no-op. A rerun with a few
new posters adds one small part. Readers take the union of the parts (first copy of a
duplicated sha256 wins: any copy is the same backbone on the same bytes).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence

import numpy as np

from storage.fs import atomic_write_parquet, exists, join, url_to_fs

log = logging.getLogger(__name__)

SHA256 = "sha256"
EMBEDDING = "embedding"


class MissingEmbeddingsError(KeyError):
    """Some requested posters are not in the cache."""


class EmbeddingCache:
    """Features of one backbone and view by poster sha256, in `<root>/<backbone_id>/<view>/`."""

    def __init__(self, root: str, backbone_id: str, view: str = "full") -> None:
        self.root = str(root)
        self.backbone_id = backbone_id
        self.view = view
        self.folder = join(self.root, backbone_id, view)
        self._fs, self._dir = url_to_fs(self.folder)

    def parts(self) -> list[str]:
        """Part paths inside the cache's filesystem, sorted (temp files are not parts)."""
        if not self._fs.exists(self._dir):
            return []
        return sorted(self._fs.glob(f"{self._dir}/part-*.parquet"))

    def known(self) -> set[str]:
        """sha256 of every cached poster (reads only that column)."""
        import pyarrow.parquet as pq

        shas: set[str] = set()
        for part in self.parts():
            with self._fs.open(part, "rb") as f:
                shas.update(pq.read_table(f, columns=[SHA256]).column(SHA256).to_pylist())
        return shas

    def write(self, sha256s: Sequence[str], embeddings: np.ndarray) -> str:
        """Store one part atomically and return its path; the same posters again are a no-op."""
        import pyarrow as pa

        vectors = np.ascontiguousarray(embeddings, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(sha256s):
            raise ValueError(f"expected embeddings [{len(sha256s)}, dim], got {vectors.shape}")
        name = hashlib.sha256("\n".join(sha256s).encode()).hexdigest()[:16]
        path = join(self.folder, f"part-{name}.parquet")
        if exists(path):
            return path
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
        atomic_write_parquet(path, pa.table({SHA256: pa.array(list(sha256s), pa.string()),
                                             EMBEDDING: column}))
        log.debug("wrote %d embeddings to %s", len(sha256s), path)
        return path

    def read(self, sha256s: Sequence[str]) -> np.ndarray:
        """float32 [len(sha256s), dim] in the order asked; missing posters raise.

        The parts are scanned one at a time for the rows asked: memory is the answer plus
        one part, however many posters the cache holds."""
        import pandas as pd

        codes, unique = pd.factorize(pd.Index(list(sha256s), dtype=object))
        vectors: np.ndarray | None = None
        for ids, found in self.scan(list(unique)):
            if vectors is None:
                vectors = np.empty((len(unique), found.shape[1]), np.float32)
            vectors[ids] = found
        return np.zeros((0, 0), np.float32) if vectors is None else vectors[codes]

    def scan(self, sha256s: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in `sha256s`, their vectors [k, dim]) part by part, each position once
        (the first part holding a poster wins: any copy is the same backbone on the same
        bytes). `sha256s` must not repeat. Posters no part holds raise at the end."""
        import pandas as pd
        import pyarrow.parquet as pq

        wanted = pd.Index(list(sha256s), dtype=object)
        found = np.zeros(len(wanted), bool)
        for part in self.parts():
            if found.all():
                break
            with self._fs.open(part, "rb") as f:
                table = pq.read_table(f)
            ids = wanted.get_indexer(table.column(SHA256).to_pylist())
            rows = np.flatnonzero(ids >= 0)
            ids, first = np.unique(ids[rows], return_index=True)
            new = ~found[ids]
            if new.any():
                found[ids[new]] = True
                column = table.column(EMBEDDING).combine_chunks()
                vectors = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
                yield ids[new], vectors[rows[first[new]]]
        if not found.all():
            missing = [wanted[i] for i in np.flatnonzero(~found)]
            raise MissingEmbeddingsError(
                f"{len(missing)} of {len(wanted)} posters are not in {self.folder} "
                f"(first: {missing[:3]}): embed the dataset with this backbone first"
            )
