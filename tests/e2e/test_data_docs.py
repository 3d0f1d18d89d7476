"""Data Docs open from disk in Chromium with the network cut, styled and interactive: every
script and stylesheet comes from the vendored copies beside the pages (`tasks.data_docs`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.catalog import CatalogConfig, validate_catalog
from tests.browser_helpers import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

POSTER = "https://example.com/p.jpg"


def test_every_data_docs_page_renders_offline(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    src = tmp_path / "MovieGenre.csv"
    rows = [f'{i},Drama|Comedy,"{POSTER}"' for i in range(1, 9)] + ['tt9,Drama,"x"', "10,,"]
    src.write_text("imdbId,Genre,Poster\n" + "\n".join(rows) + "\n")
    result = validate_catalog(src, tmp_path / "out", CatalogConfig(min_genre_count=1,
                                                                    reject_tolerance=1))
    pages = sorted(Path(result.data_docs_index).parent.rglob("*.html"))
    assert len(pages) == 3  # the index, the suite, the validation with its failures
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(offline=True)
        for path in pages:
            page = context.new_page()
            asked: list[str] = []
            failed: list[str] = []
            errors: list[str] = []
            page.on("request", lambda request, asked=asked: asked.append(request.url))
            page.on("requestfailed", lambda request, failed=failed: failed.append(request.url))
            page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            assert [url for url in asked if not url.startswith("file://")] == [], path
            assert failed == [] and errors == [], (path, failed, errors)
            state = page.evaluate("""() => ({
                scripts: typeof jQuery === 'function' && typeof jQuery.fn.bootstrapTable
                         === 'function' && typeof vegaEmbed === 'function',
                tables: document.querySelectorAll('.bootstrap-table').length,
                navbar: getComputedStyle(document.querySelector('nav')).display})""")
            # bootstrap's navbar is a flex box; bootstrap-table wrapped the page's tables
            assert state["scripts"] and state["navbar"] == "flex" and state["tables"] >= 1, (
                path, state)
            page.close()
        browser.close()
