"""A real loopback aiohttp server whose handlers misbehave on purpose, and poster fixtures.

The server runs its own event loop in a background thread, so code under test (which runs
`asyncio.run` itself) and subprocesses both reach it over real TCP.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from aiohttp import web
from PIL import Image

from storage import fs


def poster_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (18, 27)) -> bytes:
    """A small, distinct, valid poster image (its colour depends on seed)."""
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def write_catalog(catalog_dir: Path, rows: list[tuple[int, str]]) -> Path:
    """A minimal catalog.parquet (imdb_id, poster_url + the contract's other columns)."""
    df = pd.DataFrame(
        {
            "row_number": range(1, len(rows) + 1),
            "imdb_id": [r[0] for r in rows],
            "genres": [["Drama"] for _ in rows],
            "poster_url": [r[1] for r in rows],
            "split": ["train" for _ in rows],
        }
    )
    fs.atomic_write_parquet(catalog_dir / "catalog.parquet", df)
    return catalog_dir


class Misbehaving:
    """Handlers, one per failure mode; `hits` counts requests per path, `sent` body bytes."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.jpeg = poster_bytes(1)

    def app(self) -> web.Application:
        """The aiohttp application with every misbehaving route."""
        app = web.Application()
        r = app.router
        r.add_get("/ok/{seed}.jpg", self.ok)
        r.add_get("/png/{seed}.png", self.png)
        r.add_get("/webp/{seed}.webp", self.webp)
        r.add_get("/status/{code}", self.status)
        r.add_get("/flaky/{key}", self.flaky)
        r.add_get("/retry-after/{key}", self.retry_after)
        r.add_get("/throttled/{key}", self.throttled)
        r.add_get("/hang", self.hang)
        r.add_get("/drip", self.drip)
        r.add_get("/huge", self.huge)
        r.add_get("/huge-declared", self.huge_declared)
        r.add_get("/html-as-jpeg", self.html_as_jpeg)
        r.add_get("/empty", self.empty)
        r.add_get("/truncated.jpg", self.truncated)
        r.add_get("/short-body", self.short_body)
        r.add_get("/bomb.png", self.bomb)
        r.add_get("/loop/{n}", self.loop)
        r.add_get("/hops/{n}", self.hops)
        r.add_get("/to-metadata", self.to_metadata)
        r.add_get("/to-file", self.to_file)
        r.add_get("/to-garbage", self.to_garbage)
        r.add_get("/to-obfuscated/{host}", self.to_obfuscated)
        return app

    def _count(self, request: web.Request) -> int:
        self.hits[request.path] += 1
        return self.hits[request.path]

    async def ok(self, request: web.Request) -> web.Response:
        self._count(request)
        data = poster_bytes(int(request.match_info["seed"]))
        return web.Response(body=data, content_type="image/jpeg")

    async def png(self, request: web.Request) -> web.Response:
        data = poster_bytes(int(request.match_info["seed"]), "PNG")
        return web.Response(body=data, content_type="image/png")

    async def webp(self, request: web.Request) -> web.Response:
        data = poster_bytes(int(request.match_info["seed"]), "WEBP")
        return web.Response(body=data, content_type="image/webp")

    async def status(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def flaky(self, request: web.Request) -> web.Response:
        """500 twice, then the poster."""
        if self._count(request) <= 2:
            return web.Response(status=500, text="oops")
        return web.Response(body=self.jpeg, content_type="image/jpeg")

    async def retry_after(self, request: web.Request) -> web.Response:
        """503 with Retry-After: 1, then the poster."""
        if self._count(request) == 1:
            return web.Response(status=503, headers={"Retry-After": "1"})
        return web.Response(body=self.jpeg, content_type="image/jpeg")

    async def throttled(self, request: web.Request) -> web.Response:
        """429 once, then the poster."""
        if self._count(request) == 1:
            return web.Response(status=429)
        return web.Response(body=self.jpeg, content_type="image/jpeg")

    async def hang(self, request: web.Request) -> web.Response:
        """Never answers."""
        self._count(request)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def drip(self, request: web.Request) -> web.StreamResponse:
        """A valid poster, one byte per second."""
        self._count(request)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(self.jpeg)
        await resp.prepare(request)
        for i in range(len(self.jpeg)):
            await resp.write(self.jpeg[i : i + 1])
            await asyncio.sleep(1)
        return resp

    async def huge(self, request: web.Request) -> web.StreamResponse:
        """200 MB of JPEG-looking bytes, streamed chunk by chunk with no Content-Length."""
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = b"\xff\xd8\xff" + bytes(65533)
        for _ in range(200 * 2**20 // len(block)):
            await resp.write(block)
            self.sent[request.path] += len(block)
        return resp

    async def huge_declared(self, request: web.Request) -> web.StreamResponse:
        """Declares 200 MB up front (the client should not read it)."""
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = 200 * 2**20
        await resp.prepare(request)
        await resp.write(b"\xff\xd8\xff" + bytes(65533))
        self.sent[request.path] += 65536
        await asyncio.sleep(3600)
        return resp

    async def html_as_jpeg(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<html><body>Not found</body></html>",
                            content_type="image/jpeg")

    async def empty(self, request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="image/jpeg")

    async def truncated(self, request: web.Request) -> web.Response:
        """The first half of a real JPEG, with a matching Content-Length."""
        data = poster_bytes(7, size=(180, 270))
        return web.Response(body=data[: len(data) // 2], content_type="image/jpeg")

    async def short_body(self, request: web.Request) -> web.StreamResponse:
        """Declares the whole poster, sends half, then drops the connection."""
        self._count(request)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(self.jpeg)
        await resp.prepare(request)
        await resp.write(self.jpeg[: len(self.jpeg) // 2])
        assert request.transport is not None
        request.transport.close()
        return resp

    async def bomb(self, request: web.Request) -> web.Response:
        return web.Response(body=png_bomb(), content_type="image/png")

    async def loop(self, request: web.Request) -> web.Response:
        """/loop/0 -> /loop/1 -> /loop/0 -> ... forever."""
        self._count(request)
        nxt = 1 - int(request.match_info["n"])
        raise web.HTTPFound(f"/loop/{nxt}")

    async def hops(self, request: web.Request) -> web.Response:
        """n redirects (absolute and relative), then the poster."""
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=self.jpeg, content_type="image/jpeg")
        raise web.HTTPMovedPermanently(f"{n - 1}" if n % 2 else f"/hops/{n - 1}")

    async def to_metadata(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def to_file(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("file:///etc/passwd")

    async def to_obfuscated(self, request: web.Request) -> web.Response:
        """A redirect to an IPv4 address in a legacy form (2130706433, 127.1, 0x7f.1)."""
        raise web.HTTPFound(f"http://{request.match_info['host']}/latest/meta-data/")

    async def to_garbage(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://[::1/x"})


@contextmanager
def serve(app: web.Application, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` on a free loopback port in a background thread; yield its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
    started = threading.Event()
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"http://{host}:{port[0]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
