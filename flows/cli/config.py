"""`posterflow config init [PATH]`: write a commented config file for `posterflow run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.output import console, fail

config_app = typer.Typer(help="Config files for `posterflow run --config`.",
                         no_args_is_help=True)


@config_app.command("init")
def config_init_command(
    path: Annotated[Path, typer.Argument(
        help="File to write; '-' prints it to stdout.")] = Path("posterflow.yaml"),
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite the file if it exists.")] = False,
) -> None:
    """Write a YAML config with every retrain setting, its help as a comment, its default.

    Exit 1 when PATH exists (unless --force) or cannot be written.
    """
    from flows.config import RetrainConfig
    from flows.config_file import config_template
    from storage.fs import atomic_write_text, create_exclusive

    text = config_template(RetrainConfig)
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
    console.print(f"wrote {path}: set catalog_csv, then posterflow run --config {path}",
                  highlight=False, soft_wrap=True)
