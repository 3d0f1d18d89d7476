"""Flow test fixtures: a tiny generated catalog served by the real mirror, a tiny config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.demo import free_port, serve_folder
from tasks.demo import DemoData, make_demo_data

TINY_MOVIES = 60


@pytest.fixture(scope="module")
def served_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoData]:
    """60 generated movies + posters, served by `posterflow mirror` on a free loopback port."""
    root = tmp_path_factory.mktemp("demo-data")
    port = free_port()
    data = make_demo_data(root, f"http://127.0.0.1:{port}", movies=TINY_MOVIES, seed=7)
    with serve_folder(data.posters_dir, port):
        yield data


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's test harness, with task results (the caches) in a temporary folder."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    results = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: results}), \
            prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def standin_backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny random-weight stand-in backbone (tests never download)."""
    from tasks.backbone import build_standin_backbone

    return str(build_standin_backbone(tmp_path_factory.mktemp("backbone") / "standin"))


def tiny_config_data(csv_path: str, data_root: Path, backbone: str) -> dict[str, Any]:
    """Retrain settings for a 60-movie catalog: low genre cut, two fetch chunks, a short fit."""
    return {
        "catalog_csv": csv_path,
        "storage": {"data_root": str(data_root)},
        "catalog": {"min_genre_count": 3, "reject_tolerance": 0.1},  # 4 defects in 66 rows
        "fetch": {"allow_hosts": ["127.0.0.1"], "concurrency": 8},
        "scale": {"fetch_chunks": 2, "max_workers": 2},
        "train": {"backbone": backbone, "batch_size": 32, "patience": 3, "embed_batch_size": 32,
                  "head": {"learning_rate": 1e-3, "epochs": 5, "hidden": 32}},
        "notes": ["integration test run"],
    }


def stage_state(stages: list[tuple[str, str]] | list[list[str]], prefix: str) -> set[str]:
    """The states of every task run whose name starts with `prefix`."""
    states = {state for name, state in stages if name.startswith(prefix)}
    assert states, f"no task run named {prefix}* in {stages}"
    return states
