"""The registry across real processes: concurrent registrations, SIGKILL mid-registration.

Locally and on an S3 bucket (a real moto S3 server on loopback, `s3_bucket`), where version
numbers and alias moves are allocated with conditional creates instead of renames and locks.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.fs import TEMP_PREFIX
from storage.registry import Registry
from tasks.promotion import register_candidate
from tests.registry_helpers import make_export, save_tiny_savedmodel

REPO = Path(__file__).resolve().parents[2]
MODEL = "posterflow"

CONCURRENT = """
import logging, os, sys, time
from storage.registry import Registry
from tasks.promotion import register_candidate
logging.basicConfig(level=logging.DEBUG)  # stderr shows "was taken" retries under contention
root, model_dir, go = sys.argv[1:4]
while not os.path.exists(go):  # start together: maximal contention for version numbers
    time.sleep(0.001)
r = register_candidate(Registry(root), model_dir, "posterflow", flow_run_id=f"pid-{os.getpid()}")
print(r.version, r.alias)
"""

LOOP = """
import json, pathlib, sys
from storage.fs import atomic_write_json
from storage.registry import Registry
from tasks.promotion import register_candidate
registry, lineage = Registry(sys.argv[1]), pathlib.Path(sys.argv[2], "assets", "lineage.json")
print("ready", flush=True)
for i in range(500):  # a new export each time: the registry keeps one version per content
    atomic_write_json(str(lineage), {**json.loads(lineage.read_text()), "round": i})
    register_candidate(registry, sys.argv[2], "posterflow")
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real SavedModel for the module."""
    return save_tiny_savedmodel(tmp_path_factory.mktemp("tiny") / "savedmodel")


def python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start `python -c code args...` in the repository (so `storage` imports)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def assert_no_visible_partial_version(root: Path) -> list[int]:
    """Every integer folder (what TF Serving would load) is a complete, verified version."""
    registry, mdir = Registry(root), root / MODEL
    numbered = sorted(int(p.name) for p in mdir.iterdir() if p.name.isdigit())
    assert registry.versions(MODEL) == numbered
    for v in numbered:
        assert registry.verify(MODEL, v).ok, registry.verify(MODEL, v).problems
    if (mdir / "aliases.json").exists():
        aliases = json.loads((mdir / "aliases.json").read_text())["aliases"]
        assert set(aliases.values()) <= set(numbered)
    return numbered


def test_eight_concurrent_registrations_get_eight_complete_versions(
    template: Path, tmp_path: Path
) -> None:
    f1s = [0.41, 0.63, 0.35, 0.58, 0.70, 0.44, 0.52, 0.66]
    exports = [make_export(template, tmp_path / f"e{i}", f1) for i, f1 in enumerate(f1s)]
    root, go = tmp_path / "registry", tmp_path / "go"
    procs = [python(CONCURRENT, str(root), str(e), str(go)) for e in exports]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    errors = ["\n".join(ln for ln in err.splitlines() if not ln.startswith("DEBUG:fsspec"))
              for _, err in outs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert sorted(int(out.split()[0]) for out, _ in outs) == list(range(1, 9))
    assert assert_no_visible_partial_version(root) == list(range(1, 9))
    registry = Registry(root)
    infos = [registry.info(MODEL, v) for v in range(1, 9)]
    assert sorted(i.metadata["source"] for i in infos) == sorted(map(str, exports))
    assert len({i.metadata["flow_run_id"] for i in infos}) == 8
    # The gate ran once per registration, serialised: the best model ends up champion.
    state = registry.aliases(MODEL)
    assert len(state["history"]) == 8
    assert registry.info(MODEL, state["aliases"]["champion"]).test_macro_f1 == max(f1s)
    assert not [p for p in (root / MODEL).iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_eight_concurrent_registrations_into_s3_get_eight_complete_versions(
    template: Path, tmp_path: Path, s3_bucket: str
) -> None:
    f1s = [0.41, 0.63, 0.35, 0.58, 0.70, 0.44, 0.52, 0.66]
    exports = [make_export(template, tmp_path / f"e{i}", f1) for i, f1 in enumerate(f1s)]
    root, go = f"{s3_bucket}/registry", tmp_path / "go"
    procs = [python(CONCURRENT, root, str(e), str(go)) for e in exports]
    time.sleep(2.0)  # let every process import s3fs before the start signal
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    errors = [err[-2000:] for _, err in outs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert sorted(int(out.split()[0]) for out, _ in outs) == list(range(1, 9))
    registry = Registry(root)
    assert registry.versions(MODEL) == list(range(1, 9))
    assert all(registry.verify(MODEL, v).ok for v in range(1, 9))
    infos = [registry.info(MODEL, v) for v in range(1, 9)]
    assert sorted(i.metadata["source"] for i in infos) == sorted(map(str, exports))
    state = registry.aliases(MODEL)  # every gate decision committed by compare-and-swap
    assert len(state["history"]) == 8
    assert registry.info(MODEL, state["aliases"]["champion"]).test_macro_f1 == max(f1s)
    mirrored = json.loads(registry.fs.cat_file(f"{root}/{MODEL}/aliases.json"))
    assert mirrored == state  # aliases.json ends as the newest generation


def test_sigkill_mid_registration_leaves_no_visible_partial_version(
    template: Path, tmp_path: Path
) -> None:
    export = make_export(template, tmp_path / "export", 0.5, padding_bytes=4 << 20)
    root = tmp_path / "registry"
    rng = random.Random(6)
    killed_while_staging = 0
    for _ in range(8):
        with python(LOOP, str(root), str(export)) as proc:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.05, 0.5))
            proc.kill()
            assert proc.wait(timeout=10) == -9
        assert_no_visible_partial_version(root)
        leftovers = [p for p in (root / MODEL).iterdir() if p.name.startswith(TEMP_PREFIX)]
        killed_while_staging += bool(leftovers)
        for p in leftovers:  # keep the count of this round's leftovers honest
            subprocess.run(["rm", "-rf", str(p)], check=True)
    assert killed_while_staging >= 1, "no kill landed mid-staging: the test proved nothing"
    before = Registry(root).versions(MODEL)
    # A kill between a finished registration and the next lineage edit leaves content the
    # registry already holds (it would be reused); new content proves a fresh version allocates.
    lineage = export / "assets" / "lineage.json"
    lineage.write_text(json.dumps({**json.loads(lineage.read_text()), "round": "final"}))
    after = register_candidate(Registry(root), export, MODEL)
    assert not after.reused and after.version == max(before, default=0) + 1
    assert Registry(root).verify(MODEL, after.version).ok


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "registry", "--root", str(tmp_path), "path"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "no alias 'champion'" in done.stderr
