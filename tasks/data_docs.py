"""Data Docs that render offline: GX's pages pointed at vendored copies of their CDN assets.

GX's HTML loads bootstrap, jQuery, bootstrap-table, Font Awesome and vega from CDNs and
its logo from S3; without the internet (an air-gapped cluster, a laptop on a train) the
pages render as unstyled text with empty tables. The installed GX package ships none of
them, so `tasks/data_docs_assets/` holds copies from npm (`refresh.sh` re-vendors them),
and `localize` copies them beside the pages and rewrites each page's links to them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

ASSETS = Path(__file__).with_name("data_docs_assets")
VENDOR = "static/vendor"  # inside the Data Docs folder

# CDN URL (prefix; the logo carries a cache-busting query) -> file under `VENDOR`, or under
# the Data Docs folder itself for GX's own images.
LOCAL = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css":
        f"{VENDOR}/bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js":
        f"{VENDOR}/bootstrap/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": f"{VENDOR}/jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js":
        f"{VENDOR}/popper/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        f"{VENDOR}/bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        f"{VENDOR}/bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css":
        f"{VENDOR}/bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css":
        f"{VENDOR}/bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js":
        f"{VENDOR}/bootstrap-table/bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": f"{VENDOR}/bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": f"{VENDOR}/bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        f"{VENDOR}/fontawesome/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css": f"{VENDOR}/bootstrap-dark/bootstrap-prefers-dark.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": f"{VENDOR}/vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": f"{VENDOR}/vega/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": f"{VENDOR}/vega/vega-embed.min.js",
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png":
        "static/images/logo-long.png",
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png":
        "static/images/logo-long.png",
}
# A src/href attribute holding a remote URL: what a page loads (links to docs are <a>s and
# stay as they are: following one needs the internet, rendering does not).
LOADED = re.compile(r'<(?:script|link|img)\b[^>]*?\b(?:src|href)="(https?://[^"]*)"[^>]*>')
CSS_URL = re.compile(r"""url\(['"]?(https?://[^'")]*)['"]?\)""")  # inline styles' images
# Subresource-integrity and CORS attributes: meaningless for a local file, and Chromium
# refuses a crossorigin script from a file:// page.
SRI = re.compile(r'\s+(?:integrity="[^"]*"|crossorigin="[^"]*")')


def localize(docs_dir: str | os.PathLike[str]) -> list[str]:
    """Copy the vendored assets into `docs_dir` and point its pages at them; returns the
    remote URLs some page still loads (an asset a newer GX added), each logged once."""
    root = Path(docs_dir)
    shutil.copytree(ASSETS, root / VENDOR, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("refresh.sh"))
    remaining: set[str] = set()
    for page in root.rglob("*.html"):
        html = localize_page(page.read_text(encoding="utf-8"),
                             os.path.relpath(root, page.parent))
        remaining.update(loaded_urls(html))
        page.write_text(html, encoding="utf-8")
    for url in sorted(remaining):
        log.warning("Data Docs still load %s: it needs the internet to render", url)
    return sorted(remaining)


def localize_page(html: str, to_root: str) -> str:
    """One page with its CDN links replaced by paths relative to its folder (`to_root` is
    the Data Docs root relative to it)."""
    def local(match: re.Match[str]) -> str:
        tag, url = match.group(0), match.group(1)
        target = next((path for prefix, path in LOCAL.items()
                       if url == prefix or url.startswith(prefix + "?")), None)
        if target is None:
            return tag
        return SRI.sub("", tag.replace(url, f"{to_root}/{target}".removeprefix("./")))

    return CSS_URL.sub(local, LOADED.sub(local, html))


def loaded_urls(html: str) -> list[str]:
    """The remote URLs a page loads."""
    return LOADED.findall(html) + CSS_URL.findall(html)
