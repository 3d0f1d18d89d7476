"""storage.leases: one holder at a time, a clear refusal, expiry and kill -9 recovery."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from storage import fs, leases


@pytest.fixture(params=["local", "memory", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store root on each kind of store (s3: a bucket on the moto server)."""
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "memory":
        return f"memory://lease-{uuid.uuid4().hex[:8]}"
    return request.getfixturevalue("s3_bucket") + "/store"


def test_second_taker_is_refused_with_the_holder_named(root: str) -> None:
    first = leases.acquire(root, "fetch", flow_run_id="run-1")
    with pytest.raises(leases.StoreBusy) as busy:
        leases.acquire(root, "fetch")
    message = str(busy.value)
    assert f"another fetch is writing {root} since {first.since}" in message
    assert f"pid {first.pid} on {first.host}, flow run run-1" in message
    leases.release(first)
    second = leases.acquire(root, "fetch")
    assert second.token != first.token
    leases.release(second)
    assert leases.read_lease(root) is None


def test_racing_takers_get_one_lease(root: str) -> None:
    won: list[leases.Lease] = []
    busy: list[leases.StoreBusy] = []
    start = threading.Barrier(6)

    def take() -> None:
        start.wait()
        try:
            won.append(leases.acquire(root, "fetch"))
        except leases.StoreBusy as exc:
            busy.append(exc)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(busy) == 5
    assert leases.read_lease(root) == won[0]


def test_an_expired_lease_is_taken_over_and_its_holder_loses_it(root: str) -> None:
    old = leases.acquire(root, "fetch", ttl_s=0.2)
    time.sleep(0.3)
    new = leases.acquire(root, "fetch")
    assert leases.read_lease(root) == new
    with pytest.raises(leases.LeaseLost, match="now held by"):
        leases.check(old)
    with pytest.raises(leases.LeaseLost):
        leases.renew(old)
    leases.release(old)  # a no-op: never deletes the successor's lease
    assert leases.read_lease(root) == new


def test_a_waiting_taker_gets_the_lease_when_it_is_released(root: str) -> None:
    first = leases.acquire(root, "fetch")
    threading.Timer(0.3, leases.release, args=(first,)).start()
    second = leases.acquire(root, "fetch", wait_s=10)
    assert leases.read_lease(root) == second


def test_a_lease_kept_alive_outlives_its_ttl(root: str) -> None:
    with leases.held(root, "fetch", ttl_s=0.6) as lease:
        time.sleep(1.0)
        with pytest.raises(leases.StoreBusy):
            leases.acquire(root, "fetch")
        leases.check(lease)
    assert leases.read_lease(root) is None


def test_the_same_flow_run_adopts_its_lease(root: str) -> None:
    first = leases.acquire(root, "fetch", flow_run_id="run-7")
    again = leases.acquire(root, "fetch", flow_run_id="run-7")  # a retried task
    assert again.token == first.token
    with pytest.raises(leases.StoreBusy):
        leases.acquire(root, "fetch", flow_run_id="run-8")


def test_a_hand_damaged_lease_is_stale(tmp_path: Path) -> None:
    root = str(tmp_path)
    (tmp_path / leases.LEASE_NAME).write_text('{"tok')
    lease = leases.acquire(root, "fetch")
    assert leases.read_lease(root) == lease


TAKE_AND_HANG = """
import sys, time
from storage import leases
leases.acquire(sys.argv[1], "fetch", ttl_s=3600)
print("held", flush=True)
time.sleep(3600)
"""


def test_a_lease_of_a_killed_process_is_stale_at_once(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    with subprocess.Popen([sys.executable, "-c", TAKE_AND_HANG, root], stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            with pytest.raises(leases.StoreBusy):
                leases.acquire(root, "fetch")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    lease = leases.acquire(root, "fetch")  # the hour-long lease names a dead pid: stale
    assert leases.read_lease(root) == lease
    tombstones = list((tmp_path / "store" / leases.BROKEN_DIR).iterdir())
    assert len(tombstones) == 1 and "broken_at" in json.loads(tombstones[0].read_text())


def test_lease_object_names_its_holder(tmp_path: Path) -> None:
    lease = leases.acquire(str(tmp_path), "fetch", flow_run_id="abc")
    stored = fs.read_json(tmp_path / leases.LEASE_NAME)
    assert {k: stored[k] for k in ("purpose", "pid", "host", "flow_run_id", "token")} == {
        "purpose": "fetch", "pid": lease.pid, "host": lease.host, "flow_run_id": "abc",
        "token": lease.token}
    assert stored["since"] < stored["expires"]
