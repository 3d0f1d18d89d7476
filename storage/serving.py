"""TF Serving's `models.config` for a registry model: serve the aliased versions, by label.

Without it TF Serving serves the highest version it finds, challengers included. With
`--model_config_file=<root>/<model>/models.config --model_config_file_poll_wait_seconds=N`
it serves `/versions/<champion>` and `/labels/champion` and follows promotions (add
`--allow_version_labels_for_unavailable_models` so a label may name a version that is
still loading). The registry rewrites the file after every alias change.
"""

from __future__ import annotations

import json
import os

from storage.fs import atomic_write_text, is_local, join

SERVING_CONFIG = "models.config"


def serving_config(model: str, base_path: str, aliases: dict[str, int]) -> str:
    """The config text: the aliased versions only, each alias a version label."""
    versions = "".join(f"        versions: {v}\n" for v in sorted(set(aliases.values())))
    labels = "".join(
        f'    version_labels {{ key: "{a}" value: {v} }}\n' for a, v in sorted(aliases.items())
    )
    return (
        "model_config_list {\n  config {\n"
        f"    name: {json.dumps(model)}\n    base_path: {json.dumps(base_path)}\n"
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{\n      specific {{\n{versions}      }}\n    }}\n"
        f"{labels}  }}\n}}\n"
    )


def write_serving_config(model_dir: str, model: str, aliases: dict[str, int]) -> str:
    """Write `<model_dir>/models.config` atomically; TF Serving needs an absolute base path."""
    base = os.path.abspath(model_dir) if is_local(model_dir) else model_dir
    path = join(model_dir, SERVING_CONFIG)
    atomic_write_text(path, serving_config(model, base, aliases))
    return path
