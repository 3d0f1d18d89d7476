"""Flow test helpers: a tiny retrain config, task-run states (the fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def tiny_config_data(csv_path: str, data_root: Path, backbone: str) -> dict[str, Any]:
    """Retrain settings for a 60-movie catalog: low genre cut, two fetch chunks, a short fit."""
    return {
        "catalog_csv": csv_path,
        "storage": {"data_root": str(data_root)},
        "catalog": {"min_genre_count": 3, "reject_tolerance": 0.1},  # 4 defects in 66 rows
        "fetch": {"allow_hosts": ["127.0.0.1"], "concurrency": 8},
        "scale": {"fetch_chunks": 2, "max_workers": 2},
        # Three of the default's seven views (one corner): the flows need several, not all,
        # and each costs an embedding pass per retrain.
        "train": {"backbone": backbone, "batch_size": 32, "patience": 3, "embed_batch_size": 32,
                  "views": ["full", "top", "bottom_right"],
                  "head": {"learning_rate": 1e-3, "epochs": 5, "hidden": 32}},
        # Nine test posters: too few for any guardrail to mean something (tests/unit checks them).
        "registry": {"guardrails": {"min_macro_f1": 0.0, "max_always_predicted": 1.0,
                                    "min_test_support": 0}},
        "notes": ["integration test run"],
    }


def stage_state(stages: list[tuple[str, str]] | list[list[str]], prefix: str) -> set[str]:
    """The states of every task run whose name starts with `prefix`."""
    states = {state for name, state in stages if name.startswith(prefix)}
    assert states, f"no task run named {prefix}* in {stages}"
    return states


def run_env(tmp_path: Path) -> dict[str, str]:
    """A `posterflow run` environment with its own Prefect home (ephemeral server, caches).

    TF_CPP_MIN_LOG_LEVEL is left for the CLI to set, as for a user.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    return env


def start_posterflow_run(config: Path, env: dict[str, str], log: Path,
                         stdout: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """Start `posterflow run --json` in its own process group (the flow + its API server)."""
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "--config", str(config), "--json"],
            env=env, stdout=stdout, stderr=err, start_new_session=True)
