"""`posterflow fetch` and `posterflow mirror` as users run them."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.fetch_helpers import Misbehaving, poster_bytes, serve, write_catalog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_command_prints_and_writes_the_summary(tmp_path: Path) -> None:
    with serve(Misbehaving().app()) as base:
        write_catalog(tmp_path / "catalog", [(1, f"{base}/ok/1.jpg"), (2, f"{base}/status/404")])
        result = CliRunner().invoke(app, ["fetch", str(tmp_path / "catalog"), "--store",
                                          str(tmp_path / "store"), "--allow-host", "127.0.0.1",
                                          "--concurrency", "4", "--attempts", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["outcomes"]["ok"] == 1 and summary["outcomes"]["http_4xx"] == 1
    assert json.loads(Path(summary["report"]).with_suffix(".json").read_text()) == summary
    assert len(pd.read_parquet(summary["report"])) == 2


def test_fetch_command_without_allow_list_refuses_loopback_and_says_how_to_allow_it(
        tmp_path: Path) -> None:
    with serve(Misbehaving().app()) as base:  # a real server: only the guard stands between
        write_catalog(tmp_path / "catalog", [(1, f"{base}/ok/1.jpg"), (2, f"{base}/ok/2.jpg"),
                                             (3, "http://localhost:9/3.jpg")])
        result = CliRunner().invoke(app, ["fetch", str(tmp_path / "catalog"), "--store",
                                          str(tmp_path / "store")])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["outcomes"]["blocked_address"] == 3
    assert result.stderr.splitlines()[-1] == (
        "no poster fetched: every poster was refused by the address guard (blocked_address); "
        "to fetch from a private or loopback host pass --allow-host 127.0.0.1 "
        "--allow-host localhost")


def test_fetch_command_exits_1_with_the_counts_when_every_poster_failed(tmp_path: Path) -> None:
    with serve(Misbehaving().app()) as base:
        write_catalog(tmp_path / "catalog", [(1, f"{base}/status/404"), (2, f"{base}/status/404"),
                                             (3, "ftp://127.0.0.1/3.jpg")])
        result = CliRunner().invoke(app, ["fetch", str(tmp_path / "catalog"), "--store",
                                          str(tmp_path / "store"), "--allow-host", "127.0.0.1",
                                          "--attempts", "1"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["available"] == 0
    assert result.stderr.splitlines()[-1] == (
        "no poster fetched: every one of the 3 posters failed (http_4xx 2, bad_scheme 1)")


@pytest.mark.parametrize("content", [None, b"not parquet"], ids=["missing", "garbage"])
def test_fetch_command_exits_2_on_an_unreadable_catalog(tmp_path: Path,
                                                         content: bytes | None) -> None:
    if content is not None:
        (tmp_path / "catalog.parquet").write_bytes(content)
    result = CliRunner().invoke(app, ["fetch", str(tmp_path), "--store", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "unreadable catalog" in result.output and "Traceback" not in result.output


def test_mirror_command_serves_a_folder_with_latency(tmp_path: Path) -> None:
    (tmp_path / "posters").mkdir()
    (tmp_path / "posters" / "7.jpg").write_bytes(poster_bytes(7))
    (tmp_path / "secret.txt").write_text("outside")
    port = free_port()
    posterflow = shutil.which("posterflow", path=str(Path(sys.executable).parent))
    assert posterflow is not None
    proc = subprocess.Popen([posterflow, "mirror", str(tmp_path / "posters"), "--port",
                             str(port), "--latency-ms", "150"])
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "mirror never came up"
                time.sleep(0.1)
        started = time.monotonic()
        with urllib.request.urlopen(f"{base}/7.jpg", timeout=10) as resp:
            assert resp.read() == poster_bytes(7)
        assert time.monotonic() - started >= 0.15
        for path in ("/missing.jpg", "/../secret.txt", "/%2e%2e/secret.txt", "/" + "a" * 5000):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(base + path, timeout=10)
            info.value.close()
            assert info.value.code in (403, 404)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert proc.returncode == 0


def test_mirror_command_exits_2_on_a_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["mirror", str(tmp_path / "nope")])
    assert result.exit_code == 2
