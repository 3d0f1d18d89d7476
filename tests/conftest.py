"""Shared test fixtures: isolated Prefect home, the optional ../shared data folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POSTERFLOW_SHARED", REPO.parent / "shared"))


_OWN_PREFECT_HOME = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # A fresh Prefect home per session: no state carried between runs, nothing in ~/.prefect.
    if "PREFECT_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="posterflow-prefect-home-")
        config.stash[_OWN_PREFECT_HOME] = home
        os.environ["PREFECT_HOME"] = home
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(_OWN_PREFECT_HOME, None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared when present; tests that use it carry @pytest.mark.shared_data."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason="../shared is absent")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)
