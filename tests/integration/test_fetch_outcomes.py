"""fetch_posters against a real loopback aiohttp server that misbehaves on purpose.

One fetch run covers every outcome (module fixture); each test checks one row of its report.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from storage import fs
from storage.fetch_reports import OUTCOMES
from storage.posters import PosterStore
from tasks.fetch import FetchConfig, fetch_posters
from tests.fetch_helpers import Misbehaving, serve, write_catalog

CONFIG = FetchConfig(
    concurrency=16,
    attempts=3,
    backoff_s=0.01,
    connect_timeout_s=1.0,
    read_timeout_s=5.0,  # > the drip's 1 s per byte: the total timeout must stop it
    total_timeout_s=1.5,
    retry_after_max_s=2.0,
    max_bytes=1_000_000,
    allow_hosts=["127.0.0.1"],
)


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# imdb_id -> (path or absolute URL, expected outcome)
CASES: dict[int, tuple[str, str]] = {
    1: ("/ok/1.jpg", "ok"),
    2: ("/png/2.png", "ok"),
    3: ("/webp/3.webp", "ok"),
    4: ("/status/404", "http_4xx"),
    5: ("/status/500", "http_5xx"),
    6: ("/flaky/a", "ok"),
    7: ("/retry-after/a", "ok"),
    8: ("/throttled/a", "ok"),
    9: ("/hang", "timeout"),
    10: ("/drip", "timeout"),
    11: ("/huge", "too_large"),
    12: ("/huge-declared", "too_large"),
    13: ("/html-as-jpeg", "not_an_image"),
    14: ("/empty", "not_an_image"),
    15: ("/truncated.jpg", "truncated"),
    16: ("/short-body", "truncated"),
    17: ("/bomb.png", "too_many_pixels"),
    18: ("/loop/0", "too_many_redirects"),
    19: ("/hops/3", "ok"),
    20: ("/to-metadata", "blocked_address"),
    21: ("/to-file", "bad_scheme"),
    22: ("file:///etc/passwd", "bad_scheme"),
    23: ("ftp://127.0.0.1/poster.jpg", "bad_scheme"),
    24: ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
    25: (f"http://127.0.0.1:{closed_port()}/x.jpg", "connection_error"),
    26: ("", "bad_scheme"),
    27: ("/status/408", "http_4xx"),
    28: ("/to-garbage", "bad_scheme"),
    29: ("http://[::1/x.jpg", "bad_scheme"),
    30: ("/to-obfuscated/2130706433", "blocked_address"),  # 127.0.0.1, allow-listed or not
    31: ("/to-obfuscated/127.1", "blocked_address"),
    32: ("/to-obfuscated/0xa9.254.43518", "blocked_address"),  # 169.254.169.254
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Fetch every case once; the report, summary, store and server counters."""
    tmp = tmp_path_factory.mktemp("outcomes")
    server = Misbehaving()
    with serve(server.app()) as base:
        rows = [(i, url if "://" in url or not url else base + url)
                for i, (url, _) in CASES.items()]
        write_catalog(tmp / "catalog", rows)
        result = fetch_posters(str(tmp / "catalog"), str(tmp / "store"), CONFIG)
    report = pd.read_parquet(result.report_path).set_index("imdb_id")
    return {"result": result, "report": report, "server": server, "store": tmp / "store"}


@pytest.mark.parametrize("imdb_id", sorted(CASES), ids=[CASES[i][0][:30] for i in sorted(CASES)])
def test_each_case_gets_its_outcome(run: dict[str, Any], imdb_id: int) -> None:
    row = run["report"].loc[imdb_id]
    assert row["outcome"] == CASES[imdb_id][1], row["detail"]


def test_outcomes_add_up_and_summary_matches(run: dict[str, Any]) -> None:
    report, summary = run["report"], run["result"].summary
    assert summary["rows"] == len(CASES) == len(report)
    assert sum(summary["outcomes"].values()) == len(CASES)
    assert set(report["outcome"]) <= set(OUTCOMES)
    assert summary["outcomes"] == report["outcome"].value_counts().reindex(
        list(OUTCOMES), fill_value=0).to_dict()
    assert fs.read_json(run["result"].summary_path) == summary
    assert list(report.index) == sorted(CASES)  # catalog order


def test_every_outcome_is_exercised(run: dict[str, Any]) -> None:
    assert set(run["report"]["outcome"]) == set(OUTCOMES) - {"cached"}


def test_transient_failures_are_retried_and_permanent_ones_are_not(run: dict[str, Any]) -> None:
    attempts = run["report"]["attempts"]
    assert attempts[6] == 3  # 500, 500, 200
    assert attempts[7] == 2 and run["report"].loc[7, "elapsed"] >= 0.9  # honoured Retry-After: 1
    assert attempts[8] == 2  # 429, 200
    assert attempts[5] == attempts[9] == attempts[16] == 3  # gave up after `attempts`
    assert attempts[27] == 3  # 408 is transient
    assert attempts[4] == 1 and run["server"].hits["/status/404"] == 1
    assert attempts[13] == attempts[17] == attempts[20] == 1


def test_timeouts_hold(run: dict[str, Any]) -> None:
    report, elapsed = run["report"], run["report"]["elapsed"]
    assert report.loc[10, "detail"] == "attempt exceeded total_timeout_s"
    assert elapsed[9] < 3 * (CONFIG.total_timeout_s + 0.5)
    assert run["report"]["attempts"][10] == 3 and elapsed[10] < 3 * (CONFIG.total_timeout_s + 0.5)


def test_huge_body_is_capped_while_streaming(run: dict[str, Any]) -> None:
    sent = run["server"].sent
    assert sent["/huge"] < 40 * 2**20, "the client kept reading a 200 MB body"
    assert sent["/huge-declared"] <= 65536
    assert "Content-Length" in run["report"].loc[12, "detail"]


def test_redirect_loop_stops_at_the_limit(run: dict[str, Any]) -> None:
    hits = run["server"].hits
    assert hits["/loop/0"] + hits["/loop/1"] == CONFIG.max_redirects + 1


def test_store_holds_only_accepted_posters_named_by_hash(run: dict[str, Any]) -> None:
    store = PosterStore(run["store"])
    report = run["report"]
    ok = report[report["outcome"] == "ok"]
    index = store.read_index().set_index("imdb_id")
    assert sorted(index.index) == sorted(ok.index)
    objects = [p for p in (run["store"] / "objects").rglob("*") if p.is_file()]
    assert {p.name for p in objects} == set(ok["sha256"])
    assert all(re.fullmatch(r"[0-9a-f]{64}", p.name) and p.parent.name == p.name[:2]
               for p in objects)
    for imdb_id, row in index.iterrows():
        data = store.get(row["sha256"])
        assert fs.sha256_bytes(data) == row["sha256"] and len(data) == row["bytes"]
        assert row["url"] == report.loc[imdb_id, "url"]
    assert index.loc[2, "format"] == "png" and index.loc[3, "format"] == "webp"
    assert (index.loc[1, "width"], index.loc[1, "height"]) == (18, 27)
    assert not list(run["store"].rglob(".tmp-*"))


def test_hostnames_resolving_to_loopback_are_refused_unless_allowed(tmp_path: Path) -> None:
    with serve(Misbehaving().app()) as base:
        url = base.replace("127.0.0.1", "localhost") + "/ok/5.jpg"
        write_catalog(tmp_path / "catalog", [(5, url)])
        refused = fetch_posters(str(tmp_path / "catalog"), str(tmp_path / "a"),
                                CONFIG.model_copy(update={"allow_hosts": []}))
        allowed = fetch_posters(str(tmp_path / "catalog"), str(tmp_path / "b"),
                                CONFIG.model_copy(update={"allow_hosts": ["localhost"]}))
    row = pd.read_parquet(refused.report_path).iloc[0]
    assert row["outcome"] == "blocked_address" and "localhost" in row["detail"]
    assert pd.read_parquet(allowed.report_path).iloc[0]["outcome"] == "ok"


@pytest.mark.shared_data
def test_real_posters_through_the_mirror(shared_dir: Path, tmp_path: Path) -> None:
    from tasks.mirror import make_mirror_app

    folder = shared_dir / "data" / "posters-dev" / "posters"
    names = sorted(p.name for p in folder.glob("*.jpg"))[:60]
    with serve(make_mirror_app(folder)) as base:
        write_catalog(tmp_path / "catalog",
                      [(int(n.removesuffix(".jpg")), f"{base}/{n}") for n in names])
        result = fetch_posters(str(tmp_path / "catalog"), str(tmp_path / "store"), CONFIG)
    assert result.summary["outcomes"]["ok"] == len(names)
    index = PosterStore(tmp_path / "store").read_index()
    assert set(zip(index["width"], index["height"], strict=True)) == {(182, 268)}
    assert set(index["format"]) == {"jpeg"}
    for name in names[:5]:
        row = index[index["imdb_id"] == int(name.removesuffix(".jpg"))].iloc[0]
        assert PosterStore(tmp_path / "store").get(row["sha256"]) == (folder / name).read_bytes()
