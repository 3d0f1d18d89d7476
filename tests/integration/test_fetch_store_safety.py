"""A poster store that is safe to operate: overlapping runs, a full or read-only disk, damage.

Real processes (`posterflow fetch` as users run it), a real loopback server, a real tmpfs
(mounted by the test: it needs root, and skips otherwise) and really damaged files.
`POSTERFLOW_OVERLAP_REPEATS=20` runs the overlap check as many times as the issue asks.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aiohttp import web
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from storage import leases
from storage.catalog import load_catalog, write_catalog
from storage.posters import PosterStore
from tests.fetch_helpers import serve
from tests.shards_helpers import jpeg, write_inputs

POSTERFLOW = shutil.which("posterflow", path=str(Path(sys.executable).parent))
OVERLAP_REPEATS = int(os.environ.get("POSTERFLOW_OVERLAP_REPEATS", "3"))


def noise_jpeg(seed: int, size: tuple[int, int] = (200, 300)) -> bytes:
    """An incompressible poster of ~70 KB (fills a small disk quickly)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Posters:
    """A loopback poster server of in-memory files that counts requests per file."""

    def __init__(self, files: dict[str, bytes], latency_s: float = 0.0) -> None:
        self.files, self.latency_s, self.hits = files, latency_s, Counter[str]()

    def app(self) -> web.Application:
        async def poster(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits[name] += 1
            if self.latency_s:
                import asyncio

                await asyncio.sleep(self.latency_s)
            if name not in self.files:
                raise web.HTTPNotFound()
            return web.Response(body=self.files[name], content_type="image/jpeg")

        application = web.Application()
        application.router.add_get("/{name}", poster)
        return application


def catalog_served_by(root: Path, n: int, base: str, poster: object = jpeg
                      ) -> tuple[Path, dict[str, bytes]]:
    """A validated-looking catalog (catalog.parquet, labels.json) whose posters `base` serves."""
    catalog_dir, _ = write_inputs(root, n=n)
    df = load_catalog(catalog_dir)
    df["poster_url"] = [f"{base}/{m}.jpg" for m in df["imdb_id"]]
    write_catalog(catalog_dir, df)
    files = {f"{m}.jpg": poster(i) for i, m in enumerate(df["imdb_id"])}  # type: ignore[operator]
    return catalog_dir, files


def fetch_cmd(catalog: Path, store: Path, *extra: str) -> list[str]:
    assert POSTERFLOW is not None
    return [POSTERFLOW, "fetch", str(catalog), "--store", str(store), "--allow-host",
            "127.0.0.1", "--attempts", "2", "--timeout", "20", *extra]


def assert_store_consistent(store: Path, rows: int) -> None:
    """Every index row names a whole object; every report has its summary; no temp files."""
    posters = PosterStore(store)
    damage = posters.verify()
    assert damage.checked == rows and not damage.damaged, damage.as_dict()
    reports = sorted((store / "fetch-reports").glob("*.parquet"))
    assert reports and all(r.with_suffix(".json").exists() for r in reports)
    assert not list(store.rglob(".tmp-*")) and leases.read_lease(str(store)) is None


def test_overlapping_fetches_refuse_cleanly_and_leave_the_store_consistent(
        tmp_path: Path) -> None:
    server = Posters({}, latency_s=0.05)
    with serve(server.app()) as base:
        catalog, server.files = catalog_served_by(tmp_path, 60, base)
        store = tmp_path / "store"
        refused = 0
        for _ in range(OVERLAP_REPEATS):
            shutil.rmtree(store, ignore_errors=True)  # each pair starts on an empty store
            first = subprocess.Popen(fetch_cmd(catalog, store, "--concurrency", "4"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(0.1)
            second = subprocess.Popen(fetch_cmd(catalog, store, "--concurrency", "4"),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for proc in (first, second):
                out, err = proc.communicate(timeout=120)
                assert "Traceback" not in err, err
                assert proc.returncode in (0, 3), err
                if proc.returncode == 3:
                    refused += 1
                    assert "another fetch is writing" in err and "pid" in err, err
                else:
                    assert json.loads(out)["available"] == 60
            assert_store_consistent(store, 60)
    print(f"{OVERLAP_REPEATS} overlapping pairs: {refused} runs refused with the lease message")


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MB tmpfs (root only: skipped where the machine does not allow mounting)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_fetch_with_a_report_and_the_disk_named(
        tmp_path: Path, tiny_disk: Path) -> None:
    server = Posters({})
    with serve(server.app()) as base:
        catalog, server.files = catalog_served_by(tmp_path, 80, base, noise_jpeg)  # ~6 MB
        store = tiny_disk / "posters"
        proc = subprocess.run(fetch_cmd(catalog, store, "--concurrency", "8", "--attempts", "4"),
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "No space left on device" in proc.stderr and f"disk {tiny_disk}" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rows"] + summary["rows_not_done"] == 80 and summary["rows_not_done"] > 0
    assert "No space left on device" in summary["stopped"]
    assert summary["outcomes"]["connection_error"] == 0  # a local error, never the network's
    report = pd.read_parquet(summary["report"])
    assert len(report) == summary["rows"] and set(report["outcome"]) <= {"ok"}
    assert max(server.hits.values()) == 1  # nothing downloaded again
    posters = PosterStore(store)
    assert not posters.verify().damaged and len(posters.read_index()) <= summary["rows"]
    assert not list(store.rglob(".tmp-*")) and leases.read_lease(str(store)) is None


def test_a_read_only_store_is_named_not_retried(tmp_path: Path, tiny_disk: Path) -> None:
    server = Posters({})
    with serve(server.app()) as base:
        catalog, server.files = catalog_served_by(tmp_path, 4, base)
        subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
        proc = subprocess.run(fetch_cmd(catalog, tiny_disk / "posters"), capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "Read-only file system" in proc.stderr and str(tiny_disk) in proc.stderr
    assert not server.hits


def test_a_truncated_object_is_fetched_again_and_shards_then_succeed(tmp_path: Path) -> None:
    runner = CliRunner()
    server = Posters({})
    with serve(server.app()) as base:
        catalog, server.files = catalog_served_by(tmp_path, 12, base)
        store = tmp_path / "store"
        first = runner.invoke(app, fetch_cmd(catalog, store)[1:])
        assert first.exit_code == 0 and json.loads(first.stdout)["outcomes"]["ok"] == 12
        index = PosterStore(store).read_index()
        victim = Path(PosterStore(store).path(index["sha256"].iloc[3]))
        victim.write_bytes(victim.read_bytes()[:100])  # a disk error, a power cut, a hand
        shards = ["shards", "--catalog", str(catalog), "--store", str(store), "--out",
                  str(tmp_path / "datasets")]
        broken = runner.invoke(app, shards)
        assert broken.exit_code == 1 and "again" in broken.output
        healed = runner.invoke(app, fetch_cmd(catalog, store)[1:])
    assert healed.exit_code == 0, healed.output
    outcomes = json.loads(healed.stdout)["outcomes"]
    assert outcomes["ok"] == 1 and outcomes["cached"] == 11
    assert server.hits[f"{index['imdb_id'].iloc[3]}.jpg"] == 2
    built = runner.invoke(app, shards)
    assert built.exit_code == 0, built.output


def test_store_verify_reports_and_repairs_damage(tmp_path: Path) -> None:
    runner = CliRunner()
    server = Posters({})
    with serve(server.app()) as base:
        catalog, server.files = catalog_served_by(tmp_path, 6, base)
        store = tmp_path / "store"
        assert runner.invoke(app, fetch_cmd(catalog, store)[1:]).exit_code == 0
        posters = PosterStore(store)
        shas = posters.read_index()["sha256"].tolist()
        short, flipped, gone = (Path(posters.path(s)) for s in shas[:3])
        short.write_bytes(short.read_bytes()[:-1])
        data = bytearray(flipped.read_bytes())
        data[-3] ^= 0xFF  # same size, other content: only a hash finds it
        flipped.write_bytes(bytes(data))
        gone.unlink()
        found = runner.invoke(app, ["store", "verify", str(store)])
        assert found.exit_code == 1
        report = json.loads(found.stdout)
        assert (report["missing"], report["wrong_size"], report["wrong_hash"]) == (1, 1, 1)
        assert sorted(report["damaged"]) == sorted(shas[:3])
        fixed = runner.invoke(app, ["store", "verify", str(store), "--repair"])
        assert fixed.exit_code == 0 and json.loads(fixed.stdout)["index_rows_dropped"] == 3
        assert len(posters.read_index()) == 3 and not short.exists()
        refetched = runner.invoke(app, fetch_cmd(catalog, store)[1:])
    outcomes = json.loads(refetched.stdout)["outcomes"]
    assert (outcomes["ok"], outcomes["cached"]) == (3, 3)
    clean = runner.invoke(app, ["store", "verify", str(store)])
    assert clean.exit_code == 0 and json.loads(clean.stdout)["damaged"] == []


def test_store_verify_repair_waits_for_no_one(tmp_path: Path) -> None:
    lease = leases.acquire(str(tmp_path), "fetch", flow_run_id="other")
    busy = CliRunner().invoke(app, ["store", "verify", str(tmp_path), "--repair"])
    assert busy.exit_code == 3 and "flow run other" in busy.output
    leases.release(lease)
