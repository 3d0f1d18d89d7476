"""`posterflow registry ...`: every subcommand, its output and its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.registry_helpers import make_export, save_tiny_savedmodel


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Exported models: a baseline, a worse one, a better one, and an incomplete one."""
    base = tmp_path_factory.mktemp("cli")
    template = save_tiny_savedmodel(base / "savedmodel")
    out = {name: make_export(template, base / name, f1) for name, f1 in
           (("base", 0.5), ("worse", 0.4), ("better", 0.7))}
    out["broken"] = make_export(template, base / "broken", 0.5)
    (out["broken"] / "saved_model.pb").unlink()
    return out


def cli(root: Path, *args: str) -> tuple[int, str, str]:
    """Run `posterflow registry --root ROOT ARGS...` in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, ["registry", "--root", str(root), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_register_list_show_promote_rollback_path(exports: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "reg"
    code, out, _ = cli(root, "register", str(exports["base"]), "--flow-run-id", "run-1")
    assert code == 0 and out.startswith("posterflow v1 -> champion: first version")
    code, out, _ = cli(root, "register", str(exports["worse"]), "--json")
    assert code == 0
    assert json.loads(out)["alias"] == "challenger"
    code, out, _ = cli(root, "list", "--json")
    rows = json.loads(out)
    assert [(r["version"], r["aliases"], r["test_macro_f1"]) for r in rows] == [
        (1, ["champion"], 0.5), (2, ["challenger"], 0.4),
    ]
    assert rows[0]["flow_run_id"] == "run-1"
    assert cli(root, "list")[0] == 0
    code, out, _ = cli(root, "show", "challenger")
    shown = json.loads(out)
    assert shown["version"] == 2 and "0.4000 <= champion v1" in shown["history"][0]["reason"]
    code, out, _ = cli(root, "promote", "2")
    assert code == 1 and "-> challenger" in out
    code, out, _ = cli(root, "promote", "2", "--force")
    assert code == 0 and "forced over the gate" in out
    assert cli(root, "promote", "1", "--alias", "stable")[0] == 0
    code, out, _ = cli(root, "rollback")
    assert (code, out.strip()) == (0, "posterflow champion -> v1")
    code, out, _ = cli(root, "path")
    assert (code, out.strip()) == (0, str(root / "posterflow" / "1"))
    assert cli(root, "path", "stable")[1].strip() == str(root / "posterflow" / "1")


def test_verify_and_path_refuse_a_damaged_version(exports: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "reg"
    cli(root, "register", str(exports["base"]))
    cli(root, "register", str(exports["better"]))
    assert cli(root, "verify") == (0, "v1 ok\nv2 ok\n", "")
    next((root / "posterflow" / "2" / "variables").glob("variables.data-*")).unlink()
    code, out, _ = cli(root, "verify")
    assert code == 1 and "v2 CORRUPT: variables/variables.data-00000-of-00001" in out
    assert cli(root, "verify", "1")[0] == 0
    code, out, err = cli(root, "path")
    assert (code, out) == (1, "") and "v2 failed verification" in err
    assert cli(root, "promote", "2", "--force")[0] == 1


def test_bad_input_exit_codes(exports: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "reg"
    code, _, err = cli(root, "register", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err
    code, _, err = cli(root, "register", str(exports["broken"]))
    assert code == 1 and "missing saved_model.pb" in err
    code, _, err = cli(root, "show", "champion")
    assert code == 2 and "no alias 'champion'" in err
    assert cli(root, "path", "7")[0] == 2
    assert cli(root, "rollback")[0] == 2


def test_card_show_data_and_which_data(exports: dict[str, Path], tmp_path: Path) -> None:
    from storage.cards import write_card

    root = tmp_path / "reg"
    assert cli(root, "register", str(exports["base"]))[0] == 0
    assert cli(root, "card", "1")[0] == 2  # registered without a card
    facts = {"dataset_dir": "/d/ds-1", "catalog_hash": "c0ffee",
             "fetch_reports": ["/p/fetch-reports/r1.parquet"]}
    path = write_card(str(root), "posterflow", 1, "<html></html>", facts)
    assert cli(root, "card", "champion")[1].strip() == path
    shown = json.loads(cli(root, "show", "1")[1])
    assert shown["data"]["dataset_version"] == "ds-1" and shown["card"] == path
    assert shown["data"]["catalog_hash"] == "c0ffee"
    assert shown["data"]["fetch_reports"] == ["/p/fetch-reports/r1.parquet"]
    code, out, _ = cli(root, "which-data", "ds-1", "--json")
    assert code == 0 and [r["version"] for r in json.loads(out)] == [1]
    assert cli(root, "which-data", "ds-2")[0] == 1
