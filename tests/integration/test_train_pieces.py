"""The train stage's pieces (fit, evaluate, export) on any storage root, and `train` chaining them.

The same recipe trained by `train` on local folders and by the pieces with every folder on
a memory:// root (the dataset too, read through the worker's local cache) gives the same
metrics and the same predictions; the CLI's path hashes each shard once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import tensorflow as tf

from storage import fs
from storage.fits import FIT_JSON
from storage.shard_reader import read_records
from tasks.backbone import build_standin_backbone
from tasks.embed import embed_dataset
from tasks.evaluate import evaluate_fit
from tasks.export import export_fit
from tasks.train import fit_model, train
from tasks.train_config import HeadParams, TrainConfig
from tests.model_helpers import write_tiny_dataset


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_standin_backbone(tmp_path_factory.mktemp("bb") / "standin", output_dim=64)


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"memory://train-pieces-{uuid.uuid4().hex[:8]}"
    yield root
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


def _count_shard_hashing(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    hashed: Counter[str] = Counter()
    original = fs.sha256_file

    def counting(url: str, *args: object, **kwargs: object) -> str:
        if ".tfrecord" in str(url):
            hashed[str(url).rsplit("/", 1)[-1]] += 1
        return original(url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fs, "sha256_file", counting)
    return hashed


def _predict(model_dir: str, posters: list[bytes]) -> np.ndarray:
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    return serve(images=tf.constant(posters))["probabilities"].numpy()


@pytest.mark.slow  # two trainings and two SavedModel exports
def test_pieces_on_a_memory_root_match_train_on_local_folders(
        standin: Path, tmp_path: Path, memory_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTERFLOW_CACHE_DIR", str(tmp_path / "worker-cache"))
    dataset = write_tiny_dataset(tmp_path / "datasets")
    config = TrainConfig(backbone=str(standin), embeddings_root=str(tmp_path / "emb"),
                         batch_size=16, patience=3, compare_losses=True,
                         head=HeadParams(learning_rate=3e-3, epochs=6, hidden=16))
    hashed = _count_shard_hashing(monkeypatch)
    local = train(str(dataset), str(tmp_path / "run"), config)
    assert hashed == {f"{split}-00000-of-00001.tfrecord": 1 for split in ("train", "val", "test")}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["fit", "model", "report"]

    memory, _ = fs.url_to_fs(memory_root)
    remote_dataset = f"{memory_root}/datasets/{dataset.name}"
    for file in dataset.iterdir():
        memory.pipe_file(f"{remote_dataset}/{file.name}", file.read_bytes())
    remote = config.model_copy(update={"embeddings_root": f"{memory_root}/embeddings"})
    run = f"{memory_root}/runs/r1"
    embedded = embed_dataset(remote_dataset, f"{memory_root}/embeddings", str(standin),
                             views=remote.embedded_views())
    fit = fit_model(remote_dataset, f"{run}/fit", remote, backbone_id=embedded.backbone_id)
    evaluation = evaluate_fit(remote_dataset, fit, f"{run}/report", remote)
    model_dir = export_fit(fit, evaluation, f"{run}/model", remote)

    assert evaluation.metrics == local.metrics and fit.sweep == local.sweep
    assert fit.params["head"] == local.params["head"]
    for path in (f"{run}/fit/{FIT_JSON}", f"{run}/fit/selected.npz", f"{run}/fit/rival.npz",
                 f"{run}/report/metrics.json", f"{run}/report/probability_histograms.png",
                 f"{model_dir}/saved_model.pb"):
        assert fs.exists(path), path
    download = tmp_path / "downloaded"
    memory.get(f"{model_dir.removeprefix('memory://')}/", str(download), recursive=True)
    posters = [bytes(r["image"]) for r in read_records(str(dataset), "test").take(6)
               .as_numpy_iterator()]
    np.testing.assert_array_equal(_predict(str(download), posters),
                                  _predict(local.model_dir, posters))
    with pytest.raises(FileExistsError, match="already holds a fit"):
        fit_model(remote_dataset, fit.fit_dir, remote, backbone_id=embedded.backbone_id)
