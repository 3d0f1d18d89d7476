"""Poster fetch throughput: posterflow vs the seed's method vs a bare aiohttp loop.

Starts `posterflow mirror` in its own process on loopback with injected latency (default
50 ms) over N posters (the real ones in ../shared/data/posters-dev when present, generated
182x268 JPEGs otherwise), then measures, each run in a fresh process into a fresh folder:
  posterflow c64 / c256   fetch_posters: checks, content-addressed store, index, report
  bare c64 / c256         one ClientSession, N workers, resp.read(), file write; no checks
  seed                    urllib.request.urlretrieve in a ThreadPoolExecutor(os.cpu_count())
Repeats are interleaved (the seed runs once: it is slow); prints median posters/s, ratios,
the client's CPU time per poster (user+sys of its process during the fetch: steadier than
wall time on a shared machine) and peak RSS (ru_maxrss of its process, imports included).

    .venv/bin/python benchmarks/fetch.py [--posters 3000] [--repeats 3] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_POSTERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "posters-dev" / "posters"


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_urls(catalog_dir: str) -> list[tuple[int, str]]:
    """(imdb_id, poster_url) pairs of the benchmark catalog."""
    import pandas as pd

    df = pd.read_parquet(Path(catalog_dir) / "catalog.parquet", columns=["imdb_id", "poster_url"])
    return list(df.itertuples(index=False, name=None))


def run_posterflow(catalog: str, out: str, concurrency: int) -> int:
    """posterflow's fetch stage; posters accepted."""
    from tasks.fetch import FetchConfig, fetch_posters

    config = FetchConfig(concurrency=concurrency, allow_hosts=["127.0.0.1"])
    return fetch_posters(catalog, out, config).summary["outcomes"]["ok"]


def run_bare(catalog: str, out: str, concurrency: int) -> int:
    """A bare aiohttp loop at the same concurrency: read each body, write it, no checks."""
    import asyncio

    import aiohttp

    rows = iter(read_urls(catalog))
    done = [0]

    async def worker(session: aiohttp.ClientSession) -> None:
        for imdb_id, url in rows:
            async with session.get(url) as resp:
                body = await resp.read()
            with open(f"{out}/{imdb_id}.jpg", "wb") as f:
                f.write(body)
            done[0] += 1

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))

    asyncio.run(main())
    return done[0]


def run_seed(catalog: str, out: str, concurrency: int) -> int:
    """The seed's method: urlretrieve in a pool of os.cpu_count() workers."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def get(row: tuple[int, str]) -> bool:
        imdb_id, url = row
        try:
            urllib.request.urlretrieve(url, f"{out}/{imdb_id}.jpg")
            return True
        except OSError:
            return False

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return sum(pool.map(get, read_urls(catalog)))


METHODS = {"posterflow": run_posterflow, "bare": run_bare, "seed": run_seed}


def worker_main(method: str, catalog: str, out: str, concurrency: int) -> None:
    """Time one method in this (fresh) process; print a JSON line."""
    Path(out).mkdir(parents=True, exist_ok=True)
    import aiohttp  # noqa: F401  (import cost is not fetch time)
    import pandas  # noqa: F401

    import tasks.fetch  # noqa: F401

    cpu, started = os.times(), time.perf_counter()
    ok = METHODS[method](catalog, out, concurrency)
    seconds, cpu_end = time.perf_counter() - started, os.times()
    cpu_s = cpu_end.user - cpu.user + cpu_end.system - cpu.system
    print(json.dumps({"seconds": seconds, "ok": ok, "cpu_s": cpu_s, "peak_rss_mb": peak_rss_mb()}))


def poster_folder(n: int, tmp: Path) -> Path:
    """The shared real posters when there are at least n, else n generated JPEGs."""
    if SHARED_POSTERS.is_dir() and len(list(SHARED_POSTERS.glob("*.jpg"))) >= n:
        return SHARED_POSTERS
    import numpy as np
    from PIL import Image

    folder = tmp / "generated"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        pixels = rng.integers(0, 256, (268, 182, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=75)
    return folder


def write_catalog(folder: Path, n: int, port: int, catalog: Path) -> None:
    """catalog.parquet of n posters of `folder`, served by the mirror on `port`."""
    import pandas as pd

    from storage import fs

    names = sorted(p.name for p in folder.glob("*.jpg"))[:n]
    random.Random(0).shuffle(names)
    df = pd.DataFrame({"imdb_id": [int(name.removesuffix(".jpg")) for name in names],
                       "poster_url": [f"http://127.0.0.1:{port}/{name}" for name in names]})
    fs.atomic_write_parquet(catalog / "catalog.parquet", df)


def start_mirror(folder: Path, latency_ms: float) -> tuple[subprocess.Popen, int]:
    """`posterflow mirror` in its own process; (process, port) once it accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "mirror", str(folder),
                             "--port", str(port), "--latency-ms", str(latency_ms)])
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the mirror did not start") from None
            time.sleep(0.2)


def measure(method: str, concurrency: int, catalog: Path, tmp: Path, n: int) -> dict:
    """One timed run of a method in a fresh process and a fresh output folder."""
    out = tmp / f"out-{method}-{concurrency}"
    shutil.rmtree(out, ignore_errors=True)
    line = subprocess.run(
        [sys.executable, __file__, "--worker", method, "--catalog", str(catalog), "--out",
         str(out), "--concurrency", str(concurrency)],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    shutil.rmtree(out, ignore_errors=True)
    result = json.loads(line)
    if result["ok"] != n:
        raise SystemExit(f"{method} c{concurrency}: {result['ok']} of {n} posters fetched")
    return result


def main() -> None:
    """Start the mirror, measure every method interleaved, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posters", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--worker", choices=sorted(METHODS))
    parser.add_argument("--catalog")
    parser.add_argument("--out")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.catalog, args.out, args.concurrency)
        return

    with tempfile.TemporaryDirectory(prefix="posterflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        folder = poster_folder(args.posters, tmp)
        mirror, port = start_mirror(folder, args.latency_ms)
        try:
            (tmp / "catalog").mkdir()
            write_catalog(folder, args.posters, port, tmp / "catalog")
            runs: dict[tuple[str, int], list[dict]] = {}
            plan = [("posterflow", 64), ("bare", 64), ("posterflow", 256), ("bare", 256)]
            measure("bare", 64, tmp / "catalog", tmp, args.posters)  # warm page cache + mirror
            for repeat in range(args.repeats):
                for method, conc in plan:
                    runs.setdefault((method, conc), []).append(
                        measure(method, conc, tmp / "catalog", tmp, args.posters))
                if repeat == 0:
                    seed_conc = os.cpu_count() or 1
                    runs[("seed", seed_conc)] = [
                        measure("seed", seed_conc, tmp / "catalog", tmp, args.posters)]
        finally:
            mirror.terminate()
            mirror.wait(10)
    report(runs, args, folder)


def report(runs: dict[tuple[str, int], list[dict]], args: argparse.Namespace,
           folder: Path) -> None:
    """Print posters/s medians, ratios and peak RSS."""
    rate = {k: statistics.median(args.posters / r["seconds"] for r in v) for k, v in runs.items()}
    rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_s"] for r in v) * 1000 / args.posters
           for k, v in runs.items()}
    seed = next(k for k in runs if k[0] == "seed")
    print(f"{args.posters} posters from {folder}, mirror latency {args.latency_ms:g} ms, "
          f"{os.cpu_count()} CPUs (machine shared), median of {args.repeats} runs "
          f"(seed: 1 run)")
    print(f"{'method':<18}{'posters/s':>11}{'x seed':>9}{'x bare':>9}{'client CPU ms/poster':>22}"
          f"{'peak RSS MiB':>14}")
    for key in sorted(runs, key=lambda k: (k[0] != "posterflow", k[0], k[1])):
        method, conc = key
        vs_bare = rate[key] / rate[("bare", conc)] if ("bare", conc) in rate else None
        print(f"{f'{method} c{conc}':<18}{rate[key]:>11.0f}{rate[key] / rate[seed]:>9.1f}"
              f"{'' if vs_bare is None else f'{vs_bare:.2f}':>9}{cpu[key]:>22.2f}{rss[key]:>14.0f}")


if __name__ == "__main__":
    main()
