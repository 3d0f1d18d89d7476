"""`posterflow config init [PATH] [--flow retrain|score]`: write a commented config file for
`posterflow run` or `posterflow score`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from flows.cli.output import console, fail

FlowName = Literal["retrain", "score"]

config_app = typer.Typer(help="Config files for `posterflow run --config` and `posterflow score "
                         "--config`.",
                         no_args_is_help=True)


@config_app.command("init")
def config_init_command(
    path: Annotated[Path, typer.Argument(
        help="File to write; '-' prints it to stdout.")] = Path("posterflow.yaml"),
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite the file if it exists.")] = False,
    flow: Annotated[FlowName, typer.Option(
        help="Whose settings: the retrain flow's (`run`) or the score flow's (`score`).")
    ] = "retrain",
) -> None:
    """Write a YAML config with every setting of a flow, its help as a comment, its default.

    Exit 1 when PATH exists (unless --force) or cannot be written.
    """
    from flows.config import RetrainConfig, ScoreConfig
    from flows.config_file import config_template
    from storage.fs import atomic_write_text, create_exclusive

    text = config_template(RetrainConfig if flow == "retrain" else ScoreConfig)
    if str(path) == "-":
        typer.echo(text, nl=False)
        return
    try:
        if force:
            atomic_write_text(path, text)
        elif not create_exclusive(path, text.encode("utf-8")):  # never replaces a file
            fail("not overwritten:", f"{path} exists (pass --force to replace it)", code=1)
    except OSError as exc:
        fail("cannot write the config:", exc, code=1)
    command = "run" if flow == "retrain" else "score"
    console.print(f"wrote {path}: set catalog_csv, then posterflow {command} --config {path}",
                  highlight=False, soft_wrap=True)
