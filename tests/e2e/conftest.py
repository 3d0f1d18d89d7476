"""e2e fixtures: a real Prefect server and a process worker, as a user starts them.

`prefect_server` runs `prefect server start` on a free loopback port with its own
PREFECT_HOME; `process_worker` creates the process pool `cpu` and runs `prefect worker start`
on it, with `worker_env` (empty unless a test module overrides that fixture) added to its
environment. Both are module-scoped and stopped, with everything they started, even on failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prefect_server_helpers import running_prefect_server, running_process_worker


@pytest.fixture(scope="module")
def prefect_server(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`prefect server start` on 127.0.0.1:<free port>; yields its URL and a client env."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server")) as server:
        yield server


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """Extra environment of the worker (and so of its flow runs); override per module."""
    return {}


@pytest.fixture(scope="module")
def process_worker(prefect_server: tuple[str, dict[str, str]], worker_env: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The process work pool `cpu` and one worker polling it; yields the worker's log file."""
    _, env = prefect_server
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with running_process_worker({**env, **worker_env}, log_path):
        yield log_path
