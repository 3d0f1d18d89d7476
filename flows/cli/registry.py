"""`posterflow registry ...`: model versions in TF Serving's layout, through the promotion gate.

Exit codes: 0 success, 1 a failed check (gate, corrupt version), 2 bad input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from flows.cli.output import echo_json, fail
from storage.layout import DEFAULT_DATA_ROOT, DEFAULT_MODEL_NAME, REGISTRY

if TYPE_CHECKING:
    from storage.registry import Registry

registry_app = typer.Typer(
    help="Model versions in TF Serving's layout: register through the promotion gate, "
    "promote, roll back, verify.",
    no_args_is_help=True,
)
RegistryRef = Annotated[str, typer.Argument(help="A version number or an alias.")]
# The promotion gate's options, shared by `register` and `promote`.
Margin = Annotated[float, typer.Option(help="Required test macro F1 gain.")]
ChampionScore = Annotated[float | None, typer.Option(
    help="Champion's test macro F1 on the candidate's test split.")]
Force = Annotated[bool, typer.Option("--force", help="Promote despite the gate.")]


@registry_app.callback()
def _registry(
    ctx: typer.Context,
    root: Annotated[
        str, typer.Option("--root", help="Registry root: a folder or fsspec URL.")
    ] = f"{DEFAULT_DATA_ROOT}/{REGISTRY}",
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")] = DEFAULT_MODEL_NAME,
) -> None:
    ctx.obj = {"root": root, "model": model}


def _open_registry(ctx: typer.Context) -> tuple[Registry, str]:
    """The Registry and model name chosen by `posterflow registry --root/--model`.

    With a Prefect server configured (PREFECT_API_URL), alias changes are sent to it as
    events (`flows.events`); without one there is nobody to tell, so none are sent.
    """
    import os

    from storage.registry import Registry

    if os.environ.get("PREFECT_API_URL"):
        from flows.events import evented_registry

        return evented_registry(ctx.obj["root"]), ctx.obj["model"]
    return Registry(ctx.obj["root"]), ctx.obj["model"]


@contextlib.contextmanager
def _registry_errors() -> Iterator[None]:
    """Report a registry error as one line and an exit code (1 failed check, 2 bad input)."""
    from storage.model_export import InvalidModelError
    from storage.registry import CorruptVersionError, NotFoundError
    from storage.registry_files import CorruptRegistry

    try:
        yield
    except (InvalidModelError, CorruptVersionError, CorruptRegistry) as e:
        fail("error:", e, code=1)
    except (NotFoundError, ValueError, OSError) as e:
        fail("error:", e, code=2)


@registry_app.command("register")
def registry_register(
    ctx: typer.Context,
    model_dir: Annotated[str, typer.Argument(help="Exported SavedModel folder (path or URL).")],
    margin: Margin = 0.0,
    champion_score: ChampionScore = None,
    force: Force = False,
    flow_run_id: Annotated[str | None, typer.Option(help="Prefect flow run id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add MODEL_DIR as the next version, then gate it: champion or challenger."""
    import dataclasses

    from storage.fs import exists
    from tasks.promotion import register_candidate

    if not exists(model_dir):
        fail("error:", f"{model_dir} does not exist", code=2)
    registry, model = _open_registry(ctx)
    with _registry_errors():
        reg = register_candidate(
            registry, model_dir, model, margin=margin, champion_score=champion_score,
            force=force, flow_run_id=flow_run_id,
        )
    if as_json:
        echo_json(dataclasses.asdict(reg))
    else:
        typer.echo(f"{model} v{reg.version} -> {reg.alias}: {reg.decision.reason}\n{reg.path}")


@registry_app.command("list")
def registry_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Registered versions with their aliases, test macro F1 and lineage; damage is CORRUPT.

    Exit 1 when a version or the alias file is damaged (the others are still listed).
    """
    from rich.table import Table

    from storage.registry_files import CorruptRegistry

    registry, model = _open_registry(ctx)
    damage = []
    try:
        aliases = registry.aliases(model)["aliases"]
    except CorruptRegistry as e:
        damage.append(str(e))
        aliases = {}
    rows: list[dict[str, Any]] = []
    for v in registry.versions(model):
        try:
            info = registry.info(model, v)
        except CorruptRegistry as e:
            damage.append(str(e))
            rows.append({"version": v, "aliases": sorted(a for a, n in aliases.items() if n == v),
                         "corrupt": str(e)})
            continue
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
        echo_json(rows)
    else:
        table = Table(title=f"{model} @ {registry.root}")
        for col in ("version", "aliases", "test macro F1", "dataset", "created_at"):
            table.add_column(col)
        for r in rows:
            if "corrupt" in r:
                table.add_row(str(r["version"]), ", ".join(r["aliases"]), "CORRUPT", "", "")
            else:
                table.add_row(str(r["version"]), ", ".join(r["aliases"]),
                              f"{r['test_macro_f1']:.4f}", str(r["dataset_version"]),
                              r["created_at"])
        Console().print(table)
    for problem in damage:
        typer.echo(f"CORRUPT: {problem}", err=True)
    if damage:
        raise typer.Exit(1)


@registry_app.command("show")
def registry_show(ctx: typer.Context, ref: RegistryRef = "champion") -> None:
    """One version's metadata, aliases and alias history, as JSON."""
    registry, model = _open_registry(ctx)
    with _registry_errors():
        info = registry.info(model, registry.resolve(model, ref))
    from storage.cards import card_path, read_card_facts

    version, state = info.version, registry.aliases(model)
    facts = read_card_facts(registry.root, model, version)
    echo_json({
        "version": version,
        "path": info.path,
        "aliases": sorted(a for a, n in state["aliases"].items() if n == version),
        "data": {
            "dataset_version": info.lineage.get("dataset_version"),
            "dataset_dir": facts.get("dataset_dir"),
            "catalog_hash": facts.get("catalog_hash"),
            "data_docs": facts.get("data_docs"),
            "fetch_reports": facts.get("fetch_reports", []),
        },
        "card": card_path(registry.root, model, version) if facts else None,
        "history": [h for h in state["history"] if version in (h["version"], h["previous"])],
        "registry": info.metadata,
    })


@registry_app.command("card")
def registry_card(ctx: typer.Context, ref: RegistryRef = "champion") -> None:
    """Print the path of a version's model card (one offline HTML file)."""
    from storage.cards import card_path
    from storage.fs import exists

    registry, model = _open_registry(ctx)
    with _registry_errors():
        version = registry.resolve(model, ref)
    path = card_path(registry.root, model, version)
    if not exists(path):
        fail("error:", f"{model} v{version} has no model card ({path})", code=2)
    typer.echo(path)


@registry_app.command("which-data")
def registry_which_data(
    ctx: typer.Context,
    dataset_version: Annotated[str, typer.Argument(help="A dataset version id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The versions trained on DATASET_VERSION (exit 1 when none was)."""
    registry, model = _open_registry(ctx)
    aliases = registry.aliases(model)["aliases"]
    infos = [registry.info(model, v) for v in registry.versions(model)]
    rows: list[dict[str, Any]] = [
        {"version": i.version, "aliases": sorted(a for a, n in aliases.items() if n == i.version),
         "test_macro_f1": i.test_macro_f1, "path": i.path}
        for i in infos if i.lineage.get("dataset_version") == dataset_version]
    if as_json:
        echo_json(rows)
    else:
        for r in rows:
            typer.echo(f"v{r['version']}\t{','.join(r['aliases']) or '-'}\t"
                       f"{r['test_macro_f1']:.4f}\t{r['path']}")
    if not rows:
        raise typer.Exit(1)


@registry_app.command("promote")
def registry_promote(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to set; champion goes through the gate.")] = (
        "champion"
    ),
    margin: Margin = 0.0,
    champion_score: ChampionScore = None,
    force: Force = False,
    reason: Annotated[str, typer.Option(help="Why (recorded, non-champion aliases).")] = "",
) -> None:
    """Make VERSION champion if it passes the gate (else challenger, exit 1), or set an alias."""
    from tasks.promotion import promote, set_alias

    registry, model = _open_registry(ctx)
    if alias != "champion":
        with _registry_errors():
            set_alias(registry, model, alias, version, reason)
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
    from tasks.promotion import rollback

    registry, model = _open_registry(ctx)
    with _registry_errors():
        version = rollback(registry, model, to, reason)
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
