"""The `posterflow` command line: parse arguments, build a config, call stage functions.

Heavy libraries (TensorFlow, Great Expectations, Prefect) are imported inside the
commands that need them, so `posterflow --help`, `fetch` and `mirror` start fast.
Exit codes: 0 success, 1 the input was read but failed a check, 2 unreadable input.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="posterflow",
    help="Learn a movie's genres from its poster: catalog -> fetch -> shards -> train -> register.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _configure_logging(verbose: bool) -> None:
    """Entry-point logging setup (never done at import time)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _configure_logging(verbose)


# --- catalog (issue 2) -------------------------------------------------------------------


# --- fetch, mirror (issue 3) -------------------------------------------------------------


# --- shards (issue 4) --------------------------------------------------------------------


# --- train, predict (issue 5) ------------------------------------------------------------


# --- registry (issue 6) ------------------------------------------------------------------


# --- run, demo (issue 7) -----------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
