"""The whole-pipeline commands: `run` (the retrain flow from a config) and `demo`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from flows.cli import quiet
from flows.cli.output import console, fail, print_run
from storage.layout import DEFAULT_DATA_ROOT


def _prefect_entrypoint_env() -> None:
    """Entry-point settings for in-process flow runs: stage loggers go to Prefect's logs."""
    for noisy in ("httpx", "great_expectations"):  # a line per API call / per GX internal
        logging.getLogger(noisy).setLevel(logging.WARNING)

    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,storage")
    # The ephemeral API server starts in a subprocess; 20 s is too short on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def run_command(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML or JSON file with the retrain settings (flows/config.py: "
        "RetrainConfig).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Override one setting, KEY=VALUE with a dotted key, e.g. "
        "train.head.epochs=10; repeatable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the whole retrain flow in-process (Prefect's ephemeral server, or PREFECT_API_URL)."""
    import yaml
    from pydantic import ValidationError

    from flows.config import RetrainConfig, load_config_data

    try:
        data = load_config_data(config, param or [])
    except (OSError, ValueError, yaml.YAMLError) as exc:
        fail("cannot read the config:", exc, code=2)
    try:
        settings = RetrainConfig.model_validate(data)
    except ValidationError as exc:
        fail("invalid config:", exc, code=1)
    _prefect_entrypoint_env()
    quiet.start_tensorflow()
    from flows.runs import run_retrain

    summary = run_retrain(settings)
    print_run(summary.as_dict(), as_json)
    if summary.error is not None:
        fail(f"retrain {summary.state}:", summary.error, code=1)


def demo_command(
    data_root: Annotated[Path, typer.Option(help="Where demo data and every output go.")] = Path(
        DEFAULT_DATA_ROOT),
    movies: Annotated[int, typer.Option(help="Movies in the generated catalog.", min=50)] = 400,
    backbone: Annotated[str | None, typer.Option(
        help="TF Hub handle or local SavedModel folder (default: TF Hub MobileNetV2, or a "
        "local stand-in when it cannot be downloaded).")] = None,
    offline: Annotated[bool, typer.Option(
        help="Do not try to download the backbone: use the local stand-in.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """The main job: generate demo posters, serve them, run retrain, register a model."""
    _prefect_entrypoint_env()
    quiet.start_tensorflow()
    from flows.demo import run_demo
    from tasks.backbone import BackboneUnavailableError

    try:
        outcome = run_demo(str(data_root), movies, backbone, offline)
    except BackboneUnavailableError as exc:
        fail("backbone:", exc, code=2)
    for note in outcome.notes:
        console.print(f"[yellow]{note}[/yellow]", highlight=False)  # wrapped: a long note
    print_run(outcome.summary.as_dict(), as_json)
    if outcome.summary.error is not None:
        fail(f"demo {outcome.summary.state}:", outcome.summary.error, code=1)
