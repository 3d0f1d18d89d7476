"""Flow configs: YAML + overrides, composition, the UI schema, deployments/ against them."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import sys
import tomllib
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from flows.config import (
    IngestConfig,
    RetrainConfig,
    ScoreConfig,
    TrainFlowConfig,
    load_config_data,
    parse_override,
    set_dotted,
)

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
REPO = DEPLOYMENTS.parent
MODELS = {"flows/retrain.py:retrain_flow": RetrainConfig,
          "flows/ingest.py:ingest_flow": IngestConfig,
          "flows/train.py:train_flow": TrainFlowConfig,
          "flows/score.py:score_flow": ScoreConfig}
HAS_PREFECT_DASK = importlib.util.find_spec("prefect_dask") is not None


def test_yaml_file_plus_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("catalog_csv: a.csv\ntrain:\n  head:\n    epochs: 3\n")
    data = load_config_data(path, ["train.head.epochs=7", "fetch.allow_hosts=[127.0.0.1]",
                                   "registry.force=true", "storage.data_root=s3://b/p"])
    config = RetrainConfig.model_validate(data)
    assert config.train.head.epochs == 7
    assert config.fetch.allow_hosts == ["127.0.0.1"]
    assert config.registry.force is True
    assert config.storage.path("runs") == "s3://b/p/runs"


def test_json_config_and_no_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"catalog_csv": "x.csv", "scale": {"fetch_chunks": 3}}))
    assert RetrainConfig.model_validate(load_config_data(path, [])).scale.fetch_chunks == 3
    assert load_config_data(None, ["catalog_csv=y.csv"]) == {"catalog_csv": "y.csv"}


@pytest.mark.parametrize("bad", ["no-equals", "=5"])
def test_override_needs_key_and_value(bad):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override(bad)


def test_override_cannot_descend_into_a_value():
    with pytest.raises(ValueError, match="is a value"):
        set_dotted({"train": 5}, "train.seed", 1)


def test_unknown_or_missing_settings_are_refused():
    with pytest.raises(ValidationError, match="catalog_csv"):
        RetrainConfig.model_validate({})
    with pytest.raises(ValidationError, match="epochz"):
        RetrainConfig.model_validate({"catalog_csv": "a", "train": {"head": {"epochz": 1}}})


def test_retrain_splits_into_ingest_and_train():
    config = RetrainConfig(catalog_csv="a.csv", notes=["n"])
    ingest = config.ingest_config()
    assert ingest.catalog_csv == "a.csv" and ingest.fetch == config.fetch
    train = config.train_config("root/datasets/v1")
    assert train.dataset_dir == "root/datasets/v1" and train.train == config.train
    assert train.notes == ["n"]


def test_flow_parameter_schema_is_a_typed_form_with_descriptions():
    from prefect.utilities.callables import parameter_schema

    from flows.retrain import retrain_flow

    schema = parameter_schema(retrain_flow).model_dump_for_openapi()
    assert schema["required"] == ["config"]
    definitions = schema["definitions"]
    retrain_props = definitions["RetrainConfig"]["properties"]
    assert "MovieGenre.csv" in retrain_props["catalog_csv"]["description"]
    for section in ("TrainConfig", "FetchConfig", "CatalogConfig", "ShardConfig",
                    "StorageConfig", "ScaleOutConfig", "RegistryConfig"):
        props = definitions[section]["properties"]
        assert all("description" in p for p in props.values()), section


# prefect.yaml: the CPU deployments; prefect-gpu.yaml: the opt-in GPU one (its own pool).
PREFECT_FILES = ("prefect.yaml", "prefect-gpu.yaml")


def _deployments(*files: str) -> list[dict]:
    """The deployments of the shipped prefect files (default: all of them)."""
    return [d for name in files or PREFECT_FILES
            for d in yaml.safe_load((DEPLOYMENTS / name).read_text())["deployments"]]


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_deployment_parameters_match_the_config_model(deployment):
    model = MODELS[deployment["entrypoint"]]
    assert set(deployment["parameters"]) == {"config"}
    model.model_validate(deployment["parameters"]["config"])
    # The entrypoint is a flow whose one parameter is typed with that model.
    path, _, function = deployment["entrypoint"].partition(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
    assert list(inspect.signature(flow.fn).parameters) == ["config"]
    assert typing.get_type_hints(flow.fn)["config"] is model


def test_deployments_have_the_promised_pools_and_schedule():
    by_name = {d["name"]: d for d in _deployments()}
    assert set(by_name) == {"retrain-nightly", "retrain-gpu", "ingest", "score-nightly"}
    # `prefect deploy --all` of prefect.yaml must work with only the `cpu` pool.
    assert {d["work_pool"]["name"] for d in _deployments("prefect.yaml")} == {"cpu"}
    assert [d["name"] for d in _deployments("prefect-gpu.yaml")] == ["retrain-gpu"]
    nightly = by_name["retrain-nightly"]
    assert nightly["work_pool"]["name"] == "cpu"
    assert [s["cron"] for s in nightly["schedules"]] == ["0 3 * * *"]
    assert by_name["retrain-gpu"]["work_pool"]["name"] == "gpu"
    assert "schedules" not in by_name["ingest"]
    assert [s["cron"] for s in by_name["score-nightly"]["schedules"]] == ["0 5 * * *"]


def test_gpu_pool_templates_request_one_nvidia_gpu():
    docker = json.loads((DEPLOYMENTS / "work-pools" / "gpu-docker.json").read_text())
    request = docker["job_configuration"]["container_create_kwargs"]["device_requests"][0]
    assert request["driver"] == "nvidia" and request["capabilities"] == [["gpu"]]
    assert docker["variables"]["properties"]["gpu_count"]["default"] == 1
    k8s = json.loads((DEPLOYMENTS / "work-pools" / "gpu-kubernetes.json").read_text())
    container = k8s["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert k8s["variables"]["properties"]["gpu_count"]["default"] == 1


def test_worker_images_copy_every_package_and_keep_the_pinned_tensorflow():
    # `pip install .` silently skips an `include` package that was not copied into the image.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for name in ("Dockerfile.gpu", "Dockerfile.cpu"):
        copied = re.findall(r"^COPY (\S+) \./\1$", (DEPLOYMENTS / name).read_text(), re.M)
        assert set(packages) <= set(copied), (name, packages, copied)
    # The GPU base image's TensorFlow must be the pinned release, or pip replaces it (and CUDA).
    pin = next(d for d in project["project"]["dependencies"] if d.startswith("tensorflow=="))
    base = re.search(r"^FROM tensorflow/tensorflow:(\S+)-gpu$",
                     (DEPLOYMENTS / "Dockerfile.gpu").read_text(), re.M)
    assert base and base.group(1).startswith(pin.removeprefix("tensorflow==").rstrip("*")), pin


def test_task_runner_threads_by_default():
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.config import ScaleOutConfig
    from flows.runners import task_runner

    runner = task_runner(ScaleOutConfig(max_workers=3))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


def test_dask_runner_without_its_extra_says_how_to_install_it(monkeypatch):
    from flows.config import ScaleOutConfig
    from flows.runners import task_runner

    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "flows.dask_runner", raising=False)
    with pytest.raises(RuntimeError, match=r"posterflow\[dask\]"):
        task_runner(ScaleOutConfig(task_runner="dask"))


@pytest.mark.skipif(not HAS_PREFECT_DASK,
                    reason="prefect-dask is not installed (pip install 'posterflow[dask]')")
def test_dask_runner_is_a_local_cluster_of_single_threaded_workers_or_the_given_scheduler():
    # Running on a cluster is tests/integration/test_dask_ingest.py's job.
    from flows.config import ScaleOutConfig
    from flows.dask_runner import SharedApiDaskTaskRunner
    from flows.runners import task_runner

    local = task_runner(ScaleOutConfig(task_runner="dask", max_workers=3))
    assert isinstance(local, SharedApiDaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1}
    remote = task_runner(ScaleOutConfig(task_runner="dask", dask_address="tcp://h:8786"))
    assert remote.address == "tcp://h:8786"
    assert isinstance(remote.duplicate(), SharedApiDaskTaskRunner)  # what each flow run enters
