"""SIGKILL a real `build_dataset` process mid-write, rerun: same version id, no stray files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.datasets import load_dataset_info, read_manifest, verify_shard
from tasks.shards import ShardConfig, build_dataset
from tests.shards_helpers import write_inputs

REPO = Path(__file__).resolve().parents[2]
CONFIG = ShardConfig(records_per_shard=1)  # many small shards: a long write to interrupt
WRITER = (
    "import sys\n"
    "from tasks.shards import ShardConfig, build_dataset\n"
    "build_dataset(sys.argv[1], sys.argv[2], sys.argv[3], ShardConfig(records_per_shard=1))\n"
)


def _staged_shards(out: Path) -> list[Path]:
    """Shard files inside staging folders (hidden temp names) under `out`."""
    return [p for d in out.glob(".tmp-*") if d.is_dir() for p in d.glob("*.tfrecord")]


def _kill_mid_write(catalog: Path, store: Path, out: Path) -> None:
    """Start a writer process and SIGKILL it once it has staged a few shards."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(catalog), str(store), str(out)],
                            cwd=REPO, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while len(_staged_shards(out)) < 5:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the writer never staged a shard"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow  # a fresh interpreter imports TensorFlow (~5-15 s on a shared machine)
def test_sigkill_while_writing_then_rerun(tmp_path: Path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 120)
    out = tmp_path / "datasets"
    _kill_mid_write(catalog, store, out)
    assert _staged_shards(out), "the kill left no partial write: nothing was tested"
    assert not list(out.glob("*/dataset.json"))  # no version appeared half-written

    resumed = build_dataset(catalog, store, out, CONFIG)
    clean = build_dataset(catalog, store, tmp_path / "clean", CONFIG)
    assert resumed.version == clean.version and resumed.created
    assert sorted(p.name for p in out.iterdir()) == [resumed.version]
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    manifest = read_manifest(resumed.path)
    assert sorted(p.name for p in Path(resumed.path).iterdir()) == sorted(
        [*manifest["shard"], "manifest.parquet", "dataset.json"])
    for row in manifest.itertuples():
        verify_shard(resumed.path, row.shard, row.bytes, row.sha256)
    assert manifest["sha256"].tolist() == read_manifest(clean.path)["sha256"].tolist()
    assert sum(load_dataset_info(resumed.path).splits.values()) == 120
