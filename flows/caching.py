"""How the pipeline's tasks reuse and redo work: a content-keyed cache, retries on IO only.

Prefect's INPUTS policy hashes argument values, so a path whose file changed would still hit
the cache, and a cached result would be returned even after someone deleted the files it
points at. `StageCache` fixes both: named inputs are replaced by a fingerprint of their
content (e.g. the sha256 of the catalog CSV, the digest of the poster index), and a cached
result is used only while every output path it names still exists. A stale record is
never overwritten: the key moves on to the record's next generation (a key derived from
it), so the rerun's result is cached there and found by the next run the same way.
A stage may add its own staleness rule (fetch: a chunk with transient failures is retried).
Retries (`IO_RETRIES`) go on the IO tasks only: validation and training fail deterministically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel

from storage.fs import exists, join, sha256_file

log = logging.getLogger(__name__)
MAX_GENERATIONS = 64  # stale records skipped before giving up on caching this input
IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [5, 30, 120],
                              "retry_jitter_factor": 0.5}


def _plain(value: Any) -> Any:
    """A JSON-stable form of a task input (pydantic models by value, paths as text)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, PurePath):
        return str(value)
    return value


@dataclass
class StageCache(CachePolicy):
    """Key: task source + inputs (`content` ones by fingerprint); valid while outputs exist."""

    content: Mapping[str, Callable[[Any], str]] = field(default_factory=dict)
    stale: Callable[[Any], str | None] | None = None
    ignore: tuple[str, ...] = ()  # inputs that do not change the result's identity

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        values = {
            name: self.content[name](value) if name in self.content else _plain(value)
            for name, value in inputs.items() if name not in self.ignore
        }
        source = TASK_SOURCE.compute_key(task_ctx, inputs, flow_parameters)
        key = hash_objects(task_ctx.task.name, source, values, raise_on_failure=True)
        store = task_ctx.result_store
        for _ in range(MAX_GENERATIONS):
            if key is None or self.stale is None or not store.exists(key):
                return key
            reason = self.stale(store.read(key).result)
            if not reason:
                return key
            log.warning("not reusing the cached result of %s: %s", task_ctx.task.name, reason)
            key = hash_objects(key, "next-generation", raise_on_failure=True)
        return None


def missing_outputs(paths: Callable[[Any], Iterable[str]]) -> Callable[[Any], str | None]:
    """A `stale` check: the cached result is stale when any output path it names is gone."""

    def check(result: Any) -> str | None:
        missing = [p for p in paths(result) if not exists(p)]
        return f"outputs missing: {', '.join(missing[:3])}" if missing else None

    return check


def file_digest(path: Any) -> str:
    """Content fingerprint of one file (local path or fsspec URL); a missing file gets a key
    of its own, so the task body, not the cache key, reports it (in one line)."""
    return sha256_file(str(path)) if exists(str(path)) else f"missing:{path}"


def dataset_digest(dataset_dir: Any) -> str:
    """Content fingerprint of a dataset version: its manifest's sha256 (no shard is read).

    The manifest lists each shard's sha256, so it changes whenever any shard does.
    """
    from storage.datasets import MANIFEST

    return sha256_file(join(str(dataset_dir), MANIFEST))
