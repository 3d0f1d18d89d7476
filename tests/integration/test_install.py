"""Installing posterflow into a virtual environment that starts without setuptools.

tensorflow-hub imports `pkg_resources` when it is imported. Virtual environments made by uv
(and every Python 3.12+ venv) have no setuptools, and setuptools 81 and later have no
`pkg_resources`, so the project must bring a setuptools that still has it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
INSTALL_TIMEOUT_S = 300


def _uv() -> str:
    """The uv beside this interpreter (the Makefile installs it there), else on PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if not found:
        pytest.skip("uv is not installed: it makes the setuptools-free virtual environment")
    return found


def _run(*args: str | Path, timeout: float = INSTALL_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a command with the environment's Python settings removed."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def test_install_without_setuptools_in_the_venv_still_imports_tensorflow_hub(tmp_path):
    uv, venv = _uv(), tmp_path / "venv"
    made = _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    assert _run(python, "-c", "import setuptools").returncode != 0  # starts without it

    # From uv's cache only (tests reach nothing beyond loopback); `make install` filled it.
    installed = _run(uv, "pip", "install", "--offline", "--quiet", "--python", python,
                     "-e", REPO)
    if installed.returncode != 0 and "network was disabled" in installed.stderr:
        pytest.skip("a dependency is not in uv's cache (run `make install` once): "
                    + installed.stderr.strip().splitlines()[-1])
    assert installed.returncode == 0, installed.stderr

    imported = _run(python, "-c", "import pkg_resources, tensorflow_hub; "
                    "print(tensorflow_hub.__version__)")
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert imported.stdout.strip().startswith("0.16")
