"""What the commands print: red error lines with an exit code, JSON, progress bars, reports.

Errors, progress and human summaries go to stderr (`console`); results meant for scripts
(JSON, paths) go to stdout through `typer.echo`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from rich.progress import Progress

console = Console(stderr=True)


def fail(label: str, *details: object, code: int) -> NoReturn:
    """Print `label detail` in red on stderr (a line per detail), then exit with `code`.

    Exit codes: 1 the input was read but failed a check (or the store cannot be written),
    2 unreadable or invalid input, 3 another run holds the store's lease.
    The text is escaped, so brackets in an error message are printed, not read as markup.
    """
    red = f"[red]{escape(label)}[/red]"
    for line in [f"{red} {escape(str(d))}" for d in details] or [red]:
        console.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def echo_json(obj: object, *, sort_keys: bool = True) -> None:
    """Print indented JSON to stdout (for scripts); values JSON does not know as strings."""
    typer.echo(json.dumps(obj, indent=2, sort_keys=sort_keys, default=str))


def progress_bar(clock: Literal["remaining", "elapsed"]) -> Progress:
    """A progress bar on stderr: description, bar, done/total, then time remaining or elapsed."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    time_column = TimeRemainingColumn() if clock == "remaining" else TimeElapsedColumn()
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
               time_column)
    return Progress(*columns, console=console)


def catalog_report(out_dir: str, s: dict, docs: str) -> str:
    """The short human summary of a catalog validation."""
    reasons = ", ".join(f"{k} {v}" for k, v in s["by_reason"].items()) or "none"
    splits = ", ".join(f"{k} {v}" for k, v in s["split_sizes"].items())
    return "\n".join([
        f"catalog: {out_dir} ({'passed' if s['passed'] else 'FAILED'})",
        f"rows read {s['rows_read']}: accepted {s['accepted']}, rejected {s['rejected']} "
        f"(invalid {s['rejected_invalid']}, by label policy {s['rejected_by_policy']}); "
        f"invalid rate {s['reject_rate']:.1%}, tolerance {s['reject_tolerance']:.1%}",
        f"reject reasons: {reasons}",
        f"labels ({len(s['labels'])}, >= {s['min_genre_count']} movies each): "
        f"{', '.join(s['labels']) or 'none'}",
        f"splits: {splits}",
        f"data docs: {docs}",
    ])


def registered_line(summary: dict) -> str:
    """Which version the run registered, or that it registered nothing new (all cached)."""
    where = f"{summary['registry_path']} (v{summary['version']}, {summary['alias'] or 'no alias'})"
    if summary.get("new_version", True):
        return f"registered:  {where}"
    return f"nothing new registered: {where} already holds this model"


def print_run(summary: dict, as_json: bool) -> None:
    """Print a run summary: JSON on stdout, or a short human account on stderr."""
    if as_json:
        echo_json(summary, sort_keys=False)
        return
    for name, state in summary["stages"]:
        console.print(f"  {state:<10} {name}", highlight=False)
    if summary.get("model_dir"):
        console.print(
            f"val macro F1 {summary['val_macro_f1']:.3f}, test macro F1 "
            f"{summary['test_macro_f1']:.3f}\n"
            f"{registered_line(summary)}\n"
            f"decision:    {summary.get('decision', '-')}\n"
            f"model card:  {summary['model_card']}\n"
            f"model:       {summary['model_dir']}\nreport:      {summary['report_dir']}\n"
            f"Data Docs:   {summary['data_docs']}", highlight=False, soft_wrap=True)
