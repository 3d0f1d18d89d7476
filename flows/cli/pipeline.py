"""The whole-pipeline commands: `run` (the retrain flow from a config) and `demo`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel

from flows.cli import quiet
from flows.cli.output import console, echo_json, fail, print_run
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


CONFIG_HELP = ("YAML or JSON file with the {what} settings (flows/config.py: {model}); write a "
               "commented one with `posterflow config init{flag}`.")
PARAM_HELP = ("Override one setting, KEY=VALUE with a dotted key, e.g. {example}; "
              "repeatable.")


def _settings(model: type[BaseModel], config: Path | None, params: list[str]) -> BaseModel:
    """A flow's config model from a file plus overrides; exit 2 unreadable, 1 invalid."""
    import yaml
    from pydantic import ValidationError

    from flows.config import load_config_data
    from flows.config_errors import config_errors

    try:
        data = load_config_data(config, params)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        fail("cannot read the config:", exc, code=2)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fail("invalid config:", *config_errors(exc, model), code=1)


def run_command(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help=CONFIG_HELP.format(what="retrain", model="RetrainConfig",
                                                  flag=""))] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help=PARAM_HELP.format(
        example="train.head.epochs=10"))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the whole retrain flow in-process (Prefect's ephemeral server, or PREFECT_API_URL)."""
    from flows.config import RetrainConfig

    settings = _settings(RetrainConfig, config, param or [])
    _prefect_entrypoint_env()
    quiet.start_tensorflow()
    from flows.runs import run_retrain

    summary = run_retrain(settings)
    print_run(summary.as_dict(), as_json)
    if summary.error is not None:
        fail(f"retrain {summary.state}:", summary.error, code=1)


def score_command(
    dataset: Annotated[str | None, typer.Option(
        help="Dataset version folder to score (sets dataset_dir).")] = None,
    alias: Annotated[str | None, typer.Option(
        help="Registry alias or version number to score with (default champion).")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help=CONFIG_HELP.format(what="scoring", model="ScoreConfig",
                                               flag=" --flow score"))] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help=PARAM_HELP.format(
        example="storage.data_root=s3://bucket/data"))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Score a dataset version (or a catalog: `-p catalog_csv=...`, ingested first) with a
    registered model: versioned Parquet predictions under DATA_ROOT/scores/."""
    from dataclasses import asdict

    from flows.config import ScoreConfig

    shortcuts = [f"dataset_dir={dataset}"] * bool(dataset) + [f"model.alias={alias}"] * bool(alias)
    settings = _settings(ScoreConfig, config, [*shortcuts, *(param or [])])
    _prefect_entrypoint_env()
    quiet.start_tensorflow()
    from flows.runs import tracebacks_for_unexpected_errors_only
    from flows.score import score_flow

    with tracebacks_for_unexpected_errors_only():
        state = score_flow(settings, return_state=True)
    if not state.is_completed():
        fail(f"score {state.name}:", state.message, code=1)
    result = state.result()
    if as_json:
        echo_json(asdict(result), sort_keys=False)
        return
    console.print(f"{'kept earlier' if result.reused else 'scored'} {result.rows} posters with "
                  f"{result.model} v{result.version}: {result.from_features} from cached "
                  f"features, {result.from_images} from images\nscores: {result.scores_dir}",
                  highlight=False, soft_wrap=True)


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
