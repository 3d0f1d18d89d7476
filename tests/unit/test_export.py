"""Export: a self-contained SavedModel that serves raw posters with its thresholds and assets.

The crafted head gives every poster probabilities [0.3, 0.6, 0.9]; with thresholds
{a: 0.2, b: 0.7} (c untuned, 0.5) the signature must answer genres ["c", "a", ""]: most
probable first, b below its tuned threshold, padded with "".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.export import export_model, full_thresholds, load_model_assets, predict_files
from tests.export_helpers import LABELS, PROBS, crafted_head, encoded, export_crafted_model

EXPECTED_GENRES = ["c", "a", ""]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One exported model (stand-in backbone + crafted head) shared by this module's tests."""
    return export_crafted_model(tmp_path_factory.mktemp("export"))


# Runs in a fresh interpreter (-I: no PYTHONPATH, no user site) from outside the repository;
# project modules, tf_keras and tensorflow_hub are made unimportable, so loading must need
# nothing but TensorFlow.
RELOAD = r"""
import importlib.abc, json, sys
BLOCKED = {"tasks", "storage", "flows", "tf_keras", "tensorflow_hub"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
sys.meta_path.insert(0, Block())
import tensorflow as tf
model_dir, jpeg, png = sys.argv[1:4]
model = tf.saved_model.load(model_dir)
images = tf.constant([open(jpeg, "rb").read(), open(png, "rb").read()])
served = model.signatures["serving_default"](images=images)
pixels = model.signatures["serving_images"](images=tf.zeros([1, 224, 224, 3]))
feature_spec = model.signatures["serving_features"].structured_input_signature[1]["features"]
head_only = model.signatures["serving_features"](
    features=tf.zeros([1, feature_spec.shape[1], feature_spec.shape[2]]))
print(json.dumps({
    "signatures": sorted(model.signatures),
    "probabilities": served["probabilities"].numpy().tolist(),
    "genres": [[g.decode() for g in row] for row in served["genres"].numpy()],
    "pixel_genres": [[g.decode() for g in row] for row in pixels["genres"].numpy()],
    "feature_genres": [[g.decode() for g in row] for row in head_only["genres"].numpy()],
    "loaded": sorted({m.split(".")[0] for m in sys.modules} & BLOCKED),
}))
"""


def test_reloads_in_fresh_python_with_only_tensorflow(exported: Path, tmp_path: Path) -> None:
    jpeg, png = tmp_path / "p.jpg", tmp_path / "p.png"
    jpeg.write_bytes(encoded("JPEG"))
    png.write_bytes(encoded("PNG", size=(300, 200)))
    proc = subprocess.run(
        [sys.executable, "-I", "-c", RELOAD, str(exported), str(jpeg), str(png)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["signatures"] == ["serving_default", "serving_features", "serving_images"]
    assert out["loaded"] == []
    np.testing.assert_allclose(out["probabilities"], [PROBS, PROBS], atol=1e-6)
    assert out["genres"] == [EXPECTED_GENRES, EXPECTED_GENRES]
    assert out["pixel_genres"] == [EXPECTED_GENRES]
    assert out["feature_genres"] == [EXPECTED_GENRES]


def test_saved_model_cli_lists_both_signatures(exported: Path) -> None:
    cli = Path(sys.executable).with_name("saved_model_cli")
    proc = subprocess.run([str(cli), "show", "--dir", str(exported), "--all"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for expected in ("signature_def['serving_default']", "signature_def['serving_images']",
                     "signature_def['serving_features']",
                     "outputs['probabilities']", "outputs['genres']", "dtype: DT_STRING"):
        assert expected in proc.stdout


def test_assets_inside_the_model(exported: Path) -> None:
    assets = load_model_assets(exported)
    assert assets["labels"] == LABELS
    assert assets["thresholds"] == {"a": 0.2, "b": 0.7, "c": 0.5}
    assert assets["metrics"]["test"]["macro_f1"] == 0.4
    lineage = assets["lineage"]
    assert lineage["dataset_version"] == "ds-123" and lineage["flow_run_id"] == "run-1"
    assert lineage["params"] == {"lr": 0.001}
    assert lineage["backbone_handle"].endswith("backbone") and lineage["code_revision"]
    # staged then renamed: nothing but the final folder is left beside it
    assert [p.name for p in exported.parent.iterdir()] == ["model"]


def test_export_refuses_to_overwrite_and_mismatched_labels(exported: Path, tmp_path: Path) -> None:
    common = {"backbone_handle": "unused", "thresholds": {}, "metrics": {}, "lineage": {}}
    with pytest.raises(FileExistsError, match="already exists"):
        export_model(exported, head=crafted_head(), labels=LABELS, **common)
    with pytest.raises(ValueError, match="predicts 3 labels, but 2 label names"):
        export_model(tmp_path / "m", head=crafted_head(), labels=["a", "b"], **common)
    assert not (tmp_path / "m").exists()


def test_full_thresholds_fills_untuned_and_rejects_bad_names() -> None:
    assert full_thresholds(LABELS, {"b": 0.25}) == {"a": 0.5, "b": 0.25, "c": 0.5}
    with pytest.raises(ValueError, match=r"does not have: \['zz'\]"):
        full_thresholds(LABELS, {"zz": 0.1})
    with pytest.raises(ValueError, match="must lie in"):
        full_thresholds(LABELS, {"a": 1.5})


def test_predict_files_reports_bad_files_per_file(exported: Path, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    good.write_bytes(encoded("PNG"))
    bad.write_bytes(b"<html>not a poster</html>")
    results = predict_files(exported, [good, bad, tmp_path / "missing.jpg"])
    assert results[0]["genres"] == ["c", "a"]
    assert results[0]["probabilities"] == pytest.approx(dict(zip(LABELS, PROBS, strict=True)))
    assert "not a decodable" in results[1]["error"] and "25 bytes" in results[1]["error"]
    assert "cannot read" in results[2]["error"]


def test_predict_refuses_an_image_over_fetchs_pixel_cap(exported: Path, tmp_path: Path) -> None:
    from tests.fetch_helpers import png_bomb

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(12_000, 12_000))  # 144 Mpx declared in a few hundred bytes
    [result] = predict_files(exported, [bomb])
    assert result["error"] == "12000x12000 exceeds the 40,000,000 pixel cap"


def test_predict_cli_prints_json_lines_and_exit_codes(exported: Path, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(encoded("JPEG"))
    bad.write_bytes(b"garbage")
    runner = CliRunner()
    ok = runner.invoke(app, ["predict", str(exported), str(good)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout.strip())["genres"] == ["c", "a"]
    mixed = runner.invoke(app, ["predict", str(exported), str(good), str(bad)])
    assert mixed.exit_code == 2 and "Traceback" not in mixed.output
    lines = [json.loads(line) for line in mixed.stdout.strip().splitlines()]
    assert [("error" in line) for line in lines] == [False, True]
    not_a_model = runner.invoke(app, ["predict", str(tmp_path), str(good)])
    assert not_a_model.exit_code == 2
    assert "Traceback" not in not_a_model.output and "not an exported model" in not_a_model.output


def test_an_image_model_is_exported_as_it_is(tmp_path: Path) -> None:
    # fine-tune mode hands over the whole model (images in, backbone inside): no backbone added
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    images = tf_keras.Input((224, 224, 3))
    pooled = tf_keras.layers.GlobalAveragePooling2D()(images)
    model = tf_keras.Model(images, tf_keras.layers.Dense(3, activation="sigmoid")(pooled))
    out = export_model(tmp_path / "model", backbone_handle="not/resolved", head=model,
                       labels=LABELS, thresholds={}, metrics={}, lineage={})
    pixels = tf.random.uniform([2, 224, 224, 3], seed=1)
    served = tf.saved_model.load(str(out)).signatures["serving_images"](images=pixels)
    np.testing.assert_allclose(served["probabilities"].numpy(), model(pixels).numpy(), atol=1e-6)
