"""Storage roots and atomic writes: every file posterflow makes goes through here.

A root is a local path (the default) or any fsspec URL. Local writes go to a hidden
temporary name in the destination folder and are renamed into place, so a reader (or a
crashed run) never sees a partial file. Object stores (s3://, gs://, ...) write whole
objects atomically by themselves, so they are written directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TEMP_PREFIX = ".tmp-"


class ExclusiveCreateUnsupported(NotImplementedError):
    """The store cannot create an object only-if-absent, so it cannot hold a lease."""


def url_to_fs(url: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    """Split a local path or fsspec URL into (filesystem, path inside it)."""
    fs, path = fsspec.core.url_to_fs(str(url))
    return fs, path


def is_local(url: str | os.PathLike[str]) -> bool:
    """True when the URL names the local filesystem."""
    return isinstance(url_to_fs(url)[0], LocalFileSystem)


def join(root: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a local path or fsspec URL."""
    base = str(root).rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts)])


def staging_name(final: str) -> str:
    """The hidden sibling of `final` where a resumable writer stages it (the same every run)."""
    head, _, tail = final.rstrip("/").rpartition("/")
    return f"{head}/{TEMP_PREFIX}{tail}" if head else f"{TEMP_PREFIX}{tail}"


def temp_name(final: str) -> str:
    """A hidden, unique sibling of `final` for staging writes."""
    return f"{staging_name(final)}-{uuid.uuid4().hex[:12]}"


def atomic_write_bytes(url: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Write `data` so that `url` appears complete or not at all.

    `durable=False` skips the fsync: for many small files made durable later by one
    `os.sync()` (the poster store), where an fsync per file costs more than the write.
    """
    fs, path = url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_local_atomic(path, data, durable=durable)


def write_local_atomic(path: str, data: bytes, *, durable: bool = True) -> None:
    """`atomic_write_bytes` for a plain local path whose folder exists: the per-file fast path.

    A hidden temp name beside `path`, renamed into place: four syscalls, no fsspec look-up
    (the poster store writes thousands of small objects through this).
    """
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_file(url: str | os.PathLike[str], *, durable: bool = True) -> Iterator[str]:
    """Yield a local path to fill (e.g. by a TFRecordWriter); `url` then appears whole.

    Local: a hidden temp name beside `url`, fsynced (unless `durable=False`) and renamed
    into place. Object stores: a local scratch file uploaded as one object. If the block
    raises, nothing appears and the temp file is gone.
    """
    fs, path = url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as scratch:
            local = os.path.join(scratch, path.rsplit("/", 1)[-1])
            yield local
            fs.put_file(local, path)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def create_exclusive(url: str | os.PathLike[str], data: bytes) -> bool:
    """Create `url` holding `data` only if nothing is there yet; True when this call made it.

    The one compare-and-create primitive (leases, numbered versions, alias swaps): of any
    number of concurrent callers exactly one gets True, and the winner's bytes are never seen
    partial. Local: written to a hidden temp name, then hard-linked into place (link(2) fails
    when the name exists). memory://: an exclusive open. s3:// (If-None-Match: *) and gs://
    (ifGenerationMatch=0): fsspec's `pipe_file(mode="create")`. Other stores raise
    ExclusiveCreateUnsupported rather than pretend with a check-then-write.
    """
    fsys, path = url_to_fs(url)
    if isinstance(fsys, LocalFileSystem):
        for _ in range(3):  # a lease holder's clean-up may take our temp file for stale
            with contextlib.suppress(FileNotFoundError):
                return _link_exclusive(path, data)
        return _link_exclusive(path, data)
    if not _creates_exclusively(fsys):
        raise ExclusiveCreateUnsupported(
            f"{url!s}: the {type(fsys).__name__} store offers no conditional create "
            "(only local paths, memory://, s3:// and gs:// do), so it cannot be shared safely")
    try:
        fsys.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


def _link_exclusive(path: str, data: bytes) -> bool:
    """Local create-if-absent: a complete, fsynced temp file hard-linked to `path`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return True


def _creates_exclusively(fsys: fsspec.AbstractFileSystem) -> bool:
    """True where `pipe_file(mode="create")` is a server-side precondition, not exists+write."""
    protocols = {fsys.protocol} if isinstance(fsys.protocol, str) else set(fsys.protocol)
    if protocols & {"memory", "s3", "s3a"}:
        return True
    pipe = getattr(type(fsys), "_pipe_file", None)  # gcsfs: mode="create" in recent releases
    return bool(protocols & {"gs", "gcs"}) and pipe is not None and (
        "mode" in inspect.signature(pipe).parameters)


def describe_io_error(exc: OSError, root: str) -> str:
    """`exc` as one line naming the file, the cause and the disk it is on (for operators)."""
    where = exc.filename or root
    message = f"{exc.strerror or exc} writing {where}"
    if not is_local(root):
        return message
    mount = Path(os.path.abspath(str(where)))
    while not mount.exists() or not os.path.ismount(mount):
        if mount.parent == mount:
            break
        mount = mount.parent
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(mount).free
        return f"{message} (disk {mount}: {free:,} bytes free)"
    return f"{message} (disk {mount})"


def atomic_write_text(url: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(url, text.encode("utf-8"))


def atomic_write_json(url: str | os.PathLike[str], obj: Any) -> None:
    """Write pretty, key-sorted JSON atomically (stable bytes for stable hashes)."""
    atomic_write_text(url, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(url: str | os.PathLike[str]) -> Any:
    """Read a JSON file from a local path or fsspec URL."""
    fs, path = url_to_fs(url)
    with fs.open(path, "rb") as f:
        return json.load(f)


def read_bytes(url: str | os.PathLike[str]) -> bytes:
    """The whole content of a (small) file from a local path or fsspec URL."""
    fsys, path = url_to_fs(url)
    return bytes(fsys.cat_file(path))


def atomic_write_parquet(url: str | os.PathLike[str], table: Any) -> None:
    """Write a pyarrow Table or pandas DataFrame as Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(url, buf.getvalue())


def exists(url: str | os.PathLike[str]) -> bool:
    """True when the file or folder exists."""
    fs, path = url_to_fs(url)
    return bool(fs.exists(path))


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike[str], marker: str | None = None) -> Iterator[str]:
    """Yield a local staging folder that becomes `final` only on success.

    Local: a hidden sibling renamed into place (atomic on POSIX). Object stores: a local
    scratch folder uploaded file by file with `marker` (the file a complete copy always has,
    required there) last, so a reader that looks for the marker never sees a partial copy.
    If `final` already holds a complete copy the staged one is discarded (immutable
    outputs: the first complete writer wins).
    """
    fsys, path = url_to_fs(final)
    if not isinstance(fsys, LocalFileSystem):
        if marker is None:
            raise ValueError(f"staging into {final!s} needs a marker file to upload last")
        with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as scratch:
            yield scratch
            if not fsys.exists(f"{path}/{marker}"):
                upload_tree(scratch, str(final), marker)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    os.makedirs(tmp)
    try:
        yield tmp
        rename_into_place(tmp, path, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def upload_tree(local: str, final: str, marker: str) -> None:
    """Upload a local folder's files under `final`, `marker` last (the commit point)."""
    fsys, root = url_to_fs(final)
    rels = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file())
    if marker not in rels:
        raise FileNotFoundError(f"{local} has no {marker}: nothing complete to upload")
    for rel in [r for r in rels if r != marker] + [marker]:
        fsys.put_file(os.path.join(local, rel), f"{root.rstrip('/')}/{rel}")


def rename_into_place(staged: str, final: str, marker: str | None = None) -> None:
    """Rename a complete local folder to `final`; if another writer got there first, drop ours.

    `final` counts as already published when it is a folder (holding `marker`, when given:
    the file a complete copy always has); otherwise the rename's error is raised.
    """
    try:
        os.rename(staged, final)
    except OSError:
        published = os.path.isdir(final) and (
            marker is None or os.path.isfile(os.path.join(final, marker)))
        if not published:
            raise
        shutil.rmtree(staged, ignore_errors=True)


def remove_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Delete leftovers of killed writers (hidden temp names) under a local folder."""
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for p in sorted(root.rglob(f"{TEMP_PREFIX}*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(url: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    fs, path = url_to_fs(url)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_files(url: str | os.PathLike[str]) -> dict[str, int]:
    """Every file under a folder as {path relative to it: size in bytes}."""
    fs, folder = url_to_fs(url)
    folder = folder.rstrip("/")
    found = fs.find(folder, detail=True)
    return {p[len(folder) + 1 :]: int(d["size"]) for p, d in found.items()}


def copy_tree_hashed(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], chunk: int = 1 << 20
) -> dict[str, dict[str, Any]]:
    """Copy every file of a folder, streamed: {relative path: {sha256, bytes}} of what was written.

    Across filesystems (a local export into an object-store registry, and back). Not atomic:
    copy into a staging folder, or write a marker file last.
    """
    (src_fs, src_root), (dst_fs, dst_root) = url_to_fs(src), url_to_fs(dst)
    files = {}
    for rel in sorted(list_files(src)):
        source, target = f"{src_root.rstrip('/')}/{rel}", f"{dst_root.rstrip('/')}/{rel}"
        dst_fs.makedirs(target.rpartition("/")[0], exist_ok=True)
        h, n = hashlib.sha256(), 0
        with src_fs.open(source, "rb") as r, dst_fs.open(target, "wb") as w:
            while block := r.read(chunk):
                h.update(block)
                w.write(block)
                n += len(block)
        files[rel] = {"sha256": h.hexdigest(), "bytes": n}
    return files


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush one local file, or a folder's entries (after a rename into it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """Flush a local folder's files and folders to disk, before renaming it into place."""
    for dirpath, _, names in os.walk(folder):
        for name in [*names, "."]:
            fsync_path(os.path.join(dirpath, name))
