"""Task runners for the fan-out stages, chosen by `ScaleOutConfig` (threads or Dask)."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from flows.config import ScaleOutConfig


def task_runner(scale: ScaleOutConfig) -> Any:
    """A thread pool by default; a Dask cluster (the `dask` extra) when asked for."""
    if scale.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=scale.max_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise RuntimeError(
            "scale.task_runner='dask' needs prefect-dask: pip install 'posterflow[dask]'"
        ) from exc
    if scale.dask_address:
        return DaskTaskRunner(address=scale.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": scale.max_workers,
                                          "threads_per_worker": 1})
