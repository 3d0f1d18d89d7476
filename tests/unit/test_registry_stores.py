"""The registry's damaged files and its object-store writes (conditional creates, CAS).

Damage: every JSON file the registry reads goes through `read_registry_json`, so a truncated
or empty file is reported as CORRUPT naming the file. Object stores: memory:// offers an
exclusive create like S3 and GCS, so the compare-and-swap on aliases runs here on it; a store
without one is refused.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from typer.testing import CliRunner

from flows.cli import app
from storage.aliases import CHALLENGER, CHAMPION, AliasConflict
from storage.registry import Registry
from storage.registry_backends import UnsafeStoreError
from storage.registry_files import CorruptRegistry
from tasks.promotion import register_candidate
from tests.registry_helpers import make_export, model_files_without_tensorflow

MODEL = "posterflow"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_files_without_tensorflow(tmp_path_factory.mktemp("files") / "model")


def cli(root: str | Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["registry", "--root", str(root), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_damaged_files_are_reported_corrupt_naming_the_file(template: Path,
                                                            tmp_path: Path) -> None:
    root = tmp_path / "reg"
    for i, f1 in enumerate((0.5, 0.6)):
        register_candidate(Registry(root), make_export(template, tmp_path / f"e{i}", f1), MODEL)
    (root / MODEL / "1" / "registry.json").write_text("")
    code, out, err = cli(root, "verify")
    assert code == 1 and "Traceback" not in err
    assert f"v1 CORRUPT: {root / MODEL / '1' / 'registry.json'} is damaged" in out
    assert "v2 ok" in out
    code, out, err = cli(root, "list", "--json")
    rows = json.loads(out)
    assert code == 1 and "corrupt" in rows[0] and rows[1]["test_macro_f1"] == 0.6
    aliases = root / MODEL / "aliases.json"
    aliases.write_text(aliases.read_text()[:20])  # truncated
    code, out, err = cli(root, "list")
    assert code == 1 and "Traceback" not in err
    assert f"{aliases} is damaged: not valid JSON" in " ".join(err.split())
    with pytest.raises(CorruptRegistry, match="aliases.json is damaged"):
        Registry(root).aliases(MODEL)


def test_invalid_alias_is_named_an_alias(template: Path, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    register_candidate(Registry(root), make_export(template, tmp_path / "e", 0.5), MODEL)
    code, _, err = cli(root, "promote", "1", "--alias", "../x")
    assert code == 2 and "alias must match" in err and "model name" not in err


def test_object_store_aliases_are_compare_and_swapped(template: Path, tmp_path: Path) -> None:
    root = f"memory://reg-{uuid.uuid4().hex[:8]}"
    registry = Registry(root)
    for i, f1 in enumerate((0.5, 0.4)):
        register_candidate(registry, make_export(template, tmp_path / f"e{i}", f1), MODEL)
    assert registry.aliases(MODEL)["aliases"] == {CHAMPION: 1, CHALLENGER: 2}
    with pytest.raises(AliasConflict), registry.editing_aliases(MODEL) as changes:
        changes.move("stable", 1, action="set", reason="")
        Registry(root).set_alias(MODEL, "canary", 2)  # another writer commits first
    assert registry.aliases(MODEL)["aliases"] == {CHAMPION: 1, CHALLENGER: 2, "canary": 2}

    calls = []

    def edit(changes):  # loses the first race, then re-runs on the newer state
        calls.append(dict(changes.state["aliases"]))
        if len(calls) == 1:
            Registry(root).set_alias(MODEL, "beta", 1)
        changes.move("stable", 1, action="set", reason="")

    registry.update_aliases(MODEL, edit)
    assert len(calls) == 2 and "beta" in calls[1]
    state = registry.aliases(MODEL)
    assert state["aliases"] == {CHAMPION: 1, CHALLENGER: 2, "canary": 2, "beta": 1, "stable": 1}
    fsys = fsspec.filesystem("memory")
    assert json.loads(fsys.cat_file(f"{root}/{MODEL}/aliases.json")) == state
    assert "versions: 2" in fsys.cat_file(f"{root}/{MODEL}/models.config").decode()


class NoPreconditionFS(MemoryFileSystem):
    """An in-memory store that, like many S3-compatible ones, offers no conditional create."""

    protocol = "noprecondition"


def test_a_store_without_conditional_create_is_refused(template: Path, tmp_path: Path) -> None:
    fsspec.register_implementation("noprecondition", NoPreconditionFS, clobber=True)
    root = f"noprecondition://reg-{uuid.uuid4().hex[:8]}"
    with pytest.raises(UnsafeStoreError, match="offers no conditional create"):
        register_candidate(Registry(root), make_export(template, tmp_path / "e", 0.5), MODEL)
    assert Registry(root).versions(MODEL) == []
