"""Debian's Chromium as the e2e tests drive it (playwright's own browser download is not
reachable offline): headless, and making no requests of its own."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
