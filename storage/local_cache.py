"""A worker's local copies of remote data that TensorFlow cannot open, keyed by content.

TensorFlow reads files through its own file systems (local, and gs:// with its own
credentials), not through fsspec: it cannot open s3:// or memory:// at all. So a worker
that trains or evaluates from an object store first copies what TensorFlow reads here:

```
<cache dir>/datasets/<manifest sha256>/   dataset.json, manifest.parquet, the shards, .complete
<cache dir>/models/<registry.json sha256>/ a registered version's files, .complete
```

An entry is named by the sha256 of the file that lists its content with checksums (the
manifest; a version's `registry.json`), so the same remote version is copied once and reused
by every later run on this machine, and a changed version can never be mistaken for a cached
one. Each file is hashed while it downloads and checked against that list once, on arrival;
the entry is staged under a hidden name and renamed into place with `.complete` written last,
so a killed copy leaves nothing that looks cached. Reuse checks the sizes only (cheap).
After each copy the least recently used entries are evicted until the cache fits its bound.

The cache belongs to the machine, not to a flow, so it is set by the environment of the
worker, like TF Hub's: `POSTERFLOW_CACHE_DIR` (default `$XDG_CACHE_HOME/posterflow`, i.e.
`~/.cache/posterflow`) and `POSTERFLOW_CACHE_MAX_GB` (default 50).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from storage import fs

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "POSTERFLOW_CACHE_DIR"
MAX_GB_ENV = "POSTERFLOW_CACHE_MAX_GB"
DEFAULT_MAX_GB = 50.0
COMPLETE = ".complete"
DOWNLOAD_THREADS = 4
STALE_STAGING_S = 3600.0  # a staging folder this old belongs to a killed copy
CHUNK = 1 << 20


class CacheIntegrityError(ValueError):
    """A downloaded file does not match the size or sha256 its listing records."""


@dataclass(frozen=True)
class Expected:
    """What a listed file must be: its size and, when recorded, its sha256."""

    size: int
    sha256: str | None = None


def cache_dir() -> Path:
    """The machine's cache folder: POSTERFLOW_CACHE_DIR, else the user cache dir."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base, "posterflow")


def max_bytes() -> int:
    """The cache's size bound in bytes (POSTERFLOW_CACHE_MAX_GB)."""
    return int(float(os.environ.get(MAX_GB_ENV, DEFAULT_MAX_GB)) * 1e9)


def needs_local_copy(url: str | os.PathLike[str]) -> bool:
    """True for every URL that is not a local path (TensorFlow reads only those reliably)."""
    return not fs.is_local(url)


def local_copy(kind: str, key: str, source: str, files: Mapping[str, Expected],
               listing: Mapping[str, bytes]) -> Path:
    """A verified local copy of `files` under the remote folder `source`, made at most once.

    `kind` and `key` name the entry (`datasets`, the manifest's sha256); `listing` holds the
    files already read to compute the key (written as read, never downloaded twice).
    """
    root = cache_dir() / kind
    entry = root / key
    if _intact(entry, files):
        (entry / COMPLETE).touch()  # most recently used
        return entry
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    staging = Path(fs.temp_name(str(entry)))
    staging.mkdir()
    try:
        for rel, data in listing.items():
            _write_local(staging / rel, data)
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            list(pool.map(lambda item: _download(fs.join(source, item[0]), staging / item[0],
                                                 item[1]), files.items()))
        (staging / COMPLETE).write_text(f"{source}\n")
        fs.fsync_tree(staging)
        shutil.rmtree(entry, ignore_errors=True)  # a damaged earlier copy, if any
        fs.rename_into_place(str(staging), str(entry), marker=COMPLETE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("copied %d files of %s into the local cache %s", len(files), source, entry)
    evict(max_bytes(), keep=entry)
    return entry


def _intact(entry: Path, files: Mapping[str, Expected]) -> bool:
    """A complete entry whose files still have their listed sizes."""
    if not (entry / COMPLETE).is_file():
        return False
    for rel, want in files.items():
        try:
            if (entry / rel).stat().st_size != want.size:
                log.warning("cached %s has the wrong size: copying it again", entry / rel)
                return False
        except FileNotFoundError:
            return False
    return True


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _download(url: str, target: Path, want: Expected) -> None:
    """Stream one file to `target`, hashing it; CacheIntegrityError unless it matches."""
    fsys, path = fs.url_to_fs(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with fsys.open(path, "rb") as src, open(target, "wb") as dst:
        while block := src.read(CHUNK):
            digest.update(block)
            dst.write(block)
            size += len(block)
    if size != want.size:
        raise CacheIntegrityError(f"{url} is corrupted: {want.size} bytes expected, {size} found")
    if want.sha256 is not None and digest.hexdigest() != want.sha256:
        raise CacheIntegrityError(f"{url} is corrupted: sha256 {want.sha256} expected, "
                                  f"{digest.hexdigest()} found")


def _remove_stale_staging(root: Path) -> None:
    """Delete staging folders of copies killed long enough ago."""
    cutoff = time.time() - STALE_STAGING_S
    for stale in root.glob(f"{fs.TEMP_PREFIX}*"):
        try:
            if stale.stat().st_mtime < cutoff:
                shutil.rmtree(stale, ignore_errors=True)
        except FileNotFoundError:
            continue


def _size(entry: Path) -> int:
    return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())


def evict(limit: int, keep: Path | None = None) -> list[Path]:
    """Remove least recently used entries (any kind) until the cache holds at most `limit` bytes.

    `keep` (the entry just made or used) is never removed, even when it alone is larger.
    """
    entries = sorted((e for kind in cache_dir().iterdir() if kind.is_dir()
                      for e in kind.iterdir() if (e / COMPLETE).is_file()),
                     key=lambda e: (e / COMPLETE).stat().st_mtime)
    sizes = {e: _size(e) for e in entries}
    total = sum(sizes.values())
    removed = []
    for entry in entries:
        if total <= limit:
            break
        if keep is not None and entry == keep:
            continue
        (entry / COMPLETE).unlink(missing_ok=True)  # no longer looks cached, then goes
        shutil.rmtree(entry, ignore_errors=True)
        total -= sizes[entry]
        removed.append(entry)
        log.info("evicted %s from the local cache (%d bytes)", entry, sizes[entry])
    return removed
