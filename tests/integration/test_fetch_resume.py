"""Resume, SIGKILL and concurrent chunks: the store ends the same as one clean run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from storage import leases
from storage.posters import PosterStore
from tasks.fetch import FetchConfig, FetchResult, fetch_posters
from tasks.mirror import make_mirror_app
from tests.fetch_helpers import Misbehaving, poster_bytes, serve, write_catalog

REPO = Path(__file__).resolve().parents[2]
CONFIG = FetchConfig(allow_hosts=["127.0.0.1"], attempts=2, backoff_s=0.01,
                     total_timeout_s=5.0, index_flush_rows=10)
N_POSTERS = 240


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A latency-injecting mirror of N_POSTERS generated posters; (base URL, catalog dir)."""
    tmp = tmp_path_factory.mktemp("mirror")
    (tmp / "posters").mkdir()
    for i in range(1, N_POSTERS + 1):
        (tmp / "posters" / f"{i}.jpg").write_bytes(poster_bytes(i))
    with serve(make_mirror_app(tmp / "posters", latency_ms=25)) as base:
        write_catalog(tmp / "catalog", [(i, f"{base}/{i}.jpg") for i in range(1, N_POSTERS + 1)])
        yield base, tmp / "catalog"


def store_state(root: Path) -> tuple[set[str], pd.DataFrame]:
    """(object file names, index rows without fetch times): what must match across runs."""
    objects = {p.name for p in (root / "objects").rglob("*") if p.is_file()}
    index = PosterStore(root).read_index().drop(columns="fetched_at")
    return objects, index


def test_sigkill_then_rerun_ends_like_an_uninterrupted_run(
    mirror: tuple[str, Path], tmp_path: Path
) -> None:
    _, catalog = mirror
    clean = fetch_posters(str(catalog), str(tmp_path / "clean"), CONFIG)
    assert clean.summary["outcomes"]["ok"] == N_POSTERS
    killed_store = tmp_path / "killed"
    slow = CONFIG.model_copy(update={"concurrency": 4})
    code = ("import sys; from tasks.fetch import FetchConfig, fetch_posters; "
            "fetch_posters(sys.argv[1], sys.argv[2], FetchConfig.model_validate_json(sys.argv[3]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(catalog), str(killed_store),
                             slow.model_dump_json()], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        parts = killed_store / "index-parts"
        while not (parts.is_dir() and len(list(parts.glob("*.parquet"))) >= 3):
            assert proc.poll() is None, "the fetch ended before it could be killed"
            assert time.monotonic() < deadline, "no index parts appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    partial_index = PosterStore(killed_store).read_index()
    assert 30 <= len(partial_index) < N_POSTERS

    rerun = fetch_posters(str(catalog), str(killed_store), CONFIG)
    outcomes = rerun.summary["outcomes"]
    assert outcomes["cached"] >= len(partial_index)
    assert outcomes["cached"] + outcomes["ok"] == N_POSTERS
    objects, index = store_state(killed_store)
    clean_objects, clean_index = store_state(tmp_path / "clean")
    assert objects == clean_objects
    pd.testing.assert_frame_equal(index, clean_index)
    assert not list(killed_store.rglob(".tmp-*"))
    assert not list((killed_store / "index-parts").iterdir())  # compacted


def test_rerun_tries_only_failed_new_or_changed_rows(tmp_path: Path) -> None:
    server = Misbehaving()
    with serve(server.app()) as base:
        rows = [(1, f"{base}/ok/1.jpg"), (2, f"{base}/ok/2.jpg"), (3, f"{base}/status/503")]
        write_catalog(tmp_path / "catalog", rows)
        first = fetch_posters(str(tmp_path / "catalog"), str(tmp_path / "store"), CONFIG)
        rows = [(1, f"{base}/ok/1.jpg"), (2, f"{base}/ok/22.jpg"), (3, f"{base}/status/503"),
                (4, f"{base}/ok/4.jpg")]
        write_catalog(tmp_path / "catalog", rows)
        second = fetch_posters(str(tmp_path / "catalog"), str(tmp_path / "store"), CONFIG)
    assert first.summary["outcomes"]["ok"] == 2 and first.summary["outcomes"]["http_5xx"] == 1
    report = pd.read_parquet(second.report_path).set_index("imdb_id")
    assert report["outcome"].to_dict() == {1: "cached", 2: "ok", 3: "http_5xx", 4: "ok"}
    assert report.loc[1, "attempts"] == 0
    assert server.hits["/ok/1.jpg"] == 1 and server.hits["/ok/22.jpg"] == 1
    assert server.hits["/status/503"] == 2 * CONFIG.attempts
    index = PosterStore(tmp_path / "store").read_index().set_index("imdb_id")
    assert index.loc[2, "url"].endswith("/ok/22.jpg")
    assert first.run_id != second.run_id and Path(first.report_path).exists()


def test_concurrent_chunks_partition_the_catalog_and_merge(
    mirror: tuple[str, Path], tmp_path: Path
) -> None:
    _, catalog = mirror
    results: dict[int, FetchResult] = {}
    progress: dict[int, list[tuple[int, int]]] = {0: [], 1: [], 2: []}
    lease = leases.acquire(str(tmp_path / "store"), "fetch")  # as the flow takes it

    def run(i: int) -> None:
        results[i] = fetch_posters(str(catalog), str(tmp_path / "store"), CONFIG, chunk=(i, 3),
                                   lease=lease,
                                   on_progress=lambda d, t: progress[i].append((d, t)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    store = PosterStore(tmp_path / "store")
    reports = [pd.read_parquet(results[i].report_path) for i in range(3)]
    ids = [set(r["imdb_id"]) for r in reports]
    assert set().union(*ids) == set(range(1, N_POSTERS + 1))
    assert sum(len(s) for s in ids) == N_POSTERS
    assert all((r["imdb_id"] % 3 == i).all() for i, r in enumerate(reports))
    assert results[0].run_id.endswith("-chunk000of003")
    assert len(store.read_index()) == N_POSTERS  # merged from parts before compaction
    assert store.compact_index(lease) > 0 and len(store.read_index()) == N_POSTERS
    leases.release(lease)
    for i in range(3):
        done = [d for d, _ in progress[i]]
        assert done == sorted(done) and progress[i][-1] == (len(ids[i]), len(ids[i]))
    summary = json.loads(Path(results[1].summary_path).read_text())
    assert summary["chunk"] == [1, 3] and summary["outcomes"]["ok"] == len(ids[1])


def test_bad_chunk_is_refused(mirror: tuple[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk"):
        fetch_posters(str(mirror[1]), str(tmp_path), CONFIG, chunk=(3, 3))


def test_empty_catalog_gives_an_empty_report(tmp_path: Path) -> None:
    write_catalog(tmp_path / "catalog", [])
    result = fetch_posters(str(tmp_path / "catalog"), str(tmp_path / "store"), CONFIG)
    assert result.summary["rows"] == 0 and sum(result.summary["outcomes"].values()) == 0
    assert pd.read_parquet(result.report_path).empty
