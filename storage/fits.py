"""The fit folder: a finished `fit_model`'s trained weights and `fit.json`, on any root.

```
<run>/fit/<name>.npz   each trained model's weights (np.savez of get_weights(): exact values)
<run>/fit/fit.json     architectures, histories, sweep rows, params (written last)
```

A folder without `fit.json` holds no complete fit. `evaluate_fit` and `export_fit` rebuild
the models from it, so either can run in another process or on another machine.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from storage.fs import atomic_write_bytes, atomic_write_json, exists, join, read_bytes, read_json

if TYPE_CHECKING:
    import tf_keras

FIT_JSON = "fit.json"  # written last: a fit folder without it holds no complete fit


@dataclass(frozen=True)
class SavedFit:
    """A finished `fit_model`: its folder on the storage root and what the lineage records."""

    fit_dir: str
    dataset_version: str
    backbone_id: str
    params: dict[str, Any]  # the recipe, with the chosen head and its best epoch
    val_macro_f1: float
    sweep: list[dict[str, Any]] = field(default_factory=list)


def has_fit(fit_dir: str) -> bool:
    """True when the folder holds a complete fit (its `fit.json`)."""
    return exists(join(fit_dir, FIT_JSON))


def save_weights(fit_dir: str, name: str, model: tf_keras.Model) -> dict[str, str]:
    """Store a model's weights as `<fit_dir>/<name>.npz`; the entry `fit.json` keeps for them."""
    buffer = io.BytesIO()
    np.savez(buffer, *model.get_weights())
    atomic_write_bytes(join(fit_dir, f"{name}.npz"), buffer.getvalue())
    return {"weights": f"{name}.npz"}


def save_head(fit_dir: str, name: str, head: tf_keras.Model) -> dict[str, str]:
    """A head's (or ensemble's) weights and Keras architecture, for `load_head`."""
    return {**save_weights(fit_dir, name, head), "architecture": head.to_json()}


def load_weights(fit_dir: str, saved: dict[str, str], model: tf_keras.Model) -> tf_keras.Model:
    """`model` with the weights `save_weights` stored."""
    with np.load(io.BytesIO(read_bytes(join(fit_dir, saved["weights"])))) as weights:
        model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
    return model


def load_head(fit_dir: str, saved: dict[str, str]) -> tf_keras.Model:
    """A head (or ensemble of heads) saved by `save_head`, rebuilt from its architecture."""
    import tf_keras

    return load_weights(fit_dir, saved, tf_keras.models.model_from_json(saved["architecture"]))


def write_fit_spec(fit_dir: str, spec: dict[str, Any]) -> None:
    """`fit.json`, last: it makes the folder a complete fit."""
    atomic_write_json(join(fit_dir, FIT_JSON), spec)


def read_fit_spec(fit_dir: str) -> dict[str, Any]:
    """The `fit.json` of a complete fit."""
    return read_json(join(fit_dir, FIT_JSON))
