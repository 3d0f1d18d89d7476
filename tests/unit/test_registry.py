"""storage.registry: TF Serving layout, checksummed immutable versions, aliases, rollback."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from storage import registry_backends as backends
from storage.model_export import InvalidModelError, read_export
from storage.registry import CorruptVersionError, NotFoundError, Registry
from tasks.promotion import promote, register_candidate, rollback
from tests.registry_helpers import LABELS, make_export, save_tiny_savedmodel

MODEL = "posterflow"
Export = Callable[..., Path]  # (test_f1, dataset_version="ds-1") -> exported model folder


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real SavedModel per module (TensorFlow save is the slow part)."""
    return save_tiny_savedmodel(tmp_path_factory.mktemp("tiny") / "savedmodel")


@pytest.fixture
def export(template: Path, tmp_path: Path) -> Export:
    """Factory: an exported model folder with the given test macro F1 and dataset version."""
    counter = iter(range(1000))

    def make(f1: float, dataset: str = "ds-1") -> Path:
        return make_export(template, tmp_path / f"export-{next(counter)}", f1, dataset)

    return make


def test_first_version_is_champion_with_lineage_checksums(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    r = register_candidate(registry, export(0.4), MODEL, flow_run_id="run-123")
    assert (r.version, r.alias, r.decision.promoted) == (1, "champion", True)
    vdir = tmp_path / "registry" / MODEL / "1"
    assert r.path == str(vdir)
    assert (vdir / "saved_model.pb").is_file() and (vdir / "variables").is_dir()
    meta = json.loads((vdir / "registry.json").read_text())
    assert meta["flow_run_id"] == "run-123"
    assert meta["lineage"]["dataset_version"] == "ds-1"
    assert meta["metrics"]["test"]["macro_f1"] == 0.4
    assert meta["test_split"] == "dataset:ds-1" and meta["created_at"].endswith("+00:00")
    recorded = meta["files"]["variables/variables.index"]
    assert recorded["sha256"] == hashlib.sha256(
        (vdir / "variables" / "variables.index").read_bytes()
    ).hexdigest()
    assert "registry.json" not in meta["files"]
    # Nothing but versions, aliases and the lock in the folder TF Serving watches.
    assert sorted(p.name for p in (tmp_path / "registry" / MODEL).iterdir()) == [
        ".lock", "1", "aliases.json", "models.config",
    ]


def test_publish_adds_a_version_and_moves_no_alias(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    info = registry.publish(read_export(export(0.4)), MODEL, test_split="dataset:ds-1")
    assert (info.version, info.test_split, info.test_macro_f1) == (1, "dataset:ds-1", 0.4)
    assert registry.aliases(MODEL) == {"aliases": {}, "history": []}
    assert sorted(p.name for p in (tmp_path / "r" / MODEL).iterdir()) == ["1"]


def test_alias_edits_are_written_only_when_they_complete(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    registry.publish(read_export(export(0.4)), MODEL, test_split="dataset:ds-1")
    with registry.editing_aliases(MODEL):
        pass  # nothing moved: nothing written
    assert not (tmp_path / "r" / MODEL / "aliases.json").exists()
    with pytest.raises(RuntimeError), registry.editing_aliases(MODEL) as aliases:
        aliases.move("stable", 1, action="set", reason="")
        raise RuntimeError("the policy failed half-way")
    assert registry.aliases(MODEL) == {"aliases": {}, "history": []}
    with registry.editing_aliases(MODEL) as aliases:
        aliases.move("stable", 1, action="set", reason="pinned")
    [entry] = registry.aliases(MODEL)["history"]
    assert (entry["alias"], entry["version"], entry["previous"], entry["reason"]) == (
        "stable", 1, None, "pinned"
    )
    assert 'version_labels { key: "stable" value: 1 }' in (
        tmp_path / "r" / MODEL / "models.config"
    ).read_text()


def test_rollback_walks_back_through_earlier_champions(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    for f1 in (0.5, 0.3, 0.6, 0.7):  # v2 is refused; v1, v3, v4 were champions
        register_candidate(registry, export(f1), MODEL)
    assert registry.resolve(MODEL, "champion") == 4
    assert rollback(registry, MODEL) == 3
    assert rollback(registry, MODEL) == 1
    with pytest.raises(NotFoundError, match="no champion before v1"):
        rollback(registry, MODEL)
    promote(registry, MODEL, 4)
    assert rollback(registry, MODEL, to=2, reason="v4 misbehaves") == 2
    last = registry.aliases(MODEL)["history"][-1]
    assert (last["action"], last["previous"], last["reason"]) == ("rollback", 4, "v4 misbehaves")
    with pytest.raises(ValueError, match="earlier version"):
        rollback(registry, MODEL, to=3)


def test_verify_catches_missing_variables_and_changed_bytes(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    for f1 in (0.5, 0.6, 0.7):
        register_candidate(registry, export(f1), MODEL)
    vdir = tmp_path / "r" / MODEL
    assert all(registry.verify(MODEL, v).ok for v in (1, 2, 3))
    next((vdir / "3" / "variables").glob("variables.data-*")).unlink()
    pb = vdir / "2" / "saved_model.pb"
    data = bytearray(pb.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pb.write_bytes(bytes(data))
    (vdir / "1" / "assets" / "extra.txt").write_text("sneaked in")
    missing, flipped, extra = (registry.verify(MODEL, v) for v in (3, 2, 1))
    assert "variables/variables.data-00000-of-00001: recorded at registration, now missing" in (
        missing.problems
    )
    assert flipped.problems[0].startswith("saved_model.pb: sha256 mismatch")
    assert extra.problems == ("assets/extra.txt: not recorded at registration",)
    # A corrupted version is never served, promoted or rolled back to.
    with pytest.raises(CorruptVersionError, match="v3 failed verification"):
        registry.path(MODEL)
    with pytest.raises(CorruptVersionError):
        promote(registry, MODEL, 2, force=True)
    with pytest.raises(CorruptVersionError):
        rollback(registry, MODEL, to=1)
    assert registry.resolve(MODEL, "champion") == 3


def test_register_rejects_incomplete_exports(template: Path, tmp_path: Path) -> None:
    no_metrics = make_export(template, tmp_path / "a", 0.5)
    (no_metrics / "assets" / "metrics.json").unlink()
    with pytest.raises(InvalidModelError, match="missing assets/metrics.json"):
        register_candidate(Registry(tmp_path / "r"), no_metrics, MODEL)
    bad_f1 = make_export(template, tmp_path / "b", 0.5)
    (bad_f1 / "assets" / "metrics.json").write_text('{"val": {}}')
    with pytest.raises(InvalidModelError, match="test.macro_f1"):
        read_export(bad_f1)
    assert Registry(tmp_path / "r").versions(MODEL) == []
    with pytest.raises(ValueError, match="model name"):
        Registry(tmp_path / "r").versions("../escape")


def test_champion_loads_and_predicts(export: Export, tmp_path: Path) -> None:
    import tensorflow as tf

    registry = Registry(tmp_path / "r")
    register_candidate(registry, export(0.5), MODEL)
    register_candidate(registry, export(0.6), MODEL)
    loaded = registry.load(MODEL)
    out = loaded.signatures["serving_default"](images=tf.constant([b"poster-a", b"b" * 40]))
    assert out["probabilities"].shape == (2, len(LABELS))
    assert out["genres"].dtype == tf.string
    assert b"Drama" in out["genres"].numpy()[1]
    labels = json.loads((Path(registry.path(MODEL)) / "assets" / "labels.json").read_text())
    assert labels["labels"] == LABELS


def test_fsspec_root_registers_and_verifies(export: Export, tmp_path: Path) -> None:
    import fsspec

    root = f"memory://registry-{tmp_path.name}"
    registry = Registry(root)
    register_candidate(registry, export(0.5), MODEL)
    r = register_candidate(registry, export(0.6), MODEL)
    assert r.path == f"memory:///registry-{tmp_path.name}/{MODEL}/2"
    assert registry.versions(MODEL) == [1, 2] and registry.resolve(MODEL, "champion") == 2
    assert registry.path(MODEL, 1).endswith(f"{MODEL}/1")
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"/registry-{tmp_path.name}/{MODEL}/2/saved_model.pb", b"garbage")
    assert not registry.verify(MODEL, 2).ok
    with pytest.raises(CorruptVersionError):
        registry.path(MODEL)
    fs.rm(f"/registry-{tmp_path.name}", recursive=True)


def test_version_taken_between_scan_and_rename_moves_to_the_next(
    export: Export, tmp_path: Path
) -> None:
    """The rename is the allocation: a competitor publishing first pushes us to N+1."""
    competitor = export(0.9)

    class Racing(Registry):
        raced = False

        def _folder_numbers(self, model: str) -> list[int]:
            numbers = super()._folder_numbers(model)
            if not self.raced:  # the competitor publishes after our scan, before our rename
                self.raced = True
                register_candidate(Registry(self.root), competitor, model)
            return numbers

    ours = register_candidate(Racing(tmp_path / "r"), export(0.5), MODEL)
    registry = Registry(tmp_path / "r")
    assert ours.version == 2 and registry.versions(MODEL) == [1, 2]
    assert registry.info(MODEL, 1).metadata["source"] == str(competitor)
    assert all(registry.verify(MODEL, v).ok for v in (1, 2))


def test_tf_serving_config_serves_aliased_versions_only(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    register_candidate(registry, export(0.6), MODEL)
    register_candidate(registry, export(0.5), MODEL)  # challenger: highest, must not be "latest"
    register_candidate(registry, export(0.4), MODEL)  # challenger now; v2 is served by nothing
    config = (tmp_path / "r" / MODEL / "models.config").read_text()
    assert f'base_path: "{tmp_path / "r" / MODEL}"' in config
    assert "specific {\n        versions: 1\n        versions: 3\n      }" in config
    assert 'version_labels { key: "champion" value: 1 }' in config
    assert 'version_labels { key: "challenger" value: 3 }' in config
    promote(registry, MODEL, 3, force=True)
    config = (tmp_path / "r" / MODEL / "models.config").read_text()
    assert 'version_labels { key: "champion" value: 3 }' in config and "versions: 1" not in config


def test_register_removes_only_stale_staging_folders(export: Export, tmp_path: Path) -> None:
    mdir = tmp_path / "r" / MODEL
    old, fresh = mdir / ".tmp-version-killed", mdir / ".tmp-version-running"
    for folder in (old, fresh):
        (folder / "variables").mkdir(parents=True)
    os.utime(old, (0, 0))
    register_candidate(Registry(tmp_path / "r"), export(0.5), MODEL)
    assert not old.exists() and fresh.is_dir()


def test_stale_staging_scan_tolerates_entries_renamed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer may rename its staging folder or alias temp file between scan and stat."""
    mdir = tmp_path / MODEL
    mdir.mkdir()
    racing, old = mdir / ".tmp-aliases.json-racing", mdir / ".tmp-aliases.json-killed"
    racing.write_text("{}")
    old.write_text("{}")
    os.utime(old, (0, 0))
    real_scandir = os.scandir

    def scandir_then_rename(path: str) -> list[os.DirEntry[str]]:
        entries = list(real_scandir(path))
        racing.rename(mdir / "aliases.json")  # published by the other writer after our listing
        return entries

    monkeypatch.setattr(backends.os, "scandir", scandir_then_rename)
    backends.remove_stale_staging(str(mdir))
    assert sorted(p.name for p in mdir.iterdir()) == ["aliases.json"]
