"""Every stage on an object store: the retrain flow with its roots in a bucket on moto's S3 server.

The bucket lives on a real moto S3 *server* on a loopback port (`s3_bucket` in conftest),
reached through s3fs over HTTP; the catalog CSV is in the bucket too. TensorFlow cannot open
s3:// URLs, so the shards are read through the worker's local cache (`storage.local_cache`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from flows.config import RetrainConfig
from tests.flow_helpers import run_env, stage_state, start_posterflow_run, tiny_config_data

pytestmark = pytest.mark.slow


def test_retrain_with_s3_roots_then_rerun_is_cached(harness, served_demo, standin_backbone,
                                                    s3_bucket, tmp_path, monkeypatch):
    import tensorflow as tf

    from flows.runs import run_retrain
    from storage import fs
    from storage.registry import Registry

    monkeypatch.setenv("POSTERFLOW_CACHE_DIR", str(tmp_path / "worker-cache"))
    csv = f"{s3_bucket}/catalogs/MovieGenre.csv"
    fsys, path = fs.url_to_fs(csv)
    fsys.put_file(served_demo.csv_path, path)
    data = tiny_config_data(csv, f"{s3_bucket}/data", standin_backbone)  # type: ignore[arg-type]
    config = RetrainConfig.model_validate(data)

    first = run_retrain(config)
    assert first.error is None, first.error
    out = first.as_dict()
    assert (out["version"], out["alias"]) == (1, "champion")
    registry = Registry(f"{s3_bucket}/data/registry")
    assert registry.versions("posterflow") == [1]
    assert out["report_dir"].startswith(s3_bucket)
    assert fs.exists(fs.join(out["report_dir"], "metrics.json"))

    download = tmp_path / "v1"
    fsys.get(fs.url_to_fs(registry.info("posterflow", 1).path)[1] + "/", str(download),
             recursive=True)
    serve = tf.saved_model.load(str(download)).signatures["serving_default"]
    poster = (Path(served_demo.posters_dir) / "1000000.jpg").read_bytes()
    assert serve(images=tf.constant([poster]))["probabilities"].shape[0] == 1

    second = run_retrain(config)
    assert second.error is None, second.error
    for stage in ("validate-catalog", "fetch-posters", "publish-dataset", "embed-posters",
                  "fit-model", "evaluate-model", "export-model", "register-model"):
        assert stage_state(second.stages, stage) == {"Cached"}, (stage, second.stages)
    assert registry.versions("posterflow") == [1]


KILL_WAIT_S = 300


def _kill_when(proc: subprocess.Popen[bytes], seen: Callable[[], bool], log: Path,
               what: str) -> None:
    """SIGKILL the run's process group (flow + API server) as soon as `seen()` holds."""
    deadline = time.monotonic() + KILL_WAIT_S
    while not seen():
        assert proc.poll() is None, f"the run ended before {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the run never reached {what}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.timeout(900)  # four `posterflow run`s, each with its own API server
def test_sigkill_during_fetch_embed_and_export_then_rerun(served_demo, standin_backbone,
                                                          s3_bucket, tmp_path, monkeypatch):
    from storage import fs
    from storage.model_export import InvalidModelError, read_export
    from storage.posters import PosterStore
    from storage.registry import Registry

    monkeypatch.setenv("POSTERFLOW_CACHE_DIR", str(tmp_path / "worker-cache"))
    data_root = f"{s3_bucket}/data"
    s3, root = fs.url_to_fs(data_root)
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump(
        tiny_config_data(served_demo.csv_path, data_root, standin_backbone)))  # type: ignore[arg-type]
    env, log = run_env(tmp_path), tmp_path / "run.log"

    def found(pattern: str) -> list[str]:
        s3.invalidate_cache()
        return list(s3.glob(f"{root}/{pattern}"))

    def published_datasets() -> list[str]:
        return [p.rsplit("/", 2)[-2] for p in found("datasets/*/dataset.json")]

    # 1. during fetch: once the first poster object is in the bucket
    _kill_when(start_posterflow_run(config, env, log, subprocess.DEVNULL),
               lambda: bool(found("posters/objects/*/*")), log, "the first stored poster")
    for obj in found("posters/objects/*/*"):  # every visible object is whole
        assert fs.sha256_bytes(s3.cat_file(obj)) == obj.rsplit("/", 1)[-1]
    assert published_datasets() == []
    # 2. during embed: once the dataset version is published (embedding comes next)
    _kill_when(start_posterflow_run(config, env, log, subprocess.DEVNULL),
               lambda: bool(published_datasets()), log, "a published dataset")
    (dataset,) = published_datasets()
    # 3. during export: once the run's report is written (the export comes next)
    _kill_when(start_posterflow_run(config, env, log, subprocess.DEVNULL),
               lambda: bool(found("runs/*/report/metrics.json")), log, "the model report")
    registry = Registry(f"{data_root}/registry")
    assert registry.versions("posterflow") == []
    for model in {p.split("/model/")[0] + "/model" for p in found("runs/*/model/**")}:
        with contextlib.suppress(InvalidModelError):  # partial = no saved_model.pb: no model
            read_export(s3.unstrip_protocol(model))

    rerun = start_posterflow_run(config, env, log)
    stdout, _ = rerun.communicate(timeout=KILL_WAIT_S)
    assert rerun.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(stdout)
    assert summary["version"] == 1 and registry.versions("posterflow") == [1]
    assert published_datasets() == [dataset] and summary["dataset_dir"].endswith(dataset)
    assert registry.verify("posterflow", 1).ok
    store = PosterStore(f"{data_root}/posters")
    index = store.read_index()
    assert all(fs.exists(store.path(sha)) for sha in index["sha256"])
