"""The train stage as separate Prefect tasks: embed, fit, evaluate, export, register.

Under `prefect_test_harness` on a tiny dataset version with the stand-in backbone: a first
run shows each piece as its own Completed task run and hashes each shard at most once per
task that reads it; a rerun finds every piece Cached and registers nothing; a lost export
is redone without fitting again.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prefect.context import TaskRunContext

from flows.config import TrainFlowConfig
from storage import fs
from tests.flow_helpers import stage_state
from tests.model_helpers import write_tiny_dataset

pytestmark = pytest.mark.slow

PIECES = ("embed-posters", "fit-model", "evaluate-model", "export-model", "register-model")
SHARDS = {"train": "train-00000-of-00001.tfrecord", "val": "val-00000-of-00001.tfrecord",
          "test": "test-00000-of-00001.tfrecord"}


def _run(config: TrainFlowConfig) -> tuple[Any, list[tuple[str, str]]]:
    """The train flow's result and (task run name, state) of each of its task runs."""
    from flows.runs import stage_states
    from flows.train import train_flow

    state = train_flow(config, return_state=True)
    assert state.is_completed() and state.state_details.flow_run_id, state.message
    return state.result(), stage_states(state.state_details.flow_run_id)


def _count_shard_hashing(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str | None, str]]:
    """Counts of (task name, shard file) for every sha256 taken of a shard from now on."""
    hashed: Counter[tuple[str | None, str]] = Counter()
    original = fs.sha256_file

    def counting(url: str, *args: object, **kwargs: object) -> str:
        name = str(url).rsplit("/", 1)[-1]
        if ".tfrecord" in name:
            context = TaskRunContext.get()
            hashed[(context.task.name if context else None, name)] += 1
        return original(url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fs, "sha256_file", counting)
    return hashed


def test_train_pieces_are_tasks_cached_and_each_shard_hashed_once_per_task(
        harness, standin_backbone, tmp_path, monkeypatch):
    from storage.registry import Registry

    data_root = tmp_path / "data"
    dataset = write_tiny_dataset(data_root / "datasets")
    config = TrainFlowConfig.model_validate({
        "dataset_dir": str(dataset), "storage": {"data_root": str(data_root)},
        "train": {"backbone": standin_backbone, "batch_size": 16, "patience": 3,
                  "head": {"learning_rate": 1e-3, "epochs": 5, "hidden": 16}}})
    hashed = _count_shard_hashing(monkeypatch)

    first, stages = _run(config)
    for piece in PIECES:
        assert [state for name, state in stages if name.startswith(piece)] == ["Completed"], \
            (piece, stages)
    assert max(hashed.values()) == 1, hashed  # never twice by one task
    reads = {task: {shard for t, shard in hashed if t == task} for task, _ in hashed}
    assert reads == {  # the shards each task reads, each verified by it once
        "embed-posters": set(SHARDS.values()),
        "fit-model": {SHARDS["train"], SHARDS["val"]},
        "evaluate-model": {SHARDS["val"], SHARDS["test"]},
        "pick-card-posters": {SHARDS["test"]},
    }
    run_dir = Path(first.model_dir).parent
    assert sorted(p.name for p in run_dir.iterdir()) == ["fit", "model", "report"]
    assert (run_dir / "fit" / "fit.json").is_file() and (run_dir / "report/metrics.json").is_file()
    registry = Registry(str(data_root / "registry"))
    assert registry.versions("posterflow") == [1]

    hashed.clear()
    again, stages = _run(config)
    for piece in PIECES:
        assert stage_state(stages, piece) == {"Cached"}, (piece, stages)
    assert again.model_dir == first.model_dir and registry.versions("posterflow") == [1]
    assert not [task for task, _ in hashed if task in PIECES], hashed  # cached: nothing read

    shutil.rmtree(first.model_dir)  # the export is lost: only the export runs again
    resumed, stages = _run(config)
    for piece in ("embed-posters", "fit-model", "evaluate-model", "register-model"):
        assert stage_state(stages, piece) == {"Cached"}, (piece, stages)
    assert stage_state(stages, "export-model") == {"Completed"}
    assert resumed.model_dir == first.model_dir
    assert (Path(first.model_dir) / "saved_model.pb").is_file()
    assert registry.versions("posterflow") == [1]
