"""Poster fetch throughput: `posterflow fetch` vs a bare aiohttp loop vs the seed's downloader.

Starts `posterflow mirror` in its own process on loopback with injected latency (default
50 ms) over N posters (the real ones in ../shared/data/posters-dev when present, generated
182x268 JPEGs otherwise), then times each method as a whole command, in a fresh process
writing into a fresh folder, repeats interleaved:
  posterflow cN   `posterflow fetch CATALOG --store OUT --allow-host 127.0.0.1 --concurrency N`:
                  every check (address per hop, byte cap, magic bytes, pixel cap, decode,
                  sha256), atomic object writes, index parts, report, summary, compaction
  bare cN         one ClientSession, N workers, resp.read(), a file write; no checks
  floor cN        the bare loop in a process that first imports the libraries posterflow's
                  command must load (FETCH_LIBRARIES): what start-up alone costs
  seed            urllib.request.urlretrieve in a ThreadPoolExecutor(os.cpu_count())
Prints medians of posters/s (whole command, start-up included), the ratios at equal
concurrency (x bare, x floor, x seed), posters/s of the fetch alone (start-up excluded:
the stage's own clock), and CPU per poster (user+sys of the command: steadier than wall
time on a shared machine), split into the command's fixed cost (one run over an empty
list) and the marginal CPU per poster. The load average is printed before and after.

    .venv/bin/python benchmarks/fetch.py [--posters 5528] [--repeats 3] [--concurrency 64]
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

SHARED = Path(os.environ.get("POSTERFLOW_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SHARED_POSTERS = SHARED / "data" / "posters-dev" / "posters"
POSTERFLOW = [sys.executable, "-m", "flows.cli"]
# The third-party libraries `posterflow fetch` loads. pandas is among them although the fetch
# never builds a frame: pyarrow imports it on the first `pa.array` (any Parquet written from
# Python rows), so a command that writes a Parquet report pays it.
FETCH_LIBRARIES = ("pandas", "pyarrow.parquet", "PIL.Image", "pydantic", "typer", "rich.progress",
                   "fsspec", "psutil", "yarl")


def read_urls(url_list: str) -> list[tuple[str, str]]:
    """(name, url) pairs of the benchmark's URL list (one tab-separated pair a line)."""
    with open(url_list) as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in f if line.strip()]


def run_bare(url_list: str, out: str, concurrency: int) -> int:
    """A bare aiohttp loop: read each body, write it, no checks; posters written."""
    import asyncio

    import aiohttp

    rows = iter(read_urls(url_list))
    done = [0]

    async def worker(session: aiohttp.ClientSession) -> None:
        for name, url in rows:
            async with session.get(url) as resp:
                body = await resp.read()
            with open(f"{out}/{name}", "wb") as f:
                f.write(body)
            done[0] += 1

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))

    asyncio.run(main())
    return done[0]


def run_seed(url_list: str, out: str, concurrency: int) -> int:
    """The seed's downloader: urlretrieve in a pool of `concurrency` threads."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def get(row: tuple[str, str]) -> bool:
        name, url = row
        try:
            urllib.request.urlretrieve(url, f"{out}/{name}")
            return True
        except OSError:
            return False

    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(get, read_urls(url_list)))


WORKERS = {"bare": run_bare, "floor": run_bare, "seed": run_seed}


def worker_main(method: str, url_list: str, out: str, concurrency: int) -> None:
    """Run one baseline in this fresh process; print its own clock as a JSON line.

    Its imports come before the clock starts, as the fetch summary's clock starts after
    posterflow's.
    """
    import importlib
    import urllib.request  # noqa: F401

    import aiohttp  # noqa: F401

    for library in FETCH_LIBRARIES if method == "floor" else ():
        importlib.import_module(library)
    started = time.perf_counter()
    ok = WORKERS[method](url_list, out, concurrency)
    print(json.dumps({"ok": ok, "fetch_s": time.perf_counter() - started}))


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


def write_inputs(folder: Path, n: int, port: int, tmp: Path) -> None:
    """catalog.parquet and urls.tsv of n posters of `folder` (served by the mirror on `port`),
    and empty ones (the commands' fixed cost)."""
    import pandas as pd

    from storage import fs

    names = sorted(p.name for p in folder.glob("*.jpg"))[:n]
    random.Random(0).shuffle(names)
    for kind, chosen in (("full", names), ("empty", [])):
        urls = [f"http://127.0.0.1:{port}/{name}" for name in chosen]
        df = pd.DataFrame({"imdb_id": pd.Series([int(x.removesuffix(".jpg")) for x in chosen],
                                                dtype="int64"),
                           "poster_url": pd.Series(urls, dtype=object)})
        fs.atomic_write_parquet(tmp / kind / "catalog.parquet", df)
        (tmp / kind / "urls.tsv").write_text("".join(f"{a}\t{u}\n" for a, u in zip(
            chosen, urls, strict=True)))


def start_mirror(folder: Path, latency_ms: float) -> tuple[subprocess.Popen, int]:
    """`posterflow mirror` in its own process; (process, port) once it accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*POSTERFLOW, "mirror", str(folder), "--port", str(port),
                             "--latency-ms", str(latency_ms)])
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the mirror did not start") from None
            time.sleep(0.2)


def command(method: str, concurrency: int, inputs: Path, out: Path) -> list[str]:
    """The whole command line of one method."""
    if method == "posterflow":
        return [*POSTERFLOW, "fetch", str(inputs), "--store", str(out),
                "--allow-host", "127.0.0.1", "--concurrency", str(concurrency)]
    return [sys.executable, __file__, "--worker", method, "--urls", str(inputs / "urls.tsv"),
            "--out", str(out), "--concurrency", str(concurrency)]


def first_json(text: str) -> dict:
    """The first JSON object printed (the fetch summary; a baseline's own line)."""
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def measure(method: str, concurrency: int, inputs: Path, tmp: Path) -> dict:
    """Whole-command seconds and CPU (user+sys) of one run; posters ok and the fetch's clock."""
    out = tmp / f"out-{method}-{concurrency}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command(method, concurrency, inputs, out), check=True,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(out, ignore_errors=True)
    printed = first_json(done.stdout)
    ok = printed["outcomes"]["ok"] if method == "posterflow" else printed["ok"]
    fetch_s = printed["elapsed_s"] if method == "posterflow" else printed["fetch_s"]
    cpu_s = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"seconds": seconds, "cpu_s": cpu_s, "ok": ok, "fetch_s": fetch_s}


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    """Start the mirror, measure every method interleaved, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posters", type=int, default=5528)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64])
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--urls")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.urls, args.out, args.concurrency[0])
        return

    seed_threads = os.cpu_count() or 1
    plan = [(m, c) for c in args.concurrency for m in ("posterflow", "bare", "floor")]
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="posterflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        folder = poster_folder(args.posters, tmp)
        mirror, port = start_mirror(folder, args.latency_ms)
        try:
            write_inputs(folder, args.posters, port, tmp)
            measure("bare", args.concurrency[0], tmp / "full", tmp)  # warm page cache + mirror
            fixed = {key: measure(*key, tmp / "empty", tmp)["cpu_s"]
                     for key in [*plan, ("seed", seed_threads)]}
            runs: dict[tuple[str, int], list[dict]] = {}
            for repeat in range(args.repeats):
                for key in plan:
                    runs.setdefault(key, []).append(measure(*key, tmp / "full", tmp))
                if repeat == 0:  # slow: latency-bound at os.cpu_count() connections
                    runs[("seed", seed_threads)] = [
                        measure("seed", seed_threads, tmp / "full", tmp)]
        finally:
            mirror.terminate()
            mirror.wait(10)
    for key, results in runs.items():
        if any(r["ok"] != args.posters for r in results):
            raise SystemExit(f"{key}: only {[r['ok'] for r in results]} of {args.posters} ok")
    report(runs, fixed, args, folder, (load_before, load_average()))


def report(runs: dict[tuple[str, int], list[dict]], fixed: dict[tuple[str, int], float],
           args: argparse.Namespace, folder: Path, loads: tuple[str, str]) -> None:
    """Print medians, ratios and CPU per poster."""
    n = args.posters
    rate = {k: statistics.median(n / r["seconds"] for r in v) for k, v in runs.items()}
    fetch_rate = {k: statistics.median(n / r["fetch_s"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_s"] for r in v) for k, v in runs.items()}
    seed = next(k for k in runs if k[0] == "seed")
    print(f"{n} posters from {folder}, mirror latency {args.latency_ms:g} ms, {os.cpu_count()} "
          f"CPUs (shared), median of {args.repeats} runs (seed: 1); load average "
          f"{loads[0]} before, {loads[1]} after")
    print(f"{'command':<15}{'posters/s':>10}{'x bare':>8}{'x floor':>8}{'x seed':>8}"
          f"{'fetch-only/s':>13}{'CPU ms/poster':>15}{'fixed CPU s':>13}{'marginal ms':>13}")
    order = ("posterflow", "bare", "floor", "seed")
    for key in sorted(runs, key=lambda k: (k[0] == "seed", k[1], order.index(k[0]))):
        method, conc = key
        ratios = [f"{rate[key] / rate[(base, conc)]:.2f}" if (base, conc) in rate else ""
                  for base in ("bare", "floor")]
        print(f"{f'{method} c{conc}':<15}{rate[key]:>10.0f}{ratios[0]:>8}{ratios[1]:>8}"
              f"{rate[key] / rate[seed]:>8.1f}{fetch_rate[key]:>13.0f}"
              f"{1000 * cpu[key] / n:>15.3f}{fixed[key]:>13.2f}"
              f"{1000 * (cpu[key] - fixed[key]) / n:>13.3f}")


if __name__ == "__main__":
    main()
