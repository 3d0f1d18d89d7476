"""Shard files: TFRecord shards written from stored posters, hashed while they are written.

`write_shards(jobs, processes)` writes each `ShardJob` (a shard's posters and record fields)
atomically through `storage.fs.staged_file`, checking every poster's sha256 on the way and
computing the shard's size and sha256 from the bytes it writes (no second read). With
`processes > 1` the jobs are split into that many groups of about equal bytes and each group
is written by a child process (`python -m storage.shard_writer`, jobs as JSON on stdin,
results as JSON on stdout). This module imports neither pandas nor TensorFlow, so a child
starts in a fraction of a second. The counterpart reader is `storage/shard_reader.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from storage import fs
from storage.records import multi_hot, record_around_image

READ_BATCH = 256  # posters read per fsspec `cat` call from a remote store
WRITE_BUFFER = 1 << 20
SYNCING_SHARDS = 2  # finished shards whose fsync may still run while the next is written
CORRUPTED_EXIT = 3  # a child's exit status when a poster failed its sha256 check


class CorruptedPosterError(ValueError):
    """A stored poster's bytes no longer match the sha256 it is stored under."""


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: where, and its records in order."""

    url: str  # the shard's final path or URL (it appears whole or not at all)
    posters: list[str]  # each record's store object, a local path or an fsspec URL
    imdb_ids: list[int]
    sha256s: list[str]
    label_idx: list[list[int]]  # positions of each record's genres in the labels
    n_labels: int
    compression: str = ""  # "" or "GZIP", as tf.data names it


@dataclass(frozen=True)
class WrittenShard:
    """What was written: the shard's size and sha256, taken from the bytes as written."""

    url: str
    bytes: int
    sha256: str


def write_shards(jobs: Sequence[ShardJob], processes: int = 1,
                 weights: Sequence[int] | None = None) -> list[WrittenShard]:
    """Write every job (in this process, or in `processes` children); results in job order.

    `weights` (e.g. each shard's poster bytes) balance the groups; records count otherwise.
    """
    if processes <= 1 or len(jobs) <= 1:
        return write_in_turn(jobs)
    groups = balanced_groups(weights or [len(job.posters) for job in jobs], processes)
    with ThreadPoolExecutor(len(groups)) as pool:  # threads only wait on their child
        results = list(pool.map(lambda g: _write_in_child([jobs[i] for i in g]), groups))
    by_job = {i: shard for group, shards in zip(groups, results, strict=True)
              for i, shard in zip(group, shards, strict=True)}
    return [by_job[i] for i in range(len(jobs))]


def balanced_groups(weights: Sequence[int], groups: int) -> list[list[int]]:
    """Job positions in at most `groups` non-empty groups of about equal weight (largest first)."""
    loads: list[tuple[int, list[int]]] = [(0, []) for _ in range(min(groups, len(weights)))]
    for i in sorted(range(len(weights)), key=lambda i: -weights[i]):
        lightest = min(range(len(loads)), key=lambda g: loads[g][0])
        load, members = loads[lightest]
        loads[lightest] = (load + weights[i], [*members, i])
    return [sorted(members) for _, members in loads if members]


def write_in_turn(jobs: Sequence[ShardJob]) -> list[WrittenShard]:
    """Write the jobs one at a time, each shard's fsync (no CPU, no GIL) overlapping the
    next shard's writing: a few threads, of which only the one holding `writing` frames."""
    if len(jobs) <= 1:
        return [write_shard(job) for job in jobs]
    writing = threading.Lock()
    pool = ThreadPoolExecutor(min(SYNCING_SHARDS + 1, len(jobs)))
    try:
        return list(pool.map(lambda job: write_shard(job, writing), jobs))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error: start no other shard


def write_shard(job: ShardJob,
                writing: contextlib.AbstractContextManager[object] | None = None) -> WrittenShard:
    """Write one shard: read, verify and frame each poster; hash the file as it is written.

    A batch's records are joined into one buffer, hashed and written with one call each
    (per-record Python calls were most of the writer's CPU)."""
    parent = os.getppid()
    labels: dict[tuple[int, ...], bytes] = {}
    with fs.staged_file(job.url) as local, writing or contextlib.nullcontext(), \
            open(local, "wb", buffering=WRITE_BUFFER) as out:  # fsync + rename after both
        sink = _HashingSink(out, job.compression)
        for start, images in _posters(job.posters):
            if os.getppid() != parent:  # a child whose parent was killed stops writing
                raise SystemExit(1)
            pieces: list[bytes] = []
            for i, image in enumerate(images, start=start):
                sha256 = job.sha256s[i]
                if hashlib.sha256(image).hexdigest() != sha256:
                    raise _corrupted(job, i, image)
                idx = tuple(job.label_idx[i])
                if idx not in labels:
                    labels[idx] = multi_hot(idx, job.n_labels)
                front, back = record_around_image(job.imdb_ids[i], image, sha256, labels[idx])
                pieces += (front, image, back)
            sink.write(b"".join(pieces))
        sink.close()
    return WrittenShard(job.url, sink.size, sink.digest.hexdigest())


class _HashingSink:
    """Writes buffers to a file (GZIP-compressed as TensorFlow's writer does, when asked),
    keeping the sha256 and size of the bytes that reach the file. (A helper thread for the
    hash + write measured more CPU and no less wall time; BENCHMARKS.md, shards.)"""

    def __init__(self, out: BinaryIO, compression: str) -> None:
        if compression not in ("", "GZIP"):
            raise ValueError(f"compression must be '' or 'GZIP', got {compression!r}")
        self._out, self.digest, self.size = out, hashlib.sha256(), 0
        # TensorFlow's GZIP options: default level, gzip wrapper (wbits 31), memLevel 9
        self._zlib = zlib.compressobj(-1, zlib.DEFLATED, 31, 9) if compression else None

    def write(self, data: bytes) -> None:
        self._emit(self._zlib.compress(data) if self._zlib else data)

    def close(self) -> None:
        if self._zlib:
            self._emit(self._zlib.flush())

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.digest.update(data)
            self.size += len(data)


def _corrupted(job: ShardJob, i: int, image: bytes) -> CorruptedPosterError:
    """The error for a poster whose bytes do not hash to its name."""
    return CorruptedPosterError(
        f"poster store object {job.posters[i]} is corrupted (its sha256 is "
        f"{hashlib.sha256(image).hexdigest()}); fetch imdb_id {job.imdb_ids[i]} again")


def _posters(paths: list[str]) -> Iterator[tuple[int, list[bytes]]]:
    """(start, bytes of paths[start:start + READ_BATCH]): plain reads for local paths,
    one fsspec `cat` per batch (concurrent on object stores) for URLs."""
    for start in range(0, len(paths), READ_BATCH):
        batch = paths[start:start + READ_BATCH]
        if all("://" not in p for p in batch):
            yield start, [_read_local(p) for p in batch]
            continue
        fsys = fs.url_to_fs(batch[0])[0]
        inside = [fs.url_to_fs(p)[1] for p in batch]
        found = fsys.cat(inside, on_error="raise")
        yield start, [found[p] for p in inside]


def _read_local(path: str) -> bytes:
    """A local file's bytes in one read call (readall's extra read and buffer: ~1.5 us per
    poster); a file that changes meanwhile fails the caller's sha256 check."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, os.fstat(fd).st_size + 1)
    finally:
        os.close(fd)


def _write_in_child(jobs: list[ShardJob]) -> list[WrittenShard]:
    """Write a group of jobs in a child process; its errors come back as the same types."""
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(
        [sys.executable, "-m", "storage.shard_writer"], env=env, capture_output=True,
        input=json.dumps([asdict(job) for job in jobs]).encode(), check=False)
    if done.returncode == CORRUPTED_EXIT:
        raise CorruptedPosterError(done.stdout.decode().strip())
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"shard writer process exited with status {done.returncode}: "
                           f"{tail[0]}")
    return [WrittenShard(**row) for row in json.loads(done.stdout)]


def _child_main() -> int:
    """Entry point of a child: jobs from stdin, results (or the corruption) to stdout."""
    jobs = [ShardJob(**row) for row in json.load(sys.stdin)]
    try:
        written = write_in_turn(jobs)
    except CorruptedPosterError as err:
        print(err)
        return CORRUPTED_EXIT
    json.dump([asdict(shard) for shard in written], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
