"""Fixtures shared by every tier: isolated Prefect home, ../shared, the flow fixtures, S3.

`s3_bucket` is a bucket on a real moto S3 *server* on a loopback port (as s3fs's own test
suite runs it), reached through s3fs over HTTP: never an in-process boto mock.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tasks.demo import DemoData

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


# --- Flow fixtures (unit, integration and e2e tiers) ---------------------------------------

TINY_MOVIES = 60


@pytest.fixture(scope="module")
def served_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoData]:
    """60 generated movies + posters, served by `posterflow mirror` on a free loopback port."""
    from flows.demo import free_port, serve_folder
    from tasks.demo import make_demo_data

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


# --- Object storage: a moto S3 server ------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT of a moto S3 server for this session; s3fs is pointed at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per S3 request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "AWS_DEFAULT_REGION")


@pytest.fixture(scope="session")
def s3_env(s3_endpoint: str) -> dict[str, str]:
    """The AWS variables that point a child process (a Prefect worker, a CLI) at the server."""
    return {key: os.environ[key] for key in _S3_ENV}


@pytest.fixture()
def s3_bucket(s3_endpoint: str) -> str:
    """s3://<fresh bucket> on the moto server (fsspec's cached instances cleared first)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir(bucket)
    return f"s3://{bucket}"
