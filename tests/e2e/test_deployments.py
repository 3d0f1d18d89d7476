"""The shipped deployments, run: deployments/prefect.yaml and prefect-gpu.yaml as written, on a
real Prefect server.

First the CPU-only server of the README: only the process pool `cpu` exists, and
`prefect deploy --all` of prefect.yaml, unchanged, must succeed and create every deployment
in it. Then the GPU opt-in: the GPU pools are created with the commands of the README (`gpu`:
docker with deployments/work-pools/gpu-docker.json) and prefect-gpu.yaml is deployed. The
tests check what the server validated: every deployment with its pool and parameters, and the
GPU deployment's job variables against both GPU job templates (the Kubernetes one on a second
pool), which the server refuses when they break a template's schema.

No docker daemon, Kubernetes cluster or GPU is here, so the GPU pool's jobs cannot run.
What runs instead is `retrain-gpu`'s flow with `retrain-gpu`'s parameters and environment on
the process pool: `prefect deployment run retrain/retrain-nightly` (same entrypoint, pool
`cpu`) with `--param config=` the config the server holds for `retrain-gpu` and
`--job-variable env=` its env. Its s3:// roots (bucket `posterflow`) are served by the moto S3
server on loopback, reached through AWS's standard variables (AWS_ENDPOINT_URL, ...) in the
worker's environment, as a worker host's credentials would be. Added to those parameters is
only what a 60-movie generated catalog needs: the low genre cut, the mirror's host allowed,
the stand-in backbone and a short fit. The run must complete and leave registry version 1
in the bucket.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from storage.registry import Registry
from tests.flow_helpers import tiny_config_data
from tests.prefect_server_helpers import REPO, api, api_status, prefect_cli, wait_for_flow_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEPLOYMENTS = REPO / "deployments"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"  # the CPU deployments
PREFECT_GPU_YAML = DEPLOYMENTS / "prefect-gpu.yaml"  # the opt-in GPU deployment
POOL_TEMPLATES = DEPLOYMENTS / "work-pools"
GPU_TEMPLATES = {"gpu": ("docker", POOL_TEMPLATES / "gpu-docker.json"),
                 "gpu-kubernetes": ("kubernetes", POOL_TEMPLATES / "gpu-kubernetes.json")}
RUN_S = 300
REGISTERED_MODEL = "posterflow"


@pytest.fixture(scope="module")
def worker_env(s3_env: dict[str, str]) -> dict[str, str]:
    """The worker host's credentials: AWS's standard variables, pointed at the moto server."""
    return s3_env


def _deploy_all(env: dict[str, str], prefect_file: Path) -> None:
    """`prefect deploy --all` of one shipped file, as the README says; fails unless exit 0."""
    prefect_cli("--no-prompt", "deploy", "--prefect-file", str(prefect_file), "--all", env=env)


def _server_deployments(url: str) -> dict[str, dict[str, Any]]:
    """The deployments the server holds, by name."""
    return {d["name"]: d for d in api(f"{url}/api/deployments/filter", {})}


@pytest.fixture(scope="module")
def cpu_deployed(prefect_server: tuple[str, dict[str, str]],
                 process_worker: Path) -> dict[str, dict[str, Any]]:
    """prefect.yaml deployed on a CPU-only server: the process pool `cpu` and no other."""
    url, env = prefect_server
    pools = [pool["name"] for pool in api(f"{url}/api/work_pools/filter", {})]
    assert pools == ["cpu"], pools
    _deploy_all(env, PREFECT_YAML)
    return _server_deployments(url)


@pytest.fixture(scope="module")
def deployed(prefect_server: tuple[str, dict[str, str]],
             cpu_deployed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Then both GPU pools created from their templates, and prefect-gpu.yaml deployed."""
    url, env = prefect_server
    for pool, (kind, template) in GPU_TEMPLATES.items():
        prefect_cli("work-pool", "create", pool, "--type", kind, "--base-job-template",
                    str(template), env=env)
    _deploy_all(env, PREFECT_GPU_YAML)
    return _server_deployments(url)


def _shipped(*prefect_files: Path) -> dict[str, dict[str, Any]]:
    """The deployments as the shipped files write them."""
    return {d["name"]: d for path in prefect_files
            for d in yaml.safe_load(path.read_text())["deployments"]}


def test_prefect_yaml_deploys_all_of_its_deployments_with_only_the_cpu_pool(cpu_deployed):
    # A `deploy --all` stops at the first deployment whose pool is missing: none may be.
    shipped = _shipped(PREFECT_YAML)
    assert sorted(cpu_deployed) == sorted(shipped) == ["ingest", "retrain-nightly", "score-nightly"]
    assert {spec["work_pool"]["name"] for spec in shipped.values()} == {"cpu"}


def test_every_deployment_is_deployed_as_written(deployed):
    shipped = _shipped(PREFECT_YAML, PREFECT_GPU_YAML)
    assert sorted(deployed) == sorted(shipped)
    for name, spec in shipped.items():
        assert deployed[name]["work_pool_name"] == spec["work_pool"]["name"], name
        assert deployed[name]["parameters"] == spec["parameters"], name
        assert deployed[name]["job_variables"] == spec["work_pool"].get("job_variables", {}), name
    assert deployed["retrain-nightly"]["schedules"][0]["schedule"]["cron"] == "0 3 * * *"


def test_gpu_job_variables_are_validated_against_both_gpu_templates(deployed, prefect_server):
    url, _ = prefect_server
    gpu = deployed["retrain-gpu"]
    shipped = gpu["job_variables"]

    def move_to(pool: str, job_variables: dict[str, Any]) -> int:
        return api_status(f"{url}/api/deployments/{gpu['id']}", "PATCH",
                          {"work_pool_name": pool, "job_variables": job_variables})

    try:
        for pool in GPU_TEMPLATES:
            assert move_to(pool, shipped) == 204, pool
            # The check is real: a value the template's schema refuses is refused.
            assert move_to(pool, {**shipped, "gpu_count": 0}) == 409, pool
    finally:
        assert move_to("gpu", shipped) == 204


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s leaves set in it, sections merged recursively."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def _run_deployment(env: dict[str, str], name: str, config: dict[str, Any],
                    job_env: dict[str, str]) -> str:
    """`prefect deployment run NAME` with this config and env; the flow run's id."""
    result = prefect_cli("deployment", "run", name, "--param", f"config={json.dumps(config)}",
                         "--job-variable", f"env={json.dumps(job_env)}", env=env)
    match = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout
    return match.group(1)


def test_retrain_gpu_parameters_run_on_the_process_pool(deployed, prefect_server,
                                                        process_worker, served_demo,
                                                        standin_backbone, s3_env, tmp_path):
    import s3fs

    url, env = prefect_server
    gpu = deployed["retrain-gpu"]
    config: dict[str, Any] = gpu["parameters"]["config"]
    tiny = tiny_config_data(served_demo.csv_path, tmp_path / "unused", standin_backbone)
    config = _merge(config, {k: tiny[k] for k in ("catalog", "fetch", "train", "notes")})
    store = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]})
    bucket = config["storage"]["data_root"].removeprefix("s3://").partition("/")[0]
    store.mkdir(bucket)
    store.put_file(served_demo.csv_path, config["catalog_csv"])

    flow_run_id = _run_deployment(env, "retrain/retrain-nightly", config,
                                  gpu["job_variables"]["env"])
    run = wait_for_flow_run(url, flow_run_id, RUN_S)
    assert run["state"]["type"] == "COMPLETED", (
        f"{run['state']['message']}\n{process_worker.read_text()[-6000:]}")
    assert run["parameters"]["config"]["storage"] == config["storage"]
    assert run["job_variables"]["env"] == gpu["job_variables"]["env"]
    registry = Registry(f"{config['storage']['data_root']}/registry")
    assert registry.versions(REGISTERED_MODEL) == [1]
    assert registry.verify(REGISTERED_MODEL, 1).ok
