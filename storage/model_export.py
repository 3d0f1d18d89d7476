"""The exported model folder: what makes one complete, shared by the exporter and the registry.

```
<model>/saved_model.pb             written last by `tasks.export` (a folder without it is no model)
<model>/variables/variables.index
<model>/assets/<name>.json         labels, thresholds, metrics, lineage
```
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from storage.fs import join, list_files, read_json, sha256_file, url_to_fs

SAVED_MODEL = "saved_model.pb"
ASSETS = ("labels", "thresholds", "metrics", "lineage")
REQUIRED_FILES = (SAVED_MODEL, "variables/variables.index",
                  *(f"assets/{name}.json" for name in ASSETS))


class InvalidModelError(ValueError):
    """The folder is not a complete exported model (a file missing, an asset malformed)."""


def asset_path(model_dir: str | os.PathLike[str], name: str) -> str:
    """Where an asset (`ASSETS`) of an exported model lives."""
    return join(str(model_dir), "assets", f"{name}.json")


@dataclass(frozen=True)
class ExportedModel:
    """A complete exported model folder and its assets."""

    source: str  # the folder as given: a local path or fsspec URL
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    files: dict[str, dict[str, Any]]  # {relative path: {"bytes", "sha256"}}: its content


def read_export(model_dir: str | os.PathLike[str]) -> ExportedModel:
    """Check an exported model folder; InvalidModelError naming what is missing or malformed."""
    fs, src = url_to_fs(model_dir)
    src = src.rstrip("/")
    missing = [rel for rel in REQUIRED_FILES if not fs.isfile(f"{src}/{rel}")]
    if missing:
        raise InvalidModelError(f"{src} is not an exported model: missing {', '.join(missing)}")
    try:
        metrics = read_json(fs.unstrip_protocol(f"{src}/assets/metrics.json"))
        lineage = read_json(fs.unstrip_protocol(f"{src}/assets/lineage.json"))
        f1 = float(metrics["test"]["macro_f1"])
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidModelError(
            f"{src}/assets: expected metrics.json with test.macro_f1 and a JSON lineage.json "
            f"({type(e).__name__}: {e})"
        ) from e
    if not (math.isfinite(f1) and 0.0 <= f1 <= 1.0) or not isinstance(lineage, dict):
        raise InvalidModelError(f"{src}/assets: expected test macro_f1 in [0, 1], got {f1}")
    files = {rel: {"bytes": size, "sha256": sha256_file(fs.unstrip_protocol(f"{src}/{rel}"))}
             for rel, size in list_files(model_dir).items()}
    return ExportedModel(str(model_dir), metrics, lineage, files)
