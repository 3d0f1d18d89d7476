"""The `posterflow` app: its commands, the root options and the entry point's logging.

Commands are registered here, so this file is the CLI's table of contents. Exit codes:
0 success, 1 the input was read but failed a check (or the store cannot be written),
2 unreadable input, 3 another run holds the store's lease.

Quiet by default, loud with `-v` (`quiet.py`): the root options set the log levels of
TensorFlow's C++ side and of absl before any command runs.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from flows.cli import pipeline, quiet, stages
from flows.cli.config import config_app
from flows.cli.registry import registry_app
from flows.cli.store import store_app

app = typer.Typer(
    name="posterflow",
    help="Learn a movie's genres from its poster: catalog -> fetch -> shards -> train -> register.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def configure_logging(verbose: bool) -> None:
    """Entry-point logging setup (never done at import time)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet.configure(verbose)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Debug logging, TensorFlow's native logs and absl warnings."
    )] = False,
) -> None:
    configure_logging(verbose)


app.command("validate")(stages.validate_command)
app.command("fetch")(stages.fetch_command)
app.command("mirror")(stages.mirror_command)
app.add_typer(store_app, name="store")
app.command("shards")(stages.shards_command)
app.command("train")(stages.train_command)
app.command("predict")(stages.predict_command)
app.add_typer(registry_app, name="registry")
app.command("run")(pipeline.run_command)
app.command("score")(pipeline.score_command)
app.add_typer(config_app, name="config")
app.command("demo")(pipeline.demo_command)


def main() -> None:
    """Console-script entry point."""
    app()
