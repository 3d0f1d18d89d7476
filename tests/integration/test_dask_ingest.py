"""Ingest on a real Dask cluster, on Prefect's ephemeral server as `posterflow run` uses it.

A `distributed.LocalCluster` with two worker processes runs the fetch chunks and shard
parts. Their task runs must be recorded by the flow's own Prefect API, under the fetch and
shards subflow runs, and no worker may start a Prefect server of its own (left to itself,
each worker process of an ephemeral-server run starts one, with its own database).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flows.config import RetrainConfig
from tests.flow_helpers import tiny_config_data

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("prefect_dask") is None,
                       reason="prefect-dask is not installed (pip install 'posterflow[dask]')"),
]
WORKERS = 2


@pytest.fixture(scope="module")
def ephemeral_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prefect's ephemeral server in this process, with no PREFECT_API_URL (as `posterflow run`)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("results"),
                             PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120},
                            restore_defaults={PREFECT_API_URL}):
        server = SubprocessASGIServer()  # the one get_client() starts when no API URL is set
        server.start()
        yield server.api_url
        _drain_prefect_workers()
        server.stop()  # now, while its log line still has somewhere to go


def _drain_prefect_workers() -> None:
    """Send the queued logs and events before their server goes, as prefect_test_harness does.

    Left queued, they outlive this module: the next harness's teardown then waits on a worker
    still posting to this stopped server (seen as a hang in a later module's harness).
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # no log worker was started
        APILogWorker.instance().drain()
    EventsWorker.drain_all()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A LocalCluster of two single-threaded worker processes, and a client to inspect them."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local, Client(local) as client:
        yield client


def _running_prefect_servers() -> list[int | None]:
    """Ports of the Prefect servers this (worker) process started."""
    from prefect.server.api.server import SubprocessASGIServer

    return [s.port for s in SubprocessASGIServer._instances.values() if s.running]


def _task_runs_by_flow_run(flow_run_ids: list[Any]) -> dict[Any, list[Any]]:
    """The task runs the API holds for each of these flow runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
    return {fid: [r for r in runs if r.flow_run_id == fid] for fid in flow_run_ids}


def _subflow_runs(parent_id: Any) -> dict[str, Any]:
    """The ingest flow run's subflow runs, by flow name."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))
        return {client.read_flow(run.flow_id).name: run for run in children}


def test_ingest_on_dask_reports_every_task_run_to_the_flows_own_api(
        ephemeral_api, cluster, served_demo, tmp_path):
    from distributed import get_task_stream

    from flows.ingest import ingest_flow

    config = RetrainConfig.model_validate({
        **tiny_config_data(served_demo.csv_path, tmp_path / "data", "unused-backbone"),
        "scale": {"task_runner": "dask", "dask_address": cluster.scheduler.address,
                  "fetch_chunks": 2, "shard_parts": 2},
    }).ingest_config()
    with get_task_stream(cluster) as stream:
        state = ingest_flow(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert Path(result.dataset_dir, "dataset.json").is_file()
    assert result.fetch_outcomes["ok"] > 0

    # The fan-out ran on the cluster's worker processes ...
    worker_pids = cluster.run(os.getpid)
    assert len(worker_pids) == WORKERS and os.getpid() not in worker_pids.values()
    ran = [t["key"] for t in stream.data]
    assert sum("fetch" in key for key in ran) == 2, ran
    assert sum("dataset_part" in key for key in ran) == 2, ran
    # ... which started no Prefect server of their own ...
    assert cluster.run(_running_prefect_servers) == {w: [] for w in worker_pids}

    # ... and recorded their task runs in the flow's API, under the subflows' runs.
    subflows = _subflow_runs(state.state_details.flow_run_id)
    fetch, shards = subflows["fetch"], subflows["shards"]
    by_run = _task_runs_by_flow_run([fetch.id, shards.id])
    fetch_names = {r.name for r in by_run[fetch.id] if r.name.startswith("fetch-posters-")}
    part_names = {r.name for r in by_run[shards.id]
                  if r.name.startswith("build-dataset-part-")}
    assert fetch_names == {"fetch-posters-0-of-2", "fetch-posters-1-of-2"}
    assert part_names == {"build-dataset-part-0-of-2", "build-dataset-part-1-of-2"}
    assert {r.state.name for runs in by_run.values() for r in runs} == {"Completed"}


def test_embedding_fans_out_over_the_cluster_with_the_same_features(
        ephemeral_api, cluster, standin_backbone, tmp_path):
    from distributed import get_task_stream

    from flows.config import ScaleOutConfig
    from flows.runners import task_runner
    from flows.train import embed_flow
    from storage.embeddings import EmbeddingCache
    from storage.shard_reader import split_labels
    from tasks.embed import embed_dataset
    from tasks.train_config import TrainConfig
    from tests.model_helpers import write_tiny_dataset

    views = ["full", "top"]
    dataset = str(write_tiny_dataset(tmp_path / "datasets", {"train": 16, "val": 8, "test": 8}))
    config = TrainConfig(backbone=standin_backbone, views=views,
                         embeddings_root=str(tmp_path / "fanned"))
    scale = ScaleOutConfig(task_runner="dask", dask_address=cluster.scheduler.address,
                           embed_parts=2)
    with get_task_stream(cluster) as stream:
        state = embed_flow.with_options(task_runner=task_runner(scale))(
            dataset, config, scale.embed_parts, return_state=True)
    assert state.is_completed(), state.message
    fanned = state.result()
    assert (fanned.records, fanned.embedded, fanned.reused) == (32, 64, 0)

    # Each part ran on a worker process and is recorded under the embed flow run.
    ran = [t for t in stream.data if "embed" in t["key"]]
    assert len(ran) == 2 and {t["worker"] for t in ran} <= set(cluster.scheduler_info()["workers"])
    runs = _task_runs_by_flow_run([state.state_details.flow_run_id])
    assert {r.name for r in next(iter(runs.values()))} == {"embed-posters-0-of-2",
                                                           "embed-posters-1-of-2"}

    # The same features as one part in one process; a part run again embeds nothing.
    single = str(tmp_path / "single")
    embed_dataset(dataset, single, standin_backbone, views=views)
    shas = [s for split in ("train", "val", "test") for s in split_labels(dataset, split)[0]]
    for view in views:
        np.testing.assert_allclose(
            EmbeddingCache(config.cache_root, fanned.backbone_id, view).read(shas),
            EmbeddingCache(single, fanned.backbone_id, view).read(shas), atol=1e-6)
    again = embed_dataset(dataset, config.cache_root, standin_backbone, views=views, part=0,
                          parts=2)
    assert again.embedded == 0 and again.reused == again.records * len(views) > 0
