"""Model cards beside the registry's versions: `<root>/<model>/cards/<N>.html` (+ `<N>.json`).

The card lives outside the numbered version folder, so TF Serving's layout and the checksums
recorded in the version's `registry.json` are untouched; `cards/` is not a number, so neither
TF Serving nor the registry takes it for a version. `<N>.json` keeps the card's lineage facts
(dataset version, catalog hash, fetch reports, ...) for `posterflow registry show`. Both are
rewritten when the version's decision changes (e.g. after a reviewer's approval); each write
is atomic, on local roots and object stores alike (`storage.fs`).
"""

from __future__ import annotations

import os
from typing import Any

from storage.fs import atomic_write_json, atomic_write_text, exists, join, read_json

CARDS = "cards"


def card_path(root: str | os.PathLike[str], model: str, version: int) -> str:
    """Where version N's card is (a local path or URL, like the root)."""
    return join(root, model, CARDS, f"{int(version)}.html")


def facts_path(root: str | os.PathLike[str], model: str, version: int) -> str:
    """Where version N's card facts (lineage as JSON) are."""
    return join(root, model, CARDS, f"{int(version)}.json")


def write_card(root: str | os.PathLike[str], model: str, version: int, html: str,
               facts: dict[str, Any]) -> str:
    """Write the card's facts, then its HTML (each atomically); return the HTML's path."""
    atomic_write_json(facts_path(root, model, version), facts)
    path = card_path(root, model, version)
    atomic_write_text(path, html)
    return path


def read_card_facts(root: str | os.PathLike[str], model: str, version: int) -> dict[str, Any]:
    """Version N's card facts, or {} when it has no card (registered before cards existed)."""
    path = facts_path(root, model, version)
    return dict(read_json(path)) if exists(path) else {}
