"""`posterflow demo`: the whole retrain flow, offline, on generated posters served locally.

Generates a small catalog whose genres are painted on the posters (`tasks.demo`), serves
the posters with the mirror on a free loopback port, runs `retrain` on Prefect's
ephemeral server and registers the model. If the TF Hub backbone cannot be downloaded it
builds a local random-weight stand-in backbone and says so in the output and the report.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flows.config import RetrainConfig, ScaleOutConfig, StorageConfig
from flows.runs import RunSummary, run_retrain

log = logging.getLogger(__name__)
MIRROR_START_TIMEOUT_S = 30.0
DEMO_PORT = 8791


@dataclass(frozen=True)
class DemoOutcome:
    """The demo's run summary and the backbone it ended up using."""

    summary: RunSummary
    backbone: str
    notes: list[str]


def free_port(preferred: int = 0) -> int:
    """`preferred` if nothing listens on it (stable URLs, so reruns hit the caches), else any."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


@contextlib.contextmanager
def serve_folder(folder: str, port: int) -> Iterator[str]:
    """Run `posterflow mirror` on `folder` in a child process; yield its base URL."""
    command = [sys.executable, "-m", "flows.cli", "mirror", folder, "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Block until something accepts connections on 127.0.0.1:`port` (or the child died)."""
    deadline = time.monotonic() + MIRROR_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"the mirror exited with code {proc.returncode}: {err[-2000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the mirror did not listen on 127.0.0.1:{port} within "
                       f"{MIRROR_START_TIMEOUT_S:.0f} s")


def choose_backbone(requested: str | None, data_root: str, offline: bool) -> tuple[str, list[str]]:
    """The requested backbone, else TF Hub's MobileNetV2, else a local stand-in (with a note)."""
    from tasks.backbone import (
        DEFAULT_BACKBONE,
        BackboneUnavailableError,
        build_standin_backbone,
        resolve_backbone,
    )

    if requested:
        return resolve_backbone(requested), []
    reason = "--offline was given"
    if not offline:
        try:
            return resolve_backbone(DEFAULT_BACKBONE), []
        except BackboneUnavailableError as exc:
            reason = f"it could not be downloaded: {str(exc).split(' (')[0]}"
    standin = Path(data_root) / "backbones" / "standin-mobilenet-v2"
    if not (standin / "saved_model.pb").is_file():
        build_standin_backbone(standin)
    note = (f"STAND-IN BACKBONE: the TF Hub backbone {DEFAULT_BACKBONE} was not used because "
            f"{reason}. This run uses a small random-weight stand-in ({standin}); its scores "
            "show the pipeline works, not what MobileNetV2 features achieve. Pass --backbone "
            "with a TF Hub handle or a local SavedModel folder to use a real one.")
    return str(standin), [note]


def demo_config(catalog_csv: str, data_root: str, backbone: str, notes: list[str]) -> RetrainConfig:
    """Settings sized for the demo: a rare-genre cut that fits 400 movies, a quick head."""
    from tasks.catalog import CatalogConfig
    from tasks.fetch import FetchConfig
    from tasks.train_config import HeadParams, TrainConfig

    return RetrainConfig(
        catalog_csv=catalog_csv,
        storage=StorageConfig(data_root=data_root),
        catalog=CatalogConfig(min_genre_count=10),
        fetch=FetchConfig(allow_hosts=["127.0.0.1"], concurrency=32),
        scale=ScaleOutConfig(fetch_chunks=2, max_workers=2),
        # BCE at 3e-3: on 280 training posters soft-F1 tends to stay on its "every genre for
        # every poster" plateau (val macro F1 0.46) with the weak stand-in features; with
        # MobileNetV2 features both losses reach about 0.94.
        train=TrainConfig(backbone=backbone, batch_size=64, patience=40, compare_losses=False,
                          head=HeadParams(learning_rate=3e-3, epochs=100, hidden=256,
                                          loss="bce")),
        notes=notes,
    )


def run_demo(data_root: str, movies: int, backbone: str | None, offline: bool) -> DemoOutcome:
    """Generate demo data, serve it, run `retrain` and return what happened."""
    from tasks.demo import make_demo_data

    root = str(Path(data_root).resolve())
    chosen, notes = choose_backbone(backbone, root, offline)
    port = free_port(DEMO_PORT)
    data = make_demo_data(Path(root) / "demo", f"http://127.0.0.1:{port}", movies=movies)
    with serve_folder(data.posters_dir, port):
        summary = run_retrain(demo_config(data.csv_path, root, chosen, notes))
    return DemoOutcome(summary, chosen, notes)
