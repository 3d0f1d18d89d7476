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
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from flows.config import RetrainConfig
from tests.flow_helpers import run_env, stage_state, start_posterflow_run, tiny_config_data

pytestmark = pytest.mark.slow
KILL_WAIT_S = 240


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for the module's in-process runs, so later tests reuse the training."""
    return tmp_path_factory.mktemp("flows") / "data"


def _artifacts(keys: list[str], flow_run_id: UUID | None = None) -> dict[str, str]:
    """Latest data of each artifact key (of one flow run, if given)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    run = ArtifactFilterFlowRunId(any_=[flow_run_id]) if flow_run_id else None
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys), flow_run_id=run),
            sort=ArtifactSort.CREATED_DESC)
    return {a.key: a.data for a in reversed(found)}  # the newest of each key last


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
                                                 data_root):
    import tensorflow as tf

    from flows.runs import run_retrain
    from storage.registry import Registry

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

    keys = ["catalog-validation", "fetch-outcomes", "model-report", "retrain-summary"]
    arts = _artifacts(keys)
    assert set(arts) == set(keys)
    assert "> integration test run" in arts["model-report"]
    assert Path(out["report_dir"], "summary.md").read_text() == arts["model-report"]
    assert "| genre | threshold | precision | recall |" in arts["model-report"]
    assert out["model_card"] == str(data_root / "registry/posterflow/cards/1.html")
    report = arts["model-report"]
    assert f"`{out['model_card']}`" in report and "file://" not in report
    assert "![Learning curves](data:image/png;base64," in arts["model-report"]
    assert arts["retrain-summary"].startswith("# posterflow v1: champion")
    assert "Worst-predicted test posters" in Path(out["model_card"]).read_text()
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
                  "fit-model", "evaluate-model", "export-model", "register-model"):
        assert stage_state(second.stages, stage) == {"Cached"}, (stage, second.stages)
    assert second.as_dict()["version"] == 1 and registry.versions("posterflow") == [1]


def _wait_for_paused_run(flow_name: str, timeout_s: float = KILL_WAIT_S) -> Any:
    """The first PAUSED run of a flow, once there is one."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    name=FlowRunFilterStateName(any_=["Paused"]))))
            if runs:
                return runs[0]
            time.sleep(1)
    raise AssertionError(f"no paused {flow_name} run within {timeout_s} s")


def _model_events(model: str, timeout_s: float = 60) -> list[Any]:
    """posterflow.model.* events about `model`, read back through the server's API."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(EventFilter(event=EventNameFilter(
                prefix=["posterflow.model."])), limit=50)
            mine = [e for e in page.events if e.resource.get("posterflow.model") == model]
            if len({e.event for e in mine}) >= 2 or time.monotonic() > deadline:
                return sorted(mine, key=lambda e: e.occurred)
            time.sleep(1)


def test_approval_required_pauses_times_out_then_an_api_approval_promotes(
        harness, served_demo, standin_backbone, data_root, tmp_path):
    """Reuses the first test's training when it ran (same data root, another registry)."""
    from prefect.flow_runs import resume_flow_run

    from flows.runs import run_retrain
    from storage.registry import Registry

    data = tiny_config_data(served_demo.csv_path, data_root, standin_backbone)
    data["registry"].update(root=str(tmp_path / "reg"), model_name="reviewed",
                            approval="required", approval_timeout_s=3)
    timed_out = run_retrain(RetrainConfig.model_validate(data))  # Prefect fails the paused
    assert timed_out.as_dict()["alias"] == "challenger"  # train subflow: "never resumed"
    registry = Registry(str(tmp_path / "reg"))
    assert registry.aliases("reviewed")["aliases"] == {"challenger": 1}
    card = tmp_path / "reg/reviewed/cards/1.html"
    assert "approval timed out" in card.read_text()

    data["registry"]["approval_timeout_s"] = 600
    with ThreadPoolExecutor(1) as pool:
        approved = pool.submit(run_retrain, RetrainConfig.model_validate(data))
        paused = _wait_for_paused_run("train")
        waiting = _artifacts(["model-report"], flow_run_id=paused.id)  # during the pause
        resume_flow_run(paused.id, run_input={"approve": True, "reason": "posters look right"})
        summary = approved.result(timeout=KILL_WAIT_S)
    assert waiting["model-report"].startswith("# reviewed v1 (awaiting approval)"), waiting
    assert summary.error is None, summary.error
    assert (summary.as_dict()["version"], summary.as_dict()["alias"]) == (1, "champion")
    state = registry.aliases("reviewed")
    assert state["aliases"] == {"champion": 1}
    assert state["history"][-2]["reason"].startswith("approved (posters look right); ")
    assert "champion" in card.read_text() and "awaiting approval" not in card.read_text()

    events = _model_events("reviewed")
    assert [e.event for e in events][:1] == ["posterflow.model.challenger"]
    promoted = [e for e in events if e.event == "posterflow.model.promoted"]
    assert promoted, [e.event for e in events]
    assert promoted[0].resource["posterflow.version"] == "1"
    assert promoted[0].payload["reason"].startswith("approved (posters look right)")
    assert promoted[0].payload["metrics"]["test_macro_f1"] == summary.as_dict()["test_macro_f1"]


def test_kill_mid_run_then_rerun_executes_only_unfinished_stages(served_demo, standin_backbone,
                                                                 tmp_path):
    data_root = tmp_path / "data"
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump(
        tiny_config_data(served_demo.csv_path, data_root, standin_backbone)))
    env, log = run_env(tmp_path), tmp_path / "run.log"

    victim = start_posterflow_run(config, env, log, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_WAIT_S
    while not list(data_root.glob("embeddings/*/*/part-*.parquet")):  # embedding has begun
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
    for unfinished in ("embed-posters", "fit-model", "evaluate-model", "export-model",
                       "register-model"):
        assert stage_state(stages, unfinished) == {"Completed"}, (unfinished, stages)
    assert summary["version"] == 1
    assert sorted(p.name for p in data_root.glob("registry/posterflow/[0-9]*")) == ["1"]
    assert_quiet(log.read_text())


def assert_quiet(output: str) -> None:
    """What a person reads: no TensorFlow native lines, no walls, no tracebacks."""
    for line in output.splitlines():
        assert not any(tag in line for tag in ("E0000", "W0000", "I0000")), line
        assert len(line) <= 300, line
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("failure", ["genre-check", "missing-catalog"])
def test_a_failed_catalog_check_is_one_line_and_a_failed_flow_run(
    failure, served_demo, standin_backbone, harness, tmp_path
):
    """A catalog check that fails, or the shipped nightly default naming a catalog that is
    not there: one line, a failed flow run, no traceback."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    data = tiny_config_data(served_demo.csv_path, tmp_path / "data", standin_backbone)
    if failure == "genre-check":
        data["catalog"]["min_genre_count"] = 10_000  # no genre reaches it: deterministic
        expected = "no genre is carried by >= 10000 of the"
    else:  # deployments/prefect.yaml's retrain-nightly, run where no catalog was put
        data["catalog_csv"] = "posterflow-data/MovieGenre.csv"
        expected = "catalog not found: posterflow-data/MovieGenre.csv"
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**run_env(tmp_path), "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(config), "--json"],
        env=env, capture_output=True, text=True, timeout=KILL_WAIT_S, check=False,
        cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert_quiet(proc.stderr)
    (clear,) = [line for line in proc.stderr.splitlines() if line.startswith("retrain Failed:")]
    assert expected in clear
    summary = json.loads(proc.stdout)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(summary["flow_run_id"]).state.is_failed()
    assert stage_state(summary["stages"], "validate-catalog") == {"Failed"}
