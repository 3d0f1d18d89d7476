"""Task runners for the fan-out stages, chosen by `ScaleOutConfig` (threads or Dask)."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.config import ScaleOutConfig


def task_runner(scale: ScaleOutConfig) -> TaskRunner[Any]:
    """A thread pool by default; a Dask cluster (the `dask` extra) when asked for."""
    if scale.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=scale.max_workers)
    try:
        from flows.dask_runner import SharedApiDaskTaskRunner
    except ImportError as exc:
        raise RuntimeError(
            "scale.task_runner='dask' needs prefect-dask: pip install 'posterflow[dask]'"
        ) from exc
    if scale.dask_address:
        return SharedApiDaskTaskRunner(address=scale.dask_address)
    # One task per worker process: the fetch chunks run their own event loops, and the
    # shard parts hold the GIL while hashing and writing.
    return SharedApiDaskTaskRunner(cluster_kwargs={"n_workers": scale.max_workers,
                                                   "threads_per_worker": 1})
