"""Where things live under a data root, and the defaults every entry point shares.

```
<data root>/catalogs/  posters/  datasets/<version>/  embeddings/  runs/<run>/  registry/
            scores/<dataset version>/<model>-v<N>/
<run>/fit/  report/  model/
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# storage.fs (fsspec) is imported where used: the CLI reads these defaults at start-up.

DEFAULT_DATA_ROOT = "posterflow-data"
DEFAULT_MODEL_NAME = "posterflow"  # the registry's model name when none is given
CATALOGS, POSTERS, DATASETS = "catalogs", "posters", "datasets"
EMBEDDINGS, RUNS, REGISTRY, SCORES = "embeddings", "runs", "registry", "scores"


def root_under(data_root: str, folder: str, configured: str | None = None) -> str:
    """A root's place: `configured` when set, else `<data root>/<folder>` (the one rule for the
    registry's and the embedding cache's default roots)."""
    from storage.fs import join

    return configured or join(data_root, folder)


def data_root_of(dataset_dir: str) -> str:
    """The data root holding `<root>/datasets/<version>` (two levels above the version)."""
    from storage.fs import is_local

    if is_local(dataset_dir) and "://" not in str(dataset_dir):
        return str(Path(dataset_dir).resolve().parents[1])
    return str(dataset_dir).rstrip("/").rsplit("/", 2)[0]


@dataclass(frozen=True)
class RunFolder:
    """One training run's folder: the fit's weights, the report and the exported model."""

    path: str

    def _under(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    @property
    def fit_dir(self) -> str:
        return self._under("fit")

    @property
    def report_dir(self) -> str:
        return self._under("report")

    @property
    def model_dir(self) -> str:
        return self._under("model")
