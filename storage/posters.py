"""The poster store: content-addressed poster bytes plus a Parquet index.

Layout under the store root (a local path or any fsspec URL):

    objects/<sha[:2]>/<sha256>      the poster exactly as fetched, named by its content hash
    index.parquet                   compacted index: one row per imdb_id
    index-parts/<ns>-<uuid>.parquet rows appended by fetch runs since the last compaction
    fetch-reports/<run-id>.parquet  one row per catalog row of a fetch run (+ .json summary)
    .lease                          the one writing run (storage.leases)

Writers never rewrite shared files: each fetch run (or each concurrent chunk of one) appends
its own part files, written atomically, and `read_index()` merges `index.parquet` with the
parts, keeping the newest row per imdb_id. `compact_index()`, `remove_stale_temps()` and
`repair()` delete files, so they run under the store's lease (given, or taken for the call).
An object whose size no longer matches its index row reads as absent (`object_sizes`), so
the next fetch stores it again; `verify()` also hashes every object.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storage import fs, leases

INDEX_READ_TRIES = 5
INDEX_SCHEMA = pa.schema(
    [
        ("imdb_id", pa.int64()),
        ("url", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("format", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _object_key(sha256: str) -> str:
    """The store layout: an object's place under the root (the first 2 hex digits fan out)."""
    return f"objects/{sha256[:2]}/{sha256}"


@dataclass(frozen=True)
class StoreDamage:
    """What `PosterStore.verify` found: index rows whose object is missing or wrong."""

    checked: int
    missing: list[str] = field(default_factory=list)  # sha256 of indexed objects not there
    wrong_size: list[str] = field(default_factory=list)
    wrong_hash: list[str] = field(default_factory=list)  # right size, other content
    orphans: int = 0  # objects no index row names (harmless: a put before a crash)

    @property
    def damaged(self) -> list[str]:
        """Every indexed object that must be fetched again."""
        return self.missing + self.wrong_size + self.wrong_hash

    def as_dict(self) -> dict[str, Any]:
        """Counts and the damaged hashes, for JSON output."""
        return {"checked": self.checked, "missing": len(self.missing),
                "wrong_size": len(self.wrong_size), "wrong_hash": len(self.wrong_hash),
                "orphans": self.orphans, "damaged": self.damaged}


class PosterStore:
    """Content-addressed poster bytes and their index under one root."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root).rstrip("/")
        self._fs, self._fs_root = fs.url_to_fs(self.root)
        self._local = fs.is_local(self.root)
        self._folders: set[str] = set()  # local object folders known to exist

    def path(self, sha256: str) -> str:
        """Where the poster with this content hash lives."""
        return f"{self.root}/{_object_key(sha256)}"  # fs.join's checks: 10 us per record

    def has(self, sha256: str) -> bool:
        """True when the poster with this content hash is stored."""
        return fs.exists(self.path(sha256))

    def object_sizes(self, sha256s: list[str]) -> list[int | None]:
        """Stored size of each object (None: absent): one stat each locally, one listing else."""
        if self._local:
            sizes: list[int | None] = []
            for sha in sha256s:
                try:
                    sizes.append(os.stat(self.path(sha)).st_size)
                except FileNotFoundError:
                    sizes.append(None)
            return sizes
        listed = self._listed_objects()
        return [listed.get(sha) for sha in sha256s]

    def _listed_objects(self) -> dict[str, int]:
        """{sha256: size} of every stored object (temp names left out), like `stored_hashes`."""
        objects = f"{self._fs_root}/objects"
        if not self._fs.isdir(objects):
            return {}
        return {info["name"].rsplit("/", 1)[-1]: int(info["size"])
                for prefix in self._fs.ls(objects, detail=False)
                for info in self._fs.ls(prefix, detail=True)
                if not info["name"].rsplit("/", 1)[-1].startswith(fs.TEMP_PREFIX)}

    def get(self, sha256: str) -> bytes:
        """The stored poster bytes; FileNotFoundError names the hash when absent."""
        try:
            return bytes(self._fs.cat_file(fs.url_to_fs(self.path(sha256))[1]))
        except FileNotFoundError:
            raise FileNotFoundError(f"poster {sha256} is not in the store {self.root}") from None

    def get_many(self, sha256s: list[str]) -> list[bytes]:
        """Stored posters in the order asked, by one fsspec `cat` (concurrent on object stores)."""
        paths = [f"{self._fs_root}/{_object_key(sha)}" for sha in sha256s]
        found = self._fs.cat(paths, on_error="raise")
        return [found[p] for p in paths]

    def stored_hashes(self) -> set[str]:
        """The sha256 of every stored object: one listing per fan-out folder, not a stat each."""
        objects = f"{self._fs_root}/objects"
        if not self._fs.isdir(objects):
            return set()
        if self._local:  # os.listdir: fsspec's ls costs ~30 us per poster here (shards' plan)
            return {name for prefix in os.listdir(objects)
                    for name in os.listdir(f"{objects}/{prefix}")}
        return {path.rsplit("/", 1)[-1] for prefix in self._fs.ls(objects, detail=False)
                for path in self._fs.ls(prefix, detail=False)}

    def put(self, data: bytes) -> str:
        """Store poster bytes under their sha256 (a no-op when already there); return it.

        Local objects are written to a temp name and renamed into place (never seen half
        written) but not fsynced one by one: `append_index` makes them durable with one
        `os.sync()` before it publishes index rows naming them (objects first, then the
        index, like git's batch fsync mode). An fsync per poster measured more CPU than the
        rest of a fetch. An object left short by a power cut is rewritten on the next put.
        """
        sha256 = fs.sha256_bytes(data)
        if not self._local:
            target = self.path(sha256)
            if not fs.exists(target):
                fs.atomic_write_bytes(target, data, durable=False)
            return sha256
        target = f"{self._fs_root}/{_object_key(sha256)}"
        with contextlib.suppress(FileNotFoundError):
            if os.stat(target).st_size == len(data):
                return sha256
        folder = target.rpartition("/")[0]
        if folder not in self._folders:  # one mkdir per fan-out folder, not one per poster
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        try:
            fs.write_local_atomic(target, data, durable=False)
        except FileNotFoundError:  # the folder went away since (a store deleted and remade)
            os.makedirs(folder, exist_ok=True)
            fs.write_local_atomic(target, data, durable=False)
        return sha256

    def append_index(self, rows: list[dict[str, Any]]) -> str | None:
        """Write index rows as a new, atomically written part file; return its path.

        Local stores first flush the objects written so far to disk (see `put`).
        """
        if not rows:
            return None
        if self._local:
            os.sync()
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
        part = fs.join(self.root, "index-parts", name)
        fs.atomic_write_parquet(part, pa.Table.from_pylist(rows, schema=INDEX_SCHEMA))
        return part

    def _index_files(self) -> tuple[str | None, list[str]]:
        """The compacted index (when present) and the part files, oldest first."""
        _, root = fs.url_to_fs(self.root)
        main = f"{root}/index.parquet"
        parts_dir = f"{root}/index-parts"
        parts = []
        if self._fs.isdir(parts_dir):
            parts = sorted(
                p
                for p in self._fs.ls(parts_dir, detail=False)
                if p.rsplit("/", 1)[-1].endswith(".parquet")
                and not p.rsplit("/", 1)[-1].startswith(fs.TEMP_PREFIX)
            )
        return (main if self._fs.exists(main) else None), parts

    def _read_tables(self, files: list[str]) -> pa.Table:
        """Concatenate index files (in order) into one table with the index schema."""
        tables = [pq.read_table(f, filesystem=self._fs, schema=INDEX_SCHEMA) for f in files]
        return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()

    def _merged(self, main: str | None, parts: list[str]) -> pd.DataFrame:
        """Index rows of these files, keeping the last written row per imdb_id."""
        df = self._read_tables(([main] if main else []) + parts).to_pandas()
        df = df.drop_duplicates("imdb_id", keep="last").sort_values("imdb_id")
        return df.reset_index(drop=True)

    def read_index(self) -> pd.DataFrame:
        """The poster index: one row per imdb_id, the most recently written one.

        A compaction writes index.parquet before it deletes the parts it folded, so a part
        gone between the listing and the read means: list again.
        """
        for _ in range(INDEX_READ_TRIES - 1):
            with contextlib.suppress(FileNotFoundError):
                return self._merged(*self._index_files())
        return self._merged(*self._index_files())

    def compact_index(self, lease: leases.Lease | None = None) -> int:
        """Fold the part files into index.parquet and delete them; return parts folded.

        Under the store's lease (`lease`, checked; else taken for the call): parts written
        meanwhile by the lease holder's own chunks are kept, never dropped.
        """
        with self._under_lease(lease, "compaction"):
            main, parts = self._index_files()
            if not parts:
                return 0
            self._write_index(self._merged(main, parts))
            for part in parts:
                with contextlib.suppress(FileNotFoundError):
                    self._fs.rm_file(part)
            return len(parts)

    def _write_index(self, rows: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(rows, schema=INDEX_SCHEMA, preserve_index=False)
        fs.atomic_write_parquet(fs.join(self.root, "index.parquet"), table)

    def verify(self, *, hashes: bool = True) -> StoreDamage:
        """Check every index row's object: present, of the indexed size, and (hashes) content."""
        index = self.read_index()
        shas, nbytes = index["sha256"].tolist(), index["bytes"].tolist()
        listed = self._listed_objects()
        damage = StoreDamage(checked=len(index), orphans=len(set(listed) - set(shas)))
        for sha, size in dict(zip(shas, nbytes, strict=True)).items():
            if sha not in listed:
                damage.missing.append(sha)
            elif listed[sha] != size:
                damage.wrong_size.append(sha)
            elif hashes and fs.sha256_file(self.path(sha)) != sha:
                damage.wrong_hash.append(sha)
        return damage

    def repair(self, damage: StoreDamage, lease: leases.Lease | None = None) -> int:
        """Delete damaged objects and the index rows naming them (the next fetch refetches).

        Returns the index rows dropped. Under the store's lease, like compaction.
        """
        if not damage.damaged:
            return 0
        bad = set(damage.damaged)
        with self._under_lease(lease, "repair"):
            for sha in bad:
                with contextlib.suppress(FileNotFoundError):
                    self._fs.rm_file(fs.url_to_fs(self.path(sha))[1])
            main, parts = self._index_files()
            merged = self._merged(main, parts)
            kept = merged[~merged["sha256"].isin(bad)].reset_index(drop=True)
            self._write_index(kept)
            for part in parts:
                with contextlib.suppress(FileNotFoundError):
                    self._fs.rm_file(part)
            return len(merged) - len(kept)

    @contextlib.contextmanager
    def _under_lease(self, lease: leases.Lease | None, purpose: str) -> Iterator[None]:
        """Run a destructive step under the given lease (checked) or one taken for it."""
        if lease is not None:
            leases.check(lease)
            yield
            return
        with leases.held(self.root, purpose):
            yield

    def remove_stale_temps(self, lease: leases.Lease | None = None) -> int:
        """Delete temp files left by killed writers (local stores; object stores have none).

        Under the store's lease, so that no live writer's temp file is taken for stale.
        """
        if not self._local:
            return 0
        with self._under_lease(lease, "clean-up"):
            return fs.remove_stale_temps(self.root)
