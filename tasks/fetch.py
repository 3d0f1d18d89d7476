"""Fetch the catalog's posters into the content-addressed store, accounting for every row.

One event loop and one aiohttp `ClientSession` per call: a bounded pool of workers (global
and per-host limits on the `TCPConnector`), explicit timeouts, bodies streamed under a byte
cap, redirects followed by hand so that every hop is re-checked, and a resolver that refuses
private, loopback, link-local and metadata addresses unless allow-listed. Transient failures
(connection errors, timeouts, 408, 429, 5xx) are retried with jittered exponential backoff,
honouring `Retry-After`. A poster is accepted only after Pillow has read its header (pixel
cap, before decoding) and decoded it fully. Each call writes a report with one row per
catalog row whose outcomes add up to the rows in. A rerun skips rows already stored for the
same URL (and refetches those whose object lost bytes); several calls may fetch disjoint
`chunk`s of one catalog concurrently under one store lease (`storage.leases`). An error
writing the store (full disk, read-only, permissions) is never taken for a network failure:
it stops the run at once, after the report of the rows done (`StoreWriteError`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

from storage import fs, leases
from storage.catalog import load_catalog
from storage.fetch_reports import OUTCOMES, report_path, report_row, write_fetch_report
from storage.posters import PosterStore
from storage.run_ids import new_run_id
from tasks.http_retry import RetryPolicy, classify, http_failure
from tasks.poster_checks import MAX_PIXELS, check_image
from tasks.rejections import Rejected
from tasks.url_guard import AddressPolicy, GuardedResolver, check_url

log = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PROGRESS_INTERVAL_S = 0.25
IO_THREADS = 8  # content checks, object writes and index flushes, off the event loop

class FetchConfig(BaseModel):
    """How posters are fetched and checked (one form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(
        default=64, ge=1, le=4096, description="Posters fetched at once in total."
    )
    per_host: int = Field(
        default=0, ge=0, description="Connections at once to one host; 0: the global limit only."
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to open a TCP/TLS socket."
    )
    read_timeout_s: float = Field(
        default=20.0, gt=0, description="Seconds allowed between two reads of the response."
    )
    total_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds for one attempt at one poster: redirects and any wait for a "
        "per-host connection included.",
    )
    attempts: int = Field(
        default=4, ge=1, le=20, description="Tries per poster for transient failures."
    )
    backoff_s: float = Field(
        default=0.5, ge=0, description="Base of the exponential backoff (full jitter)."
    )
    backoff_max_s: float = Field(
        default=30.0, ge=0, description="Longest backoff between two tries."
    )
    retry_after_max_s: float = Field(
        default=60.0, ge=0, description="Longest wait honoured from a Retry-After header."
    )
    max_bytes: int = Field(
        default=10_000_000, ge=1, description="Largest poster body accepted, in bytes."
    )
    max_pixels: int = Field(
        default=MAX_PIXELS, ge=1, description="Largest width*height, checked before decoding."
    )
    max_redirects: int = Field(
        default=5, ge=0, le=30, description="Redirect hops followed per poster."
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts, IP addresses or networks (CIDR) allowed to resolve to private, loopback "
            "or link-local addresses, e.g. 127.0.0.1 for a local mirror."
        ),
    )
    user_agent: str = Field(
        default="posterflow/0.1 (poster fetcher)", description="User-Agent header."
    )
    index_flush_rows: int = Field(
        default=500, ge=1, description="Posters per index part file (progress kept on a crash)."
    )
    lease_wait_s: float = Field(
        default=0.0, ge=0,
        description="Seconds to wait for another run writing the same store before giving up.",
    )

    def retry_policy(self) -> RetryPolicy:
        """The tries and backoff of these settings."""
        return RetryPolicy(self.attempts, self.backoff_s, self.backoff_max_s,
                           self.retry_after_max_s)


@dataclass(frozen=True)
class FetchResult:
    """Where a fetch run wrote its report and summary, and the summary itself."""

    run_id: str
    report_path: str
    summary_path: str
    summary: dict[str, Any]


class StoreWriteError(RuntimeError):
    """The store cannot be written (disk full, quota, read-only, permissions): stop the run.

    `result` is the run's report of the rows done when it could still be written.
    """

    def __init__(self, message: str, result: FetchResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def store_write(root: str, write: Callable[..., Any], *args: Any) -> Any:
    """Call a store write; an OSError becomes a StoreWriteError naming the path and disk."""
    try:
        return write(*args)
    except OSError as exc:
        raise StoreWriteError(f"cannot write the poster store: "
                              f"{fs.describe_io_error(exc, root)}") from exc


async def read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The response body, streamed; too_large as soon as it passes max_bytes."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        resp.close()
        raise Rejected("too_large", f"Content-Length {resp.content_length} > {max_bytes}")
    chunks, size = [], 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            resp.close()
            raise Rejected("too_large", f"body passed {max_bytes} bytes")
    return b"".join(chunks)  # the body's one copy (none when it came in one chunk)


async def download(
    session: aiohttp.ClientSession, url: str, config: FetchConfig, policy: AddressPolicy
) -> tuple[bytes, int]:
    """(body, status) of a 2xx answer, following redirects hop by hop (each re-checked)."""
    target = URL(url)
    for _ in range(config.max_redirects + 1):
        check_url(target, policy)
        async with session.get(target, allow_redirects=False) as resp:
            if resp.status in REDIRECT_STATUSES and resp.headers.get("Location"):
                target = resp.url.join(URL(resp.headers["Location"]))
                continue
            if resp.status >= 400:
                raise http_failure(resp.status, target, resp.headers.get("Retry-After"))
            return await read_capped(resp, config.max_bytes), resp.status
    raise Rejected("too_many_redirects", f"more than {config.max_redirects} redirects from {url}")


def accept(data: bytes, store: PosterStore, max_pixels: int) -> dict[str, Any]:
    """Check a body and store it; the poster's index fields (runs in the IO thread pool).

    Off the event loop so that a large decode cannot stall every connection; for ~20 KB
    posters, checking on the loop instead measured the same throughput.
    """
    if not data:
        raise Rejected("not_an_image", "empty body")
    fmt, width, height = check_image(data, max_pixels)
    sha256 = store_write(store.root, store.put, data)
    return {"sha256": sha256, "bytes": len(data), "width": width, "height": height, "format": fmt}


@dataclass(frozen=True)
class Fetcher:
    """What every poster of one run shares: session, store, config, address policy, IO pool."""

    session: aiohttp.ClientSession
    store: PosterStore
    config: FetchConfig
    policy: AddressPolicy
    io: ThreadPoolExecutor

    async def fetch_one(self, imdb_id: int, url: str) -> tuple[dict[str, Any], dict | None]:
        """(report row, index row or None) for one catalog row, after up to `attempts` tries."""
        config, retry = self.config, self.config.retry_policy()
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(config.total_timeout_s):
                    data, status = await download(self.session, url, config, self.policy)
                poster = await asyncio.get_running_loop().run_in_executor(
                    self.io, accept, data, self.store, config.max_pixels)
            except StoreWriteError:
                raise  # the store, not the network: fatal for the run
            except Exception as exc:
                failure = classify(exc)
                if retry.retries(failure, attempt):
                    delay = retry.delay(attempt, failure.retry_after)
                    log.debug("retrying %s in %.2fs after %s", url, delay, failure)
                    await asyncio.sleep(delay)
                    continue
                row = report_row(imdb_id, url, failure.outcome, failure.status, attempt)
                row.update(elapsed=time.monotonic() - started, detail=failure.detail)
                return row, None
            row = report_row(imdb_id, url, "ok", status, attempt, poster["bytes"],
                             poster["sha256"])
            row["elapsed"] = time.monotonic() - started
            return row, {"imdb_id": imdb_id, "url": url, **poster,
                         "fetched_at": datetime.now(UTC)}


class Progress:
    """Calls on_progress(done, total) at most every PROGRESS_INTERVAL_S, and at the end."""

    def __init__(self, total: int, done: int, callback: Callable[[int, int], None] | None):
        self.total, self.done, self._callback, self._last = total, done, callback, 0.0
        self._report()

    def advance(self) -> None:
        """Count one finished row."""
        self.done += 1
        if self.done == self.total or time.monotonic() - self._last >= PROGRESS_INTERVAL_S:
            self._report()

    def _report(self) -> None:
        if self._callback is not None:
            self._last = time.monotonic()
            self._callback(self.done, self.total)


async def fetch_rows(
    rows: list[tuple[int, str]], store: PosterStore, config: FetchConfig, progress: Progress
) -> tuple[list[dict[str, Any]], StoreWriteError | None]:
    """Report rows for (imdb_id, url) pairs fetched by a bounded pool of workers.

    A StoreWriteError stops every worker; it is returned with the rows finished before it.
    """
    policy = AddressPolicy.from_allow_list(config.allow_hosts)
    connector = aiohttp.TCPConnector(
        limit=config.concurrency,
        limit_per_host=config.per_host,
        resolver=GuardedResolver(policy),
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout_s, sock_read=config.read_timeout_s
    )
    pending = iter(rows)
    report: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []

    async def worker(fetcher: Fetcher) -> None:
        for imdb_id, url in pending:
            row, indexed = await fetcher.fetch_one(imdb_id, url)
            report.append(row)
            if indexed is not None:
                index.append(indexed)
            if len(index) >= config.index_flush_rows:
                batch = index[:]
                index.clear()
                await asyncio.get_running_loop().run_in_executor(
                    fetcher.io, store_write, store.root, store.append_index, batch)
            progress.advance()

    headers = {"User-Agent": config.user_agent}
    stopped: StoreWriteError | None = None
    with ThreadPoolExecutor(IO_THREADS, thread_name_prefix="poster-io") as io:
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers, trust_env=False
        ) as session:
            fetcher = Fetcher(session, store, config, policy, io)
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(config.concurrency, len(rows))):
                        group.create_task(worker(fetcher))
            except* StoreWriteError as group_error:
                stopped = group_error.exceptions[0]  # type: ignore[assignment]
            finally:
                try:  # keep what was fetched, even when interrupted
                    store_write(store.root, store.append_index, index)
                except StoreWriteError as exc:
                    stopped = stopped or exc
    return report, stopped


def load_catalog_urls(catalog_dir: str, chunk: tuple[int, int] | None) -> pd.DataFrame:
    """(imdb_id, poster_url) rows of the catalog, restricted to one chunk if given."""
    rows = load_catalog(catalog_dir)[["imdb_id", "poster_url"]]
    if chunk is not None:
        index, count = chunk
        if not 0 <= index < count:
            raise ValueError(f"chunk must be (index, count) with 0 <= index < count, got {chunk}")
        rows = rows[rows["imdb_id"] % count == index]
    return rows.assign(poster_url=rows["poster_url"].fillna("").astype(str)).reset_index(drop=True)


def split_cached(rows: pd.DataFrame, store: PosterStore) -> tuple[list[dict], list[tuple]]:
    """(report rows of posters already stored for the same URL, (imdb_id, url) still to fetch).

    A stored object counts only at its indexed size: one cut short (or gone) is fetched again.
    """
    known = store.read_index()[["imdb_id", "url", "sha256", "bytes"]]
    joined = rows.merge(known, on="imdb_id", how="left")
    same_url = (joined["poster_url"] == joined["url"]).tolist()
    sizes = store.object_sizes(joined["sha256"][same_url].tolist())
    stored = iter(sizes)
    cached, todo = [], []
    for (imdb_id, url, _, sha256, nbytes), same in zip(
            joined.itertuples(index=False), same_url, strict=True):
        if same and next(stored) == nbytes:
            cached.append(report_row(int(imdb_id), url, "cached", None, 0, int(nbytes), sha256))
        else:
            todo.append((int(imdb_id), url))
    return cached, todo


def write_report(run_id: str, report: str, rows: list[dict[str, Any]],
                 summary: dict[str, Any]) -> FetchResult:
    """Write a run's report and summary (`storage.fetch_reports`); StoreWriteError if cannot."""
    summary_file = store_write(report, write_fetch_report, report, rows, summary)
    return FetchResult(run_id, report, summary_file, summary)


def summarize(report: pd.DataFrame, elapsed: float) -> dict[str, Any]:
    """Outcome counts (all OUTCOMES, adding up to the rows) and throughput."""
    counts = {o: int((report["outcome"] == o).sum()) for o in OUTCOMES}
    fetched = len(report) - counts["cached"]
    return {
        "rows": len(report),
        "outcomes": counts,
        "available": counts["ok"] + counts["cached"],
        "failed": len(report) - counts["ok"] - counts["cached"],
        "elapsed_s": round(elapsed, 3),
        "fetched_per_s": round(fetched / elapsed, 1) if elapsed > 0 else None,
    }


def fetch_posters(
    catalog_dir: str,
    store_root: str,
    config: FetchConfig | None = None,
    *,
    chunk: tuple[int, int] | None = None,
    lease: leases.Lease | None = None,
    run_id: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FetchResult:
    """Fetch a catalog's posters (or one `chunk` = (index, count) of them) into the store.

    Rows are split into chunks by `imdb_id % count`. Writes happen under the store's lease:
    `lease` (kept alive while this runs; concurrent chunks of one flow share it) or, when
    none is given, one taken for the call (waiting up to `config.lease_wait_s`; StoreBusy
    after that). A whole-catalog run first removes temp files of killed runs and compacts
    the index at the end; chunked runs leave both to the lease holder. StoreWriteError when
    the store cannot be written, after the report of the rows done. Runs its own event
    loop: call it from synchronous code.
    """
    config = config or FetchConfig()
    rows = load_catalog_urls(str(catalog_dir), chunk)
    if lease is not None:
        with leases.kept_alive(lease):
            return _fetch_under_lease(catalog_dir, store_root, rows, config, chunk, lease,
                                      run_id, on_progress)
    taken = store_write(store_root, functools.partial(
        leases.acquire, store_root, "fetch", wait_s=config.lease_wait_s))
    try:
        with leases.kept_alive(taken):
            return _fetch_under_lease(catalog_dir, store_root, rows, config, chunk, taken,
                                      run_id, on_progress)
    finally:
        leases.release(taken)


def _fetch_under_lease(
    catalog_dir: str, store_root: str, rows: pd.DataFrame, config: FetchConfig,
    chunk: tuple[int, int] | None, lease: leases.Lease, run_id: str | None,
    on_progress: Callable[[int, int], None] | None,
) -> FetchResult:
    """fetch_posters' work once the store's lease is held."""
    started = time.monotonic()
    store = PosterStore(store_root)
    if chunk is None:
        store_write(store_root, store.remove_stale_temps, lease)
    run_id = run_id or new_run_id(f"chunk{chunk[0]:03d}of{chunk[1]:03d}" if chunk else "")
    cached, todo = split_cached(rows, store)
    log.info("fetch %s: %d rows, %d cached, %d to fetch", run_id, len(rows), len(cached), len(todo))
    progress = Progress(len(rows), len(cached), on_progress)
    fetched, stopped = (asyncio.run(fetch_rows(todo, store, config, progress)) if todo
                        else ([], None))
    order = {key: i for i, key in reversed(list(enumerate(rows.itertuples(index=False))))}
    report_rows = sorted(cached + fetched, key=lambda r: order[(r["imdb_id"], r["url"])])
    report = report_path(store_root, run_id)
    summary = {
        "run_id": run_id,
        "catalog_dir": str(catalog_dir),
        "store_root": str(store_root),
        "chunk": list(chunk) if chunk else None,
        "report": report,
        **summarize(pd.DataFrame(report_rows, columns=["outcome"]),
                    time.monotonic() - started),
    }
    if stopped is not None:
        summary.update(stopped=str(stopped), rows_not_done=len(rows) - len(report_rows))
    try:
        result = write_report(run_id, report, report_rows, summary)
    except StoreWriteError as exc:
        # A full store has no room for the report either: keep it on this machine instead.
        fallback = fs.join(tempfile.gettempdir(), "posterflow-fetch-reports", f"{run_id}.parquet")
        summary.update(report=fallback, stopped=f"{stopped or exc}; the report is in {fallback}",
                       rows_not_done=len(rows) - len(report_rows))
        raise StoreWriteError(summary["stopped"],
                              write_report(run_id, fallback, report_rows, summary)) from exc
    if stopped is not None:
        raise StoreWriteError(str(stopped), result) from stopped
    if chunk is None:
        store_write(store_root, store.compact_index, lease)
    log.info("fetch %s done: %s", run_id, {k: n for k, n in summary["outcomes"].items() if n})
    return result
