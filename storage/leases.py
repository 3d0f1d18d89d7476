"""One writer per shared root: an expiring lease object made with a conditional create.

`<root>/.lease` names its holder (purpose, host, pid, flow run, since, expires, a random
token). It is created with `fs.create_exclusive`, so it works on object stores as well as
local disks, and it is renewed while held (`kept_alive`). A lease is stale, and may be
broken, when it has expired or when its process is gone from this host and pid namespace
(kill -9). Breaking takes a one-shot tombstone named after the stale token (also a
conditional create), so of several runs that find the same stale lease only one deletes it.

The lease is a plain picklable value: a flow takes it once and hands it to its tasks (which
may run in other processes) so that they renew it without taking it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psutil

from storage import fs

LEASE_NAME = ".lease"
BROKEN_DIR = ".lease-broken"
DEFAULT_TTL_S = 60.0
POLL_S = 0.5
BREAK_GRACE_S = 10.0


class StoreBusy(RuntimeError):
    """Another run holds the root's lease."""

    def __init__(self, root: str, holder: Lease) -> None:
        super().__init__(f"another {holder.purpose} is writing {root} since {holder.since} "
                         f"({holder.describe()}); its lease expires {holder.expires}")
        self.holder = holder


class LeaseLost(RuntimeError):
    """Our lease expired and was taken over (or removed) while we thought we held it."""


@dataclass(frozen=True)
class Lease:
    """Who holds a root and until when (ISO-8601 UTC times); the token identifies the holder."""

    root: str
    token: str
    purpose: str
    host: str
    pid: int
    pid_started: float
    pid_namespace: str  # containers on one host may share a name, never a pid namespace
    flow_run_id: str | None
    since: str
    expires: str
    ttl_s: float

    def describe(self) -> str:
        """pid/host/flow run, for messages."""
        run = f", flow run {self.flow_run_id}" if self.flow_run_id else ""
        return f"pid {self.pid} on {self.host}{run}"

    def to_bytes(self) -> bytes:
        """The lease object's content."""
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    def renewed(self) -> Lease:
        """The same lease with its expiry moved ttl_s from now."""
        return Lease(**{**asdict(self), "expires": _iso(time.time() + self.ttl_s)})

    def is_stale(self, now: float | None = None) -> bool:
        """Expired, or its process is no longer running on this host."""
        if datetime.fromisoformat(self.expires).timestamp() <= (now or time.time()):
            return True
        here = self.host == socket.gethostname() and self.pid_namespace == _pid_namespace()
        return here and not _running(self.pid, self.pid_started)


def lease_path(root: str) -> str:
    """Where a root's lease object lives."""
    return fs.join(root, LEASE_NAME)


def read_lease(root: str) -> Lease | None:
    """The root's current lease, or None when nobody holds it."""
    fsys, path = fs.url_to_fs(lease_path(root))
    try:
        raw = fsys.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        return Lease(**json.loads(raw))
    except (ValueError, TypeError):
        # Leases are written whole, so this is hand damage: a stale lease, named by its bytes.
        token = f"damaged-{fs.sha256_bytes(raw)[:16]}"
        return Lease(root, token, "writer", "?", 0, 0.0, "?", None, "?", _iso(0), 0.0)


def acquire(root: str, purpose: str, *, flow_run_id: str | None = None,
            ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0) -> Lease:
    """Take the root's lease, waiting up to `wait_s` for a live holder; StoreBusy after that.

    A lease already held by the same flow run (a retried task) is adopted, not refused.
    """
    deadline = time.monotonic() + wait_s
    process = psutil.Process()
    while True:
        now = time.time()
        mine = Lease(root, uuid.uuid4().hex, purpose, socket.gethostname(), process.pid,
                     process.create_time(), _pid_namespace(), flow_run_id, _iso(now),
                     _iso(now + ttl_s), ttl_s)
        if fs.create_exclusive(lease_path(root), mine.to_bytes()):
            return mine
        holder = read_lease(root)
        if holder is None:
            continue  # released between our create and our read
        if flow_run_id is not None and holder.flow_run_id == flow_run_id:
            return renew(holder)
        if holder.is_stale() and _break(root, holder):
            continue
        if time.monotonic() >= deadline:
            raise StoreBusy(root, holder)
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def renew(lease: Lease) -> Lease:
    """Push the expiry out by ttl_s; LeaseLost when someone else holds the root now."""
    check(lease)
    renewed = lease.renewed()
    fs.atomic_write_bytes(lease_path(lease.root), renewed.to_bytes())
    return renewed


def check(lease: Lease) -> None:
    """LeaseLost unless `lease` still holds its root (call before destructive steps)."""
    current = read_lease(lease.root)
    if current is None or current.token != lease.token:
        other = f"now held by {current.describe()}" if current else "released"
        raise LeaseLost(f"the lease on {lease.root} taken {lease.since} was lost ({other})")


def release(lease: Lease) -> None:
    """Give the root back (a no-op when the lease was already lost)."""
    current = read_lease(lease.root)
    if current is not None and current.token == lease.token:
        fsys, path = fs.url_to_fs(lease_path(lease.root))
        with contextlib.suppress(FileNotFoundError):
            fsys.rm_file(path)


@contextlib.contextmanager
def kept_alive(lease: Lease) -> Iterator[Lease]:
    """Renew `lease` every ttl_s/3 in a background thread while the block runs."""
    stop = threading.Event()

    def renew_until_stopped() -> None:
        held = lease
        while not stop.wait(lease.ttl_s / 3):
            try:
                held = renew(held)
            except LeaseLost:
                return  # the destructive steps check() before they act
            except OSError:
                continue  # a failed renewal is retried; expiry covers a lasting failure

    thread = threading.Thread(target=renew_until_stopped, name="lease-renewal", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def held(root: str, purpose: str, *, flow_run_id: str | None = None,
         ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0) -> Iterator[Lease]:
    """Acquire, keep alive and release the root's lease around a block."""
    lease = acquire(root, purpose, flow_run_id=flow_run_id, ttl_s=ttl_s, wait_s=wait_s)
    try:
        with kept_alive(lease):
            yield lease
    finally:
        release(lease)


def _break(root: str, stale: Lease) -> bool:
    """Delete a stale lease, once; True when it is gone (then try to take the root again).

    Only the run that creates the tombstone named after the stale token deletes the lease,
    so a run that read the old lease late cannot delete its successor. A tombstone older than
    BREAK_GRACE_S whose lease is still there belongs to a breaker that died mid-way.
    """
    tombstone = fs.join(root, BROKEN_DIR, f"{stale.token}-{_safe(stale.expires)}")
    stamp = json.dumps({"broken_at": time.time()}).encode()
    if not fs.create_exclusive(tombstone, stamp):
        try:
            broken_at = json.loads(fs.url_to_fs(tombstone)[0].cat_file(
                fs.url_to_fs(tombstone)[1]))["broken_at"]
        except (FileNotFoundError, ValueError, KeyError):
            return False
        if time.time() - broken_at < BREAK_GRACE_S:
            return False
    current = read_lease(root)
    if current is not None and current.token == stale.token:
        fsys, path = fs.url_to_fs(lease_path(root))
        with contextlib.suppress(FileNotFoundError):
            fsys.rm_file(path)
    return True


def _running(pid: int, started: float) -> bool:
    """True when process `pid` is alive and is the one that took the lease (no pid reuse)."""
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def _pid_namespace() -> str:
    """This process's pid namespace (Linux), or "" where there is none to read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)
