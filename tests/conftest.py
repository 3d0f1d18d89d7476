"""Shared test fixtures: isolated Prefect home, the optional ../shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POSTERFLOW_SHARED", REPO.parent / "shared"))


def pytest_configure(config: pytest.Config) -> None:
    # Keep Prefect's database, settings and logs out of the developer's ~/.prefect.
    os.environ.setdefault("PREFECT_HOME", str(REPO / ".pytest_cache" / "prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
