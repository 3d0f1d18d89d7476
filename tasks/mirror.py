"""A local poster mirror: an aiohttp server of a folder, with optional injected latency.

For development, demos, tests and benchmarks: `posterflow mirror DIR --port P` serves each
file `DIR/<name>` at `http://HOST:P/<name>`, waiting `latency_ms` before each answer to
mimic a remote CDN. Only plain file names directly inside DIR are served (no sub-folders,
no hidden files, no symlinks). Posters are tens of KB read from the page cache, so the
handler reads them inline: about 3x less server CPU per request than aiohttp's static
file handler (measured), which keeps the mirror from being the bottleneck in benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

NAME = r"{name:[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}}"  # a longer name is no file: 404


def make_mirror_app(folder: str | Path, latency_ms: float = 0.0) -> web.Application:
    """An aiohttp app serving the files of `folder` at the root path."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"mirror folder {root} does not exist or is not a folder")
    delay = latency_ms / 1000

    async def poster(request: web.Request) -> web.Response:
        if delay > 0:
            await asyncio.sleep(delay)
        path = root / request.match_info["name"]
        if path.is_symlink() or not path.is_file():
            raise web.HTTPNotFound(text=f"no file {path.name} in the mirror")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.Response(body=path.read_bytes(), content_type=content_type)

    app = web.Application()
    app.router.add_get(f"/{NAME}", poster)
    return app


def run_mirror(folder: str | Path, host: str = "127.0.0.1", port: int = 8799,
               latency_ms: float = 0.0) -> None:
    """Serve `folder` until interrupted (blocking)."""
    app = make_mirror_app(folder, latency_ms)
    log.info("mirror of %s on http://%s:%d/ (latency %g ms)", folder, host, port, latency_ms)
    web.run_app(app, host=host, port=port, print=None, access_log=None, backlog=1024)
