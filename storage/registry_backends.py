"""How the registry commits on each kind of store: a local/POSIX folder, or an object store.

Local/POSIX root (the default): a version is copied into a hidden staging folder (`.tmp-*`,
ignored by TF Serving and by the registry), its checksums are recorded in `registry.json`
inside it, it is fsynced, and one `rename` publishes it. The rename is also the version
allocation: renaming onto an existing, non-empty version fails, so the writer retries with
the next number and concurrent registrations never share one. Alias edits are
read-modify-write under an `fcntl` lock, written temp + rename.

Object stores (s3://, gs://, memory://): there is no folder rename and no lock, so both
writes use the store's conditional create (`storage.fs.create_exclusive`: S3
`If-None-Match: *`, GCS `ifGenerationMatch=0`). A version number is allocated by creating
`<version>/.claim.json` only-if-absent (the loser tries the next number), the files are
uploaded, and `registry.json` is written last, as the commit marker: readers ignore
versions without it. An alias edit is a compare-and-swap: the new state is created as the
next numbered `.aliases/<generation>.json` (AliasConflict when another writer took it);
`aliases.json` and `models.config` are then rewritten from the newest generation
(re-checked after writing, so the last write is never stale). A store without conditional
creates is refused (UnsafeStoreError), never raced. A killed registration leaves a claim
without `registry.json`: its number is skipped.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from storage.aliases import ALIASES, GENERATIONS, AliasChanges, AliasConflict, read_alias_state
from storage.fs import (
    TEMP_PREFIX,
    ExclusiveCreateUnsupported,
    atomic_write_json,
    copy_tree_hashed,
    create_exclusive,
    fsync_path,
    fsync_tree,
    read_bytes,
    sha256_bytes,
    temp_name,
)
from storage.local_cache import Expected, local_copy
from storage.registry_files import RegistryError, utc_now
from storage.serving import write_serving_config

log = logging.getLogger(__name__)

METADATA = "registry.json"
CLAIM = ".claim.json"  # object stores: created only-if-absent to allocate a version number
STALE_STAGING_S = 24 * 3600  # staging folders older than this belong to killed writers
FolderNumbers = Callable[[], list[int]]  # every integer-named version folder of the model


class UnsafeStoreError(RegistryError):
    """The store offers no conditional create, so concurrent writers could collide."""


def write_alias_files(model_url: str, model: str, state: dict[str, Any]) -> None:
    """aliases.json, then the TF Serving config of the aliased versions."""
    atomic_write_json(f"{model_url}/{ALIASES}", state)
    write_serving_config(model_url, model, state["aliases"])


def remove_stale_staging(model_dir: str, max_age_s: float = STALE_STAGING_S) -> None:
    """Delete what killed writers left (staging folders, alias temp files) once old enough."""
    cutoff = time.time() - max_age_s
    for entry in os.scandir(model_dir):
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:  # concurrent writers rename their staging folders and alias temp files away
            mtime, is_dir = entry.stat().st_mtime, entry.is_dir()
        except FileNotFoundError:
            continue
        if mtime < cutoff:
            log.warning("removing stale staging entry %s", entry.path)
            if is_dir:
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


class LocalBackend:
    """A registry on a local or POSIX-mounted folder: rename to publish, a lock for aliases."""

    def __init__(self, fs: AbstractFileSystem) -> None:
        self.fs = fs

    def url(self, path: str) -> str:
        return path

    def publish(self, src: str, model_dir: str, meta: dict[str, Any],
                folder_numbers: FolderNumbers) -> int:
        """Stage, checksum, fsync, then rename to the next free number (the allocation)."""
        os.makedirs(model_dir, exist_ok=True)
        remove_stale_staging(model_dir)
        staging = temp_name(f"{model_dir}/version")
        try:
            meta["files"] = copy_tree_hashed(src, staging)
            atomic_write_json(f"{staging}/{METADATA}", meta)
            fsync_tree(staging)
            while True:
                version = max(folder_numbers(), default=0) + 1
                try:
                    os.rename(staging, f"{model_dir}/{version}")
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    log.debug("v%d of %s was taken by another writer, trying the next",
                              version, model_dir)
                    continue
                fsync_path(model_dir)
                return version
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def read_aliases(self, model_dir: str) -> dict[str, Any]:
        return read_alias_state(f"{model_dir}/{ALIASES}")

    @contextlib.contextmanager
    def editing(self, model: str, model_dir: str) -> Iterator[AliasChanges]:
        """The alias state under the model's lock; written (then TF Serving's config) if moved."""
        os.makedirs(model_dir, exist_ok=True)
        with open(f"{model_dir}/.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                changes = AliasChanges(self.read_aliases(model_dir))
                yield changes
                if changes.changed:
                    write_alias_files(model_dir, model, changes.state)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def local_path(self, path: str, metadata: dict[str, Any]) -> str:
        """The version's own folder: TensorFlow reads it in place."""
        return path


class ObjectStoreBackend:
    """A registry on an object store: conditional creates to allocate, commit and edit."""

    def __init__(self, fs: AbstractFileSystem, root: str) -> None:
        self.fs, self.root = fs, root

    def url(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def _create(self, path: str, data: bytes) -> bool:
        """`create_exclusive`, with a store that cannot do it refused as UnsafeStoreError."""
        try:
            return create_exclusive(self.url(path), data)
        except ExclusiveCreateUnsupported as e:
            raise UnsafeStoreError(f"cannot write the registry at {self.root} safely: {e}") from e

    def publish(self, src: str, model_dir: str, meta: dict[str, Any],
                folder_numbers: FolderNumbers) -> int:
        """Claim the next free number, upload into it, `registry.json` last."""
        claim = json.dumps({"claimed_at": utc_now(), "host": socket.gethostname(),
                            "pid": os.getpid()}).encode()
        version = max(folder_numbers(), default=0) + 1
        while not self._create(f"{model_dir}/{version}/{CLAIM}", claim):
            log.debug("v%d of %s was claimed by another writer, trying the next",
                      version, model_dir)
            version += 1
        version_url = self.url(f"{model_dir}/{version}")
        meta["files"] = copy_tree_hashed(src, version_url)
        atomic_write_json(f"{version_url}/{METADATA}", meta)
        return version

    def _generation_path(self, model_dir: str, generation: int) -> str:
        return f"{model_dir}/{GENERATIONS}/{generation:012d}.json"

    def _newest(self, model_dir: str) -> tuple[int, dict[str, Any]]:
        """(newest generation number, its state); 0 = aliases.json or none."""
        gdir = f"{model_dir}/{GENERATIONS}"
        self.fs.invalidate_cache(gdir)
        names = self.fs.ls(gdir, detail=False) if self.fs.isdir(gdir) else []
        numbers = [int(n) for n in (p.rstrip("/").rpartition("/")[2].removesuffix(".json")
                                    for p in names) if n.isdigit()]
        if not numbers:
            return 0, read_alias_state(self.url(f"{model_dir}/{ALIASES}"))
        newest = max(numbers)
        return newest, read_alias_state(self.url(self._generation_path(model_dir, newest)))

    def read_aliases(self, model_dir: str) -> dict[str, Any]:
        return self._newest(model_dir)[1]

    @contextlib.contextmanager
    def editing(self, model: str, model_dir: str) -> Iterator[AliasChanges]:
        """A compare-and-swap edit: AliasConflict when another writer committed meanwhile."""
        generation, state = self._newest(model_dir)
        changes = AliasChanges(copy.deepcopy(state))
        yield changes
        if not changes.changed:
            return
        body = json.dumps(changes.state, indent=2, sort_keys=True, default=str) + "\n"
        if not self._create(self._generation_path(model_dir, generation + 1), body.encode()):
            raise AliasConflict(f"{model}: aliases changed by another writer "
                                f"(generation {generation + 1} exists)")
        self._mirror_newest(model, model_dir)

    def _mirror_newest(self, model: str, model_dir: str) -> None:
        """Rewrite aliases.json and models.config from the newest generation until none newer.

        Every writer re-checks after writing, so a stale write is always followed by a fresh one.
        """
        written = -1
        while True:
            generation, state = self._newest(model_dir)
            if generation == written:
                return
            write_alias_files(self.url(model_dir), model, state)
            written = generation

    def local_path(self, path: str, metadata: dict[str, Any]) -> str:
        """This machine's copy in `storage.local_cache`, keyed by the sha256 of registry.json
        and checked against the recorded checksums once, on arrival."""
        listing = {METADATA: read_bytes(f"{path}/{METADATA}")}
        files = {rel: Expected(int(f["bytes"]), str(f["sha256"]))
                 for rel, f in metadata["files"].items()}
        return str(local_copy("models", sha256_bytes(listing[METADATA]), path, files, listing))


def backend_for(fs: AbstractFileSystem, root: str) -> LocalBackend | ObjectStoreBackend:
    """The backend of a store: local folders rename and lock, object stores create-if-absent."""
    return LocalBackend(fs) if isinstance(fs, LocalFileSystem) else ObjectStoreBackend(fs, root)
