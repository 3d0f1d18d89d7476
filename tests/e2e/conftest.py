"""e2e fixtures: a real Prefect server and a process worker, as a user starts them.

`prefect_server` runs `prefect server start` on a free loopback port with its own
PREFECT_HOME; `process_worker` creates the process pool `cpu` and runs `prefect worker start`
on it, with `worker_env` (empty unless a test module overrides that fixture) added to its
environment. Both are module-scoped and stopped, with everything they started, even on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.demo import free_port
from tests.prefect_server_helpers import REPO, STARTUP_S, api, prefect_cli, stop


@pytest.fixture(scope="module")
def prefect_server(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`prefect server start` on 127.0.0.1:<free port>; yields its URL and a client env."""
    folder = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_HOME": str(folder / "home"),
           "PREFECT_API_URL": f"{url}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PWD": str(REPO)}  # prefect.yaml's pull step runs flows from {{ $PWD }}
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + STARTUP_S
            while True:
                assert server.poll() is None, log_path.read_text()[-3000:]
                try:
                    api(f"{url}/api/health")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the Prefect server did not start"
                    time.sleep(0.5)
            yield url, env
        finally:
            stop(server)


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """Extra environment of the worker (and so of its flow runs); override per module."""
    return {}


@pytest.fixture(scope="module")
def process_worker(prefect_server: tuple[str, dict[str, str]], worker_env: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The process work pool `cpu` and one worker polling it; yields the worker's log file."""
    _, env = prefect_server
    prefect_cli("work-pool", "create", "cpu", "--type", "process", env=env)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu", "--type",
             "process", "--prefetch-seconds", "5"], env={**env, **worker_env}, cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield log_path
        finally:
            stop(proc)
