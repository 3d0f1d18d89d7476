"""Driving a real Prefect server from the e2e tests: its CLI, its REST API, its processes.

The server and worker fixtures built on `running_prefect_server` and `running_process_worker`
are in tests/e2e/conftest.py (module-scoped) and tests/e2e/test_prefect_ui.py (per test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STARTUP_S = 150
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def prefect_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the `prefect` CLI of this environment in the checkout, failing with its output."""
    result = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=STARTUP_S)
    assert result.returncode == 0, f"prefect {args}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def api(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST `body` to) the Prefect REST API."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def api_status(url: str, method: str, body: dict[str, Any], attempts: int = 5) -> int:
    """The HTTP status of a request that answers no body (PATCH, DELETE), errors included.

    503 is the server's "busy, try again" (its SQLite database locked under load), retried as
    Prefect's own client does.
    """
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == attempts - 1:
                return int(error.code)
        time.sleep(2**attempt)
    raise AssertionError("unreachable")


def wait_for_flow_run(url: str, flow_run_id: str, timeout_s: float) -> dict[str, Any]:
    """The flow run, once it is in a final state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = api(f"{url}/api/flow_runs/{flow_run_id}")
        if run["state"]["type"] in FINAL_STATES:
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout_s} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child started in its own session, with everything it started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def running_prefect_server(folder: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`prefect server start` on 127.0.0.1:<free port>, PREFECT_HOME and log in `folder`.

    Yields the server's URL and the environment a client of it needs; stops it on exit.
    """
    from flows.demo import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect-home"),
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


@contextmanager
def running_process_worker(env: dict[str, str], log_path: Path) -> Iterator[None]:
    """The process work pool `cpu` and one `prefect worker start` polling it, logging to
    `log_path`; stopped on exit."""
    prefect_cli("work-pool", "create", "cpu", "--type", "process", env=env)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu", "--type",
             "process", "--prefetch-seconds", "5"], env=env, cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield
        finally:
            stop(proc)
