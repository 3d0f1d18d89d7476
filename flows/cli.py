"""The `posterflow` command line: parse arguments, build a config, call stage functions.

Heavy libraries (TensorFlow, Great Expectations, Prefect) are imported inside the
commands that need them, so `posterflow --help`, `fetch` and `mirror` start fast.
Exit codes: 0 success, 1 the input was read but failed a check, 2 unreadable input.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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


@app.command()
def validate(
    catalog_csv: Annotated[str, typer.Argument(help="MovieGenre.csv to validate; path or URL.")],
    out: Annotated[str | None, typer.Option(
        help="Output folder. Default: <root>/catalogs/<catalog-hash>/.")] = None,
    root: Annotated[str, typer.Option(
        help="Data root, used when --out is not given.")] = "posterflow-data",
    min_genre_count: Annotated[int | None, typer.Option(
        help="Keep genres carried by at least N movies (default 1000).", min=1)] = None,
    min_genre_fraction: Annotated[float | None, typer.Option(
        help="Keep genres carried by at least this fraction of movies (instead of a count).",
        min=0.0, max=1.0)] = None,
    drop_genre: Annotated[list[str] | None, typer.Option(
        help="Leave out movies with this genre (repeatable; default Adult).")] = None,
    val_fraction: Annotated[float | None, typer.Option(
        help="Share of movies in the val split (default 0.15).")] = None,
    test_fraction: Annotated[float | None, typer.Option(
        help="Share of movies in the test split (default 0.15).")] = None,
    reject_tolerance: Annotated[float | None, typer.Option(
        help="Fail above this share of invalid rows (default 0.05).")] = None,
) -> None:
    """Validate MovieGenre.csv (Great Expectations), keep frequent genres, split by id hash.

    Writes catalog.parquet, rejects.parquet, labels.json, summary.json and data_docs/.
    Exit 1 when a required column is missing or a check fails, 2 when unreadable.
    """
    from pydantic import ValidationError

    from tasks.catalog import CatalogConfig, catalog_dir, validate_catalog
    from tasks.catalog_csv import CatalogReadError, CatalogSchemaError

    if min_genre_count is not None and min_genre_fraction is not None:
        raise typer.BadParameter("give --min-genre-count or --min-genre-fraction, not both")
    given = {"min_genre_count": min_genre_count, "min_genre_fraction": min_genre_fraction,
             "drop_genres": drop_genre, "val_fraction": val_fraction,
             "test_fraction": test_fraction, "reject_tolerance": reject_tolerance}
    try:
        config = CatalogConfig(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        raise typer.BadParameter(str(e)) from None
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO is noise
    try:
        out_dir = out or catalog_dir(f"{root.rstrip('/')}/catalogs", catalog_csv, config)
        result = validate_catalog(catalog_csv, out_dir, config)
    except CatalogSchemaError as e:
        console.print(f"[red]invalid catalog:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (CatalogReadError, OSError) as e:
        console.print(f"[red]unreadable input:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    typer.echo(_catalog_report(result.out_dir, result.summary, result.data_docs_index))
    if not result.passed:
        for problem in result.summary["problems"]:
            console.print(f"[red]check failed:[/red] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _catalog_report(out_dir: str, s: dict, docs: str) -> str:
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


# --- fetch, mirror (issue 3) -------------------------------------------------------------


@app.command()
def fetch(
    catalog_dir: Annotated[str, typer.Argument(
        help="Catalog folder (catalogs/<hash>: catalog.parquet); path or URL.")],
    store: Annotated[str, typer.Option(
        help="Poster store root (objects/, index.parquet, fetch-reports/); path or URL.")],
    concurrency: Annotated[int, typer.Option(help="Posters fetched at once.", min=1)] = 64,
    per_host: Annotated[int, typer.Option(
        help="Connections at once per host (0: only --concurrency).", min=0)] = 0,
    allow_host: Annotated[list[str] | None, typer.Option(
        help="Host, IP or CIDR allowed to be private/loopback (repeatable), e.g. 127.0.0.1.")
    ] = None,
    attempts: Annotated[int, typer.Option(help="Tries per poster (transient failures).",
                                          min=1)] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds per attempt at one poster.",
                                           min=0.001)] = 60.0,
) -> None:
    """Fetch the catalog's posters into the store; rerun to resume (stored posters are skipped).

    Prints the run summary as JSON (also written beside the report in fetch-reports/).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from tasks.fetch import FetchConfig, fetch_posters, load_catalog_urls

    config = FetchConfig(concurrency=concurrency, per_host=per_host, attempts=attempts,
                         total_timeout_s=timeout, allow_hosts=allow_host or [])
    try:
        load_catalog_urls(catalog_dir, None)
    except (OSError, ValueError, KeyError) as e:
        console.print(f"[red]unreadable catalog:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("posters", total=None)
        result = fetch_posters(catalog_dir, store, config,
                               on_progress=lambda done, total: bar.update(
                                   task, completed=done, total=total))
    _echo_json(result.summary)
    console.print(f"report: {result.report_path}", highlight=False)


@app.command()
def mirror(
    folder: Annotated[Path, typer.Argument(help="Folder of poster files to serve.")],
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8799,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = (
        "127.0.0.1"),
    latency_ms: Annotated[float, typer.Option(
        help="Delay added before every answer, in milliseconds.", min=0)] = 0.0,
) -> None:
    """Serve a poster folder over HTTP (http://HOST:PORT/<file>) until interrupted."""
    from tasks.mirror import run_mirror

    if not folder.is_dir():
        console.print(f"[red]not a folder:[/red] {folder}", highlight=False)
        raise typer.Exit(2)
    run_mirror(folder, host=host, port=port, latency_ms=latency_ms)


# --- shards (issue 4) --------------------------------------------------------------------


@app.command()
def shards(
    catalog: Annotated[str, typer.Option(
        help="Catalog folder (catalogs/<hash>: catalog.parquet, labels.json); path or URL.")],
    store: Annotated[str, typer.Option(
        help="Poster store root (objects/, index.parquet); path or URL.")],
    out: Annotated[str, typer.Option(
        help="Datasets root: the version is written to <out>/<version>/.")],
    shard_mb: Annotated[float, typer.Option(help="Target shard size in MB.", min=0.001)] = 100.0,
    records_per_shard: Annotated[int | None, typer.Option(
        help="Cut shards by record count instead of size.", min=1)] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="GZIP-compress the shards.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the spread of records over shards.")] = 0,
) -> None:
    """Write the catalog's posters as TFRecord shards: an immutable, content-named version.

    Posters that failed to fetch (or whose stored file is gone) are left out and counted in
    dataset.json. Prints the version summary as JSON; reruns on the same inputs write nothing.
    """
    import dataclasses

    from tasks.shards import DatasetCheckError, ShardConfig, build_dataset

    config = ShardConfig(target_shard_bytes=int(shard_mb * 1_000_000),
                         records_per_shard=records_per_shard, gzip=gzip, seed=seed)
    try:
        result = build_dataset(catalog, store, out, config)
    except DatasetCheckError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (OSError, ValueError, KeyError) as e:
        console.print(f"[red]unreadable input:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _echo_json(dataclasses.asdict(result))
    if any(result.left_out.values()):
        console.print(f"left out (no poster): {result.left_out}", highlight=False)


# --- train, predict (issue 5) ------------------------------------------------------------


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset version folder (datasets/<version>).")],
    out: Annotated[str, typer.Option(help="Run folder: writes model/ and report/ inside.")],
    backbone: Annotated[str | None, typer.Option(
        help="TF Hub URL, Kaggle handle or local SavedModel folder [default: TF Hub "
        "mobilenet_v2_100_224/feature_vector/4].")] = None,
    embeddings: Annotated[str | None, typer.Option(
        help="Embedding cache root [default: <data root>/embeddings].")] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.", min=1)] = 30,
    learning_rate: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 1e-5,
    batch_size: Annotated[int, typer.Option(help="Batch size.", min=1)] = 256,
    loss: Annotated[str, typer.Option(help="soft_f1 or bce.")] = "soft_f1",
    hidden: Annotated[int, typer.Option(help="Hidden units (0: linear probe).", min=0)] = 1024,
    dropout: Annotated[float, typer.Option(help="Dropout on the features.")] = 0.0,
    sweep: Annotated[bool, typer.Option(
        help="Choose head hyperparameters by val macro F1 over a small grid.")] = False,
    early_stopping: Annotated[bool, typer.Option(
        help="Stop on val macro F1 and keep the best epoch.")] = True,
    fine_tune_blocks: Annotated[int, typer.Option(
        help="Then fine-tune the top N backbone blocks end to end (0: off).", min=0)] = 0,
    seed: Annotated[int, typer.Option(help="Seed of weights and shuffling.")] = 0,
    distribution: Annotated[str, typer.Option(
        help="tf.distribute strategy: default, mirrored (all local GPUs) or "
        "multi_worker_mirrored (reads TF_CONFIG).")] = "default",
) -> None:
    """Train the genre model: embed (cached), train the head, report, export the SavedModel.

    Exit 1 when the run folder already holds a model, 2 when the dataset or backbone cannot
    be read.
    """
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from storage.datasets import ShardIntegrityError
    from tasks.backbone import BackboneUnavailableError
    from tasks.train import HeadParams, TrainConfig
    from tasks.train import train as run_training

    try:
        head = HeadParams(learning_rate=learning_rate, epochs=epochs, hidden=hidden,
                          dropout=dropout, loss=loss)  # type: ignore[arg-type]
        config = TrainConfig(head=head, embeddings_root=embeddings, batch_size=batch_size,
                             sweep=sweep, early_stopping=early_stopping, seed=seed,
                             fine_tune_blocks=fine_tune_blocks,
                             distribution=distribution,  # type: ignore[arg-type]
                             **({"backbone": backbone} if backbone else {}))
    except ValidationError as exc:
        console.print(f"[red]invalid training settings:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        steps: dict[str, int] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in steps:
                steps[step] = bar.add_task(step, total=total)
            bar.update(steps[step], completed=done, total=total)

        try:
            result = run_training(dataset, out, config, progress=progress)
        except (FileNotFoundError, ShardIntegrityError, BackboneUnavailableError) as exc:
            console.print(f"[red]cannot train:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(2) from None
        except FileExistsError as exc:
            console.print(f"[red]{exc}[/red]", soft_wrap=True)
            raise typer.Exit(1) from None
    val, test = result.metrics["val"], result.metrics["test"]
    console.print(f"val macro F1 {val['macro_f1']:.4f} (tuned thresholds "
                  f"{val['macro_f1_tuned']:.4f}), test macro F1 {test['macro_f1']:.4f} "
                  f"(tuned {test['macro_f1_tuned']:.4f})")
    typer.echo(result.model_dir)


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="An exported model folder (runs/<run>/model).")],
    images: Annotated[list[Path], typer.Argument(help="Poster files (JPEG, PNG, ...).")],
) -> None:
    """Predict poster genres with an exported model: JSON lines (file, genres, probabilities)."""
    import json

    from tasks.export import predict_files

    try:
        results = predict_files(model_dir, images)
    except (OSError, ValueError, KeyError) as exc:
        console.print(f"[red]{model_dir} is not an exported model:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    for result in results:
        typer.echo(json.dumps(result))
    if any("error" in result for result in results):
        raise typer.Exit(2)


# --- registry (issue 6) ------------------------------------------------------------------

registry_app = typer.Typer(
    help="Model versions in TF Serving's layout: register through the promotion gate, "
    "promote, roll back, verify.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")
if TYPE_CHECKING:
    from storage.registry import Registry

RegistryRef = Annotated[str, typer.Argument(help="A version number or an alias.")]


@registry_app.callback()
def _registry(
    ctx: typer.Context,
    root: Annotated[
        str, typer.Option("--root", help="Registry root: a folder or fsspec URL.")
    ] = "posterflow-data/registry",
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")] = "posterflow",
) -> None:
    ctx.obj = {"root": root, "model": model}


def _open_registry(ctx: typer.Context) -> tuple[Registry, str]:
    """The Registry and model name chosen by `posterflow registry --root/--model`."""
    from storage.registry import Registry

    return Registry(ctx.obj["root"]), ctx.obj["model"]


@contextlib.contextmanager
def _registry_errors() -> Iterator[None]:
    """Report a registry error as one line and an exit code (1 failed check, 2 bad input)."""
    from storage.registry import CorruptVersionError, InvalidModelError, NotFoundError

    try:
        yield
    except (InvalidModelError, CorruptVersionError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (NotFoundError, ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _echo_json(obj: object) -> None:
    """Print stable, indented JSON to stdout (for scripts)."""
    import json

    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@registry_app.command("register")
def registry_register(
    ctx: typer.Context,
    model_dir: Annotated[str, typer.Argument(help="Exported SavedModel folder (path or URL).")],
    margin: Annotated[float, typer.Option(help="Required test macro F1 gain.")] = 0.0,
    champion_score: Annotated[
        float | None,
        typer.Option(help="Champion's test macro F1 on the candidate's test split."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote despite the gate.")] = False,
    flow_run_id: Annotated[str | None, typer.Option(help="Prefect flow run id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add MODEL_DIR as the next version, then gate it: champion or challenger."""
    import dataclasses

    from storage.fs import exists
    from tasks.promotion import register_candidate

    if not exists(model_dir):
        console.print(f"[red]error:[/red] {model_dir} does not exist", soft_wrap=True)
        raise typer.Exit(2)
    registry, model = _open_registry(ctx)
    with _registry_errors():
        reg = register_candidate(
            registry, model_dir, model, margin=margin, champion_score=champion_score,
            force=force, flow_run_id=flow_run_id,
        )
    if as_json:
        _echo_json(dataclasses.asdict(reg))
    else:
        typer.echo(f"{model} v{reg.version} -> {reg.alias}: {reg.decision.reason}\n{reg.path}")


@registry_app.command("list")
def registry_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Registered versions with their aliases, test macro F1 and lineage."""
    from rich.table import Table

    registry, model = _open_registry(ctx)
    aliases = registry.aliases(model)["aliases"]
    rows = []
    for v in registry.versions(model):
        info = registry.info(model, v)
        rows.append({
            "version": v,
            "aliases": sorted(a for a, n in aliases.items() if n == v),
            "test_macro_f1": info.test_macro_f1,
            "dataset_version": info.lineage.get("dataset_version"),
            "created_at": info.metadata["created_at"],
            "flow_run_id": info.metadata.get("flow_run_id"),
            "path": info.path,
        })
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"{model} @ {registry.root}")
    for col in ("version", "aliases", "test macro F1", "dataset", "created_at"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["version"]), ", ".join(r["aliases"]), f"{r['test_macro_f1']:.4f}",
                      str(r["dataset_version"]), r["created_at"])
    Console().print(table)


@registry_app.command("show")
def registry_show(ctx: typer.Context, ref: RegistryRef = "champion") -> None:
    """One version's metadata, aliases and alias history, as JSON."""
    registry, model = _open_registry(ctx)
    with _registry_errors():
        info = registry.info(model, registry.resolve(model, ref))
    version, state = info.version, registry.aliases(model)
    _echo_json({
        "version": version,
        "path": info.path,
        "aliases": sorted(a for a, n in state["aliases"].items() if n == version),
        "history": [h for h in state["history"] if version in (h["version"], h["previous"])],
        "registry": info.metadata,
    })


@registry_app.command("promote")
def registry_promote(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to set; champion goes through the gate.")] = (
        "champion"
    ),
    margin: Annotated[float, typer.Option(help="Required test macro F1 gain.")] = 0.0,
    champion_score: Annotated[
        float | None,
        typer.Option(help="Champion's test macro F1 on the candidate's test split."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote despite the gate.")] = False,
    reason: Annotated[str, typer.Option(help="Why (recorded, non-champion aliases).")] = "",
) -> None:
    """Make VERSION champion if it passes the gate (else challenger, exit 1), or set an alias."""
    from tasks.promotion import promote

    registry, model = _open_registry(ctx)
    if alias != "champion":
        with _registry_errors():
            registry.set_alias(model, alias, version, reason)
        typer.echo(f"{model} {alias} -> v{version}")
        return
    with _registry_errors():
        decision = promote(
            registry, model, version, margin=margin, champion_score=champion_score, force=force
        )
    typer.echo(f"{model} v{version} -> {'champion' if decision.promoted else 'challenger'}: "
               f"{decision.reason}")
    if not decision.promoted:
        raise typer.Exit(1)


@registry_app.command("rollback")
def registry_rollback(
    ctx: typer.Context,
    to: Annotated[
        int | None,
        typer.Option(help="Version to roll back to (default: the latest earlier champion)."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in the alias history).")] = "",
) -> None:
    """Point champion back at an earlier, verified version."""
    registry, model = _open_registry(ctx)
    with _registry_errors():
        version = registry.rollback(model, to, reason)
    typer.echo(f"{model} champion -> v{version}")


@registry_app.command("verify")
def registry_verify(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        typer.Argument(help="A version or alias (default: every version)."),
    ] = None,
) -> None:
    """Re-hash versions against their recorded checksums; exit 1 if any is corrupted."""
    registry, model = _open_registry(ctx)
    with _registry_errors():
        versions = [registry.resolve(model, ref)] if ref else registry.versions(model)
        results = [registry.verify(model, v) for v in versions]
    bad = 0
    for result in results:
        v = result.version
        bad += not result.ok
        typer.echo(f"v{v} ok" if result.ok else f"v{v} CORRUPT: {'; '.join(result.problems)}")
    if bad:
        raise typer.Exit(1)


@registry_app.command("path")
def registry_path(ctx: typer.Context, ref: RegistryRef = "champion") -> None:
    """Print the folder of a verified version (default: the champion), e.g. for TF Serving."""
    registry, model = _open_registry(ctx)
    with _registry_errors():
        typer.echo(registry.path(model, ref))



# --- run, demo (issue 7) -----------------------------------------------------------------


def _prefect_entrypoint_env() -> None:
    """Entry-point settings for in-process flow runs: stage loggers go to Prefect's logs."""
    import os

    for noisy in ("httpx", "great_expectations"):  # a line per API call / per GX internal
        logging.getLogger(noisy).setLevel(logging.WARNING)

    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,storage")
    # The ephemeral API server starts in a subprocess; 20 s is too short on a busy 2-core box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _print_run(summary: dict, as_json: bool) -> None:
    """Print a run summary: JSON on stdout, or a short human account on stderr."""
    import json

    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    for name, state in summary["stages"]:
        console.print(f"  {state:<10} {name}", highlight=False)
    if summary.get("model_dir"):
        console.print(
            f"val macro F1 {summary['val_macro_f1']:.3f}, test macro F1 "
            f"{summary['test_macro_f1']:.3f}\n"
            f"registered:  {summary['registry_path']} (v{summary['version']}, "
            f"{summary['alias']})\n"
            f"model:       {summary['model_dir']}\nreport:      {summary['report_dir']}\n"
            f"Data Docs:   {summary['data_docs']}", highlight=False, soft_wrap=True)


@app.command()
def run(
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
        console.print(f"[red]cannot read the config:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    try:
        settings = RetrainConfig.model_validate(data)
    except ValidationError as exc:
        console.print(f"[red]invalid config:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    _prefect_entrypoint_env()
    from flows.runs import run_retrain

    summary = run_retrain(settings)
    _print_run(summary.as_dict(), as_json)
    if summary.error is not None:
        console.print(f"[red]retrain {summary.state}:[/red] {summary.error}", highlight=False)
        raise typer.Exit(1)


@app.command()
def demo(
    data_root: Annotated[Path, typer.Option(help="Where demo data and every output go.")] = Path(
        "posterflow-data"),
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
    from flows.demo import run_demo
    from tasks.backbone import BackboneUnavailableError

    try:
        outcome = run_demo(str(data_root), movies, backbone, offline)
    except BackboneUnavailableError as exc:
        console.print(f"[red]backbone:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for note in outcome.notes:
        console.print(f"[yellow]{note}[/yellow]", highlight=False, soft_wrap=True)
    _print_run(outcome.summary.as_dict(), as_json)
    if outcome.summary.error is not None:
        console.print(f"[red]demo {outcome.summary.state}:[/red] {outcome.summary.error}",
                      highlight=False)
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
