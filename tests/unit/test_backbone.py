"""Backbone resolution, ids, the stand-in SavedModel and the choice of fine-tuned variables."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from tasks import backbone
from tasks.fine_tune import top_block_variables


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return backbone.build_standin_backbone(tmp_path_factory.mktemp("bb") / "standin", seed=0)


def test_standin_keeps_the_feature_vector_contract(standin: Path) -> None:
    images = np.random.default_rng(0).random((2, 224, 224, 3), np.float32)
    loaded = tf.saved_model.load(str(standin))
    direct = loaded(images).numpy()
    via_hub = hub.KerasLayer(str(standin), trainable=False)(images).numpy()
    assert direct.shape == (2, 1280) and direct.dtype == np.float32
    np.testing.assert_allclose(direct, via_hub, rtol=1e-5, atol=1e-6)
    assert np.isfinite(direct).all() and direct.std() > 0  # not a constant
    assert not np.allclose(direct[0], direct[1])  # depends on the image


def test_resolve_local_folder_and_reject_non_saved_model(standin: Path, tmp_path: Path) -> None:
    assert backbone.resolve_backbone(str(standin)) == str(standin.resolve())
    with pytest.raises(backbone.BackboneUnavailableError, match="holds no saved_model.pb"):
        backbone.resolve_backbone(str(tmp_path))


@pytest.mark.parametrize("handle", ["nope", "../shared/backbones/nope", "/abs/nope"])
def test_a_missing_local_folder_is_not_taken_for_a_download(handle: str) -> None:
    with pytest.raises(backbone.BackboneUnavailableError) as error:
        backbone.resolve_backbone(handle)
    message = str(error.value)
    assert message.startswith(f"backbone folder not found: {handle}")
    assert "(a local path: nothing is downloaded)" in message
    assert "cannot download" not in message and "Offline" not in message


def test_a_local_folder_without_a_saved_model_says_it_is_local(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    with pytest.raises(backbone.BackboneUnavailableError,
                       match=r"holds no saved_model\.pb: not a SavedModel folder \(a local path: "
                       r"nothing is downloaded\)") as error:
        backbone.resolve_backbone(str(tmp_path))
    assert "cannot download" not in str(error.value)


def test_remote_handles_are_told_apart_from_local_paths(standin: Path) -> None:
    for remote in (backbone.DEFAULT_BACKBONE, "gs://bucket/model",
                   "google/mobilenet-v2/tensorFlow2/100-224-feature-vector/2"):
        assert backbone.is_remote(remote), remote
    for local in (str(standin), "../shared/backbones/x", "./model", "/abs/model", "model"):
        assert not backbone.is_remote(local), local


def test_offline_without_a_copy_says_how_to_point_at_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    with pytest.raises(backbone.BackboneUnavailableError,
                       match=r"cannot download backbone 'http://127\.0\.0\.1:9/m/1'.*--backbone"):
        backbone.resolve_backbone("http://127.0.0.1:9/m/1")  # discard port: refused at once


def test_tfhub_cache_dir_is_honoured(standin: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub-cache"
    handle = backbone.DEFAULT_BACKBONE
    shutil.copytree(standin, cache / hashlib.sha1(handle.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    resolved = backbone.resolve_backbone(handle)  # no network: served from the cache
    assert Path(resolved).parent == cache


def test_backbone_id_is_readable_and_content_addressed(standin: Path, tmp_path: Path) -> None:
    ident = backbone.backbone_id(str(standin))
    assert ident.startswith("standin-") and len(ident.split("-")[-1]) == 12
    copy = shutil.copytree(standin, tmp_path / "standin")
    assert backbone.backbone_id(str(copy)) == ident  # same bytes, same id wherever it lives
    other = backbone.build_standin_backbone(tmp_path / "other", seed=1)
    assert backbone.backbone_id(str(other)).split("-")[-1] != ident.split("-")[-1]
    assert backbone.backbone_id(backbone.DEFAULT_BACKBONE).startswith(
        "mobilenet_v2_100_224_feature_vector-")
    kaggle = backbone.backbone_id("google/mobilenet-v2/tensorFlow2/100-224-feature-vector/2")
    assert kaggle.startswith("tensorFlow2_100-224-feature-vector-")


def test_top_blocks_skip_batchnorm_and_lower_blocks(standin: Path) -> None:
    layer = hub.KerasLayer(str(standin), trainable=True)
    names = [v.name for v in top_block_variables(layer.trainable_weights, 2)]
    assert names == ["block_3_expand/kernel:0", "block_3_depthwise/depthwise_kernel:0",
                     "block_3_project/kernel:0", "block_4_expand/kernel:0",
                     "block_4_depthwise/depthwise_kernel:0", "block_4_project/kernel:0",
                     "Conv_1/kernel:0"]
    assert backbone.block_index("MobilenetV2/expanded_conv_16/project/weights:0") == 16
