"""`posterflow store verify [--repair]`: check (and repair) the poster store."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.output import console, echo_json, fail

store_app = typer.Typer(help="Check and repair the poster store.", no_args_is_help=True)


@store_app.command("verify")
def store_verify_command(
    store: Annotated[str, typer.Argument(help="Poster store root; path or URL.")],
    repair: Annotated[bool, typer.Option(
        "--repair", help="Delete damaged objects and their index rows (fetch then refetches).")
    ] = False,
) -> None:
    """Check that every indexed poster is stored whole (size and sha256); print JSON.

    Exit 0 no damage (or all repaired), 1 damage found and left, 2 unreadable store,
    3 another run is writing (--repair only).
    """
    from storage.leases import StoreBusy, held
    from storage.posters import PosterStore

    posters = PosterStore(store)
    try:
        if repair:  # a consistent view to delete from: no fetch writing meanwhile
            with held(store, "repair") as lease:
                damage = posters.verify()
                dropped = posters.repair(damage, lease)
        else:  # objects are written before the index rows naming them: no lease needed
            damage, dropped = posters.verify(), 0
    except StoreBusy as e:
        fail("store busy:", e, code=3)
    except OSError as e:
        fail("unreadable store:", e, code=2)
    echo_json({**damage.as_dict(), "repaired": repair, "index_rows_dropped": dropped})
    if damage.damaged and not repair:
        console.print(f"{len(damage.damaged)} damaged posters: run with --repair, then fetch",
                      highlight=False)
        raise typer.Exit(1)
