"""The stage commands: validate, fetch, mirror, shards, train, predict.

Each parses its options, builds the stage's config (options left out: the model's default)
and calls the stage function in `tasks/`. Heavy libraries (TensorFlow, Great Expectations)
are imported inside the commands that need them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli import quiet
from flows.cli.options import given, model_default
from flows.cli.output import catalog_report, console, echo_json, fail, progress_bar
from storage.layout import DEFAULT_DATA_ROOT
from tasks.train_config import Distribution, LossName, RecipeName

CATALOG = "tasks.catalog.CatalogConfig"
FETCH = "tasks.fetch.FetchConfig"
SHARDS = "tasks.shards.ShardConfig"
TRAIN = "tasks.train_config.TrainConfig"
HOSTS_SHOWN = 5  # refused hosts named in fetch's error line


def validate_command(
    catalog_csv: Annotated[str, typer.Argument(help="MovieGenre.csv to validate; path or URL.")],
    out: Annotated[str | None, typer.Option(
        help="Output folder. Default: <root>/catalogs/<catalog-hash>/.")] = None,
    root: Annotated[str, typer.Option(
        help="Data root, used when --out is not given.")] = DEFAULT_DATA_ROOT,
    min_genre_count: Annotated[int | None, typer.Option(
        help="Keep genres carried by at least N movies.", min=1)] = model_default(
        CATALOG, "min_genre_count"),
    min_genre_fraction: Annotated[float | None, typer.Option(
        help="Keep genres carried by at least this fraction of movies (instead of a count).",
        min=0.0, max=1.0)] = None,
    drop_genre: Annotated[list[str] | None, typer.Option(
        help="Leave out movies with this genre (repeatable).")] = model_default(
        CATALOG, "drop_genres"),
    val_fraction: Annotated[float | None, typer.Option(
        help="Share of movies in the val split.")] = model_default(CATALOG, "val_fraction"),
    test_fraction: Annotated[float | None, typer.Option(
        help="Share of movies in the test split.")] = model_default(CATALOG, "test_fraction"),
    reject_tolerance: Annotated[float | None, typer.Option(
        help="Fail above this share of invalid rows.")] = model_default(
        CATALOG, "reject_tolerance"),
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
    try:
        config = CatalogConfig(**given(
            min_genre_count=min_genre_count, min_genre_fraction=min_genre_fraction,
            drop_genres=drop_genre, val_fraction=val_fraction, test_fraction=test_fraction,
            reject_tolerance=reject_tolerance))
    except ValidationError as e:
        raise typer.BadParameter(str(e)) from None
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO is noise
    try:
        out_dir = out or catalog_dir(f"{root.rstrip('/')}/catalogs", catalog_csv, config)
        result = validate_catalog(catalog_csv, out_dir, config)
    except CatalogSchemaError as e:
        fail("invalid catalog:", e, code=1)
    except (CatalogReadError, OSError) as e:
        fail("unreadable input:", e, code=2)
    typer.echo(catalog_report(result.out_dir, result.summary, result.data_docs_index))
    if not result.passed:
        fail("check failed:", *result.summary["problems"], code=1)


def fetch_command(
    catalog_dir: Annotated[str, typer.Argument(
        help="Catalog folder (catalogs/<hash>: catalog.parquet); path or URL.")],
    store: Annotated[str, typer.Option(
        help="Poster store root (objects/, index.parquet, fetch-reports/); path or URL.")],
    concurrency: Annotated[int | None, typer.Option(
        help="Posters fetched at once.", min=1)] = model_default(FETCH, "concurrency"),
    per_host: Annotated[int | None, typer.Option(
        help="Connections at once per host (0: only --concurrency).", min=0)] = model_default(
        FETCH, "per_host"),
    allow_host: Annotated[list[str] | None, typer.Option(
        help="Host, IP or CIDR allowed to be private/loopback (repeatable), e.g. 127.0.0.1.")
    ] = model_default(FETCH, "allow_hosts"),
    attempts: Annotated[int | None, typer.Option(
        help="Tries per poster (transient failures).", min=1)] = model_default(
        FETCH, "attempts"),
    timeout: Annotated[float | None, typer.Option(
        help="Seconds per attempt at one poster.", min=0.001)] = model_default(
        FETCH, "total_timeout_s"),
    lease_wait: Annotated[float | None, typer.Option(
        help="Seconds to wait for another run writing the same store (0: exit at once).",
        min=0)] = model_default(FETCH, "lease_wait_s"),
) -> None:
    """Fetch the catalog's posters into the store; rerun to resume (stored posters are skipped).

    Prints the run summary as JSON (also written beside the report in fetch-reports/).
    Exit 1 when no poster at all is available (every row failed: the line says why) or the
    store cannot be written (full disk, read-only, permissions), 3 when another run is
    writing the store.
    """
    from storage.leases import StoreBusy
    from tasks.fetch import FetchConfig, StoreWriteError, fetch_posters, load_catalog_urls

    config = FetchConfig(**given(concurrency=concurrency, per_host=per_host, attempts=attempts,
                                 total_timeout_s=timeout, allow_hosts=allow_host,
                                 lease_wait_s=lease_wait))
    try:
        load_catalog_urls(catalog_dir, None)
    except (OSError, ValueError, KeyError) as e:
        fail("unreadable catalog:", e, code=2)
    try:
        with progress_bar("remaining") as bar:
            task = bar.add_task("posters", total=None)
            result = fetch_posters(catalog_dir, store, config,
                                   on_progress=lambda done, total: bar.update(
                                       task, completed=done, total=total))
    except StoreBusy as e:
        fail("store busy:", e, code=3)
    except StoreWriteError as e:
        if e.result is not None:
            echo_json(e.result.summary)
        fail("fetch stopped:", e, code=1)
    echo_json(result.summary)
    console.print(f"report: {result.report_path}", highlight=False)
    if result.summary["rows"] and not result.summary["available"]:
        fail("no poster fetched:", _nothing_fetched(result.summary, result.report_path), code=1)


def _nothing_fetched(summary: dict[str, Any], report_path: str) -> str:
    """Why a run fetched no poster at all: its outcome counts, or the address guard's fix."""
    outcomes = {name: n for name, n in summary["outcomes"].items() if n}
    if set(outcomes) != {"blocked_address"}:
        counts = ", ".join(f"{name} {n}" for name, n in outcomes.items())
        return f"every one of the {summary['rows']} posters failed ({counts})"
    hosts = _blocked_hosts(report_path)
    more = f" (and {len(hosts) - HOSTS_SHOWN} more hosts)" if len(hosts) > HOSTS_SHOWN else ""
    options = " ".join(f"--allow-host {host}" for host in hosts[:HOSTS_SHOWN])
    return ("every poster was refused by the address guard (blocked_address); to fetch from a "
            f"private or loopback host pass {options}{more}")


def _blocked_hosts(report_path: str) -> list[str]:
    """The hosts of a fetch report's `blocked_address` rows, sorted."""
    from urllib.parse import urlsplit

    from storage.fetch_reports import read_fetch_report

    report = read_fetch_report(report_path)
    urls = report.loc[report["outcome"] == "blocked_address", "url"]
    return sorted({urlsplit(url).hostname or url for url in urls})


def mirror_command(
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
        fail("not a folder:", folder, code=2)
    run_mirror(folder, host=host, port=port, latency_ms=latency_ms)


def shards_command(
    catalog: Annotated[str, typer.Option(
        help="Catalog folder (catalogs/<hash>: catalog.parquet, labels.json); path or URL.")],
    store: Annotated[str, typer.Option(
        help="Poster store root (objects/, index.parquet); path or URL.")],
    out: Annotated[str, typer.Option(
        help="Datasets root: the version is written to <out>/<version>/.")],
    shard_mb: Annotated[float | None, typer.Option(
        help="Target shard size in MB.", min=0.001)] = model_default(
        SHARDS, "target_shard_bytes", shown=lambda size: size / 1_000_000),
    records_per_shard: Annotated[int | None, typer.Option(
        help="Cut shards by record count instead of size.", min=1)] = None,
    gzip: Annotated[bool | None, typer.Option(
        "--gzip", help="GZIP-compress the shards.")] = model_default(SHARDS, "gzip"),
    seed: Annotated[int | None, typer.Option(
        help="Seed of the spread of records over shards.")] = model_default(SHARDS, "seed"),
) -> None:
    """Write the catalog's posters as TFRecord shards: an immutable, content-named version.

    Posters that failed to fetch (or whose stored file is gone) are left out and counted in
    dataset.json. Prints the version summary as JSON; reruns on the same inputs write nothing.
    """
    import dataclasses

    from tasks.shards import DatasetCheckError, ShardConfig, build_dataset

    config = ShardConfig(**given(
        target_shard_bytes=None if shard_mb is None else int(shard_mb * 1_000_000),
        records_per_shard=records_per_shard, gzip=gzip, seed=seed))
    try:
        result = build_dataset(catalog, store, out, config)
    except DatasetCheckError as e:
        fail("error:", e, code=1)
    except (OSError, ValueError, KeyError) as e:
        fail("unreadable input:", e, code=2)
    echo_json(dataclasses.asdict(result))
    if any(result.left_out.values()):
        console.print(f"left out (no poster): {result.left_out}", highlight=False)


def train_command(
    dataset: Annotated[str, typer.Option(help="Dataset version folder (datasets/<version>).")],
    out: Annotated[str, typer.Option(help="Run folder: writes model/ and report/ inside.")],
    backbone: Annotated[str | None, typer.Option(
        help="TF Hub URL, Kaggle handle or local SavedModel folder.")] = model_default(
        TRAIN, "backbone"),
    embeddings: Annotated[str | None, typer.Option(
        help="Embedding cache root (default: <data root>/embeddings).")] = None,
    recipe: Annotated[RecipeName | None, typer.Option(
        help="default (the measured best: seven views averaged, tuned head) or tutorial "
        "(the tutorial's method; alias: seed); the options below override it.")] = model_default(
        TRAIN, "recipe"),
    epochs: Annotated[int | None, typer.Option(
        help="Maximum epochs (default: the recipe's).", min=1)] = None,
    learning_rate: Annotated[float | None, typer.Option(
        "--lr", help="Adam learning rate (default: the recipe's).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Batch size.", min=1)] = model_default(TRAIN, "batch_size"),
    loss: Annotated[LossName | None, typer.Option(
        help="Head loss: macro soft-F1, binary cross-entropy or asymmetric loss (default: the "
        "recipe's).")] = None,
    hidden: Annotated[int | None, typer.Option(
        help="Hidden units (0: linear probe) (default: the recipe's).", min=0)] = None,
    dropout: Annotated[float | None, typer.Option(
        help="Dropout on the features (default: the recipe's).")] = None,
    sweep: Annotated[bool | None, typer.Option(
        help="Choose head hyperparameters by val macro F1 over a small grid (default: the "
        "recipe's).")] = None,
    early_stopping: Annotated[bool | None, typer.Option(
        help="Stop on val macro F1 and keep the best epoch (default: the recipe's).")] = None,
    fine_tune_blocks: Annotated[int | None, typer.Option(
        help="Then fine-tune the top N backbone blocks end to end (0: off).",
        min=0)] = model_default(TRAIN, "fine_tune_blocks"),
    seed: Annotated[int | None, typer.Option(
        help="Seed of weights and shuffling.")] = model_default(TRAIN, "seed"),
    distribution: Annotated[Distribution | None, typer.Option(
        help="tf.distribute strategy: default, mirrored (all local GPUs) or "
        "multi_worker_mirrored (reads TF_CONFIG).")] = model_default(TRAIN, "distribution"),
) -> None:
    """Train the genre model: embed (cached), fit the head, evaluate (report), export.

    The train flow's pieces, in one process (`tasks.train.train`). Exit 1 when the run
    folder already holds a model or a fit, 2 when the dataset or backbone cannot be read.
    """
    quiet.start_tensorflow()
    from pydantic import ValidationError
    from rich.progress import TaskID

    from storage.datasets import ShardIntegrityError
    from tasks.backbone import BackboneUnavailableError
    from tasks.train import train as run_training
    from tasks.train_config import HeadParams, TrainConfig

    try:
        settings = given(recipe=recipe, backbone=backbone, embeddings_root=embeddings,
                         batch_size=batch_size, sweep=sweep, early_stopping=early_stopping,
                         seed=seed, fine_tune_blocks=fine_tune_blocks, distribution=distribution)
        head = given(learning_rate=learning_rate, epochs=epochs, hidden=hidden, dropout=dropout,
                     loss=loss)
        if head:  # the recipe's head, with the options given
            recipe_head = TrainConfig(**given(recipe=recipe)).head
            settings["head"] = HeadParams(**{**recipe_head.model_dump(), **head})
        config = TrainConfig(**settings)
    except ValidationError as exc:
        fail("invalid training settings:", exc, code=2)
    with progress_bar("elapsed") as bar:
        steps: dict[str, TaskID] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in steps:
                steps[step] = bar.add_task(step, total=total)
            bar.update(steps[step], completed=done, total=total)

        try:
            result = run_training(dataset, out, config, progress=progress)
        except (FileNotFoundError, ShardIntegrityError, BackboneUnavailableError) as exc:
            fail("cannot train:", exc, code=2)
        except FileExistsError as exc:
            fail(str(exc), code=1)
    val, test = result.metrics["val"], result.metrics["test"]
    console.print(f"val macro F1 {val['macro_f1']:.4f} (tuned thresholds "
                  f"{val['macro_f1_tuned']:.4f}), test macro F1 {test['macro_f1']:.4f} "
                  f"(tuned {test['macro_f1_tuned']:.4f})")
    typer.echo(result.model_dir)


def predict_command(
    model_dir: Annotated[Path, typer.Argument(help="An exported model folder (runs/<run>/model).")],
    images: Annotated[list[Path], typer.Argument(help="Poster files (JPEG, PNG, ...).")],
) -> None:
    """Predict poster genres with an exported model: JSON lines (file, genres, probabilities)."""
    import json

    quiet.start_tensorflow()
    from tasks.export import predict_files

    try:
        results = predict_files(model_dir, images)
    except (OSError, ValueError, KeyError) as exc:
        fail(f"{model_dir} is not an exported model:", exc, code=2)
    for result in results:
        typer.echo(json.dumps(result))
    if any("error" in result for result in results):
        raise typer.Exit(2)
