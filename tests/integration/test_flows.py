"""The retrain flow end to end on a tiny generated set, and resume after a SIGKILL.

Real components only: generated posters served over HTTP by `posterflow mirror`, the GX
catalog stage, aiohttp fetch, TFRecord shards, the tiny stand-in backbone, tf_keras
training, the SavedModel export and the registry.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from flows.config import RetrainConfig
from tests.flow_helpers import run_env, stage_state, start_posterflow_run, tiny_config_data

pytestmark = pytest.mark.slow
KILL_WAIT_S = 240


def _artifacts(keys: list[str]) -> dict[str, str]:
    """Latest data of each artifact key."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=keys)))
    return {a.key: a.data for a in found}


def _assert_table_counts_every_reject(table: list[dict], catalog_dir: str) -> None:
    """The validation table names each of the demo's defects with the count in rejects.parquet."""
    import pandas as pd

    rejected = {r["reject reason"]: r["rows"] for r in table if r["check"] == "rows rejected"}
    on_disk = pd.read_parquet(Path(catalog_dir, "rejects.parquet"))["reasons"]
    assert rejected == dict(Counter(reason for reasons in on_disk for reason in reasons))
    assert rejected == {"bad_imdb_id": 1, "dropped_genre": 1, "duplicate_id": 1,
                        "missing_genre": 1, "missing_poster": 1}  # tasks/demo.py's defects
    accepted = next(r for r in table if r["check"] == "rows accepted")
    assert accepted["rows"] == len(pd.read_parquet(Path(catalog_dir, "catalog.parquet")))


def test_retrain_end_to_end_then_rerun_is_cached(harness, served_demo, standin_backbone,
                                                 tmp_path):
    import tensorflow as tf

    from flows.runs import run_retrain
    from storage.registry import Registry

    data_root = tmp_path / "data"
    config = RetrainConfig.model_validate(
        tiny_config_data(served_demo.csv_path, data_root, standin_backbone))
    first = run_retrain(config)
    assert first.error is None, first.error
    out = first.as_dict()
    assert {state for _, state in first.stages} == {"Completed"}
    assert sum(name.startswith("build-dataset-part-") for name, _ in first.stages) == 2
    assert (out["version"], out["alias"]) == (1, "champion")
    assert out["fetch_outcomes"]["http_4xx"] == 1  # the demo's row without a poster file
    assert Path(out["data_docs"]).is_file() and Path(out["report_dir"], "metrics.json").is_file()

    arts = _artifacts(["catalog-validation", "fetch-outcomes", "model-report",
                       "registered-model", "catalog-data-docs"])
    assert set(arts) == {"catalog-validation", "fetch-outcomes", "model-report",
                         "registered-model", "catalog-data-docs"}
    assert "> integration test run" in arts["model-report"]
    assert Path(out["report_dir"], "summary.md").read_text() == arts["model-report"]
    assert "| label | precision | recall |" in arts["model-report"]
    _assert_table_counts_every_reject(json.loads(arts["catalog-validation"]), out["catalog_dir"])

    registry = Registry(str(data_root / "registry"))
    serve = tf.saved_model.load(registry.path("posterflow")).signatures["serving_default"]
    poster = (Path(served_demo.posters_dir) / "1000000.jpg").read_bytes()
    prediction = serve(images=tf.constant([poster]))
    assert prediction["probabilities"].shape == (1, len(json.loads(
        Path(out["catalog_dir"], "labels.json").read_text())["labels"]))

    second = run_retrain(config)
    assert second.error is None, second.error
    for stage in ("validate-catalog", "fetch-posters", "publish-dataset", "embed-posters",
                  "train-model", "register-model"):
        assert stage_state(second.stages, stage) == {"Cached"}, (stage, second.stages)
    assert second.as_dict()["version"] == 1 and registry.versions("posterflow") == [1]


def test_kill_mid_run_then_rerun_executes_only_unfinished_stages(served_demo, standin_backbone,
                                                                 tmp_path):
    data_root = tmp_path / "data"
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump(
        tiny_config_data(served_demo.csv_path, data_root, standin_backbone)))
    env, log = run_env(tmp_path), tmp_path / "run.log"

    victim = start_posterflow_run(config, env, log, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_WAIT_S
    while not list(data_root.glob("embeddings/*/part-*.parquet")):  # embedding has begun
        assert victim.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the flow never reached the embed stage"
        time.sleep(0.1)
    os.killpg(victim.pid, signal.SIGKILL)  # the flow and its ephemeral API server
    victim.wait()
    assert not list(data_root.glob("registry/posterflow/[0-9]*"))

    rerun = start_posterflow_run(config, env, log)
    stdout, _ = rerun.communicate(timeout=KILL_WAIT_S)
    assert rerun.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(stdout)
    stages = summary["stages"]
    for finished in ("validate-catalog", "fetch-posters", "publish-dataset"):
        assert stage_state(stages, finished) == {"Cached"}, (finished, stages)
    for unfinished in ("train-model", "register-model"):
        assert stage_state(stages, unfinished) == {"Completed"}, (unfinished, stages)
    assert summary["version"] == 1
    assert sorted(p.name for p in data_root.glob("registry/posterflow/[0-9]*")) == ["1"]
