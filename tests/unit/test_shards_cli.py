"""`posterflow shards`: JSON result, left-out counts, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from tests.shards_helpers import write_inputs


def _shards(*args: str):
    return CliRunner().invoke(app, ["shards", *args])


def test_writes_a_version_and_counts_what_was_left_out(tmp_path: Path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 12, unfetched=(4,))
    args = ["--catalog", str(catalog), "--store", str(store), "--out", str(tmp_path / "ds"),
            "--records-per-shard", "3", "--gzip"]
    first = _shards(*args)
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    assert result["left_out"] == {"not_fetched": 1, "missing_object": 0}
    assert result["created"] and sum(result["splits"].values()) == 11
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [result["version"]]
    assert all(p.name.endswith((".tfrecord.gz", ".parquet", ".json"))
               for p in (tmp_path / "ds" / result["version"]).iterdir())
    again = json.loads(_shards(*args).stdout)
    assert (again["version"], again["created"]) == (result["version"], False)


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 4)
    missing = _shards("--catalog", str(tmp_path / "nope"), "--store", str(store),
                      "--out", str(tmp_path / "ds"))
    assert missing.exit_code == 2
    assert "nope" in missing.stderr and "Traceback" not in missing.output
    no_store = _shards("--catalog", str(catalog), "--store", str(tmp_path / "nostore"),
                       "--out", str(tmp_path / "ds"))
    assert no_store.exit_code == 2 and "nostore" in no_store.stderr


def test_failed_check_exits_1(tmp_path: Path) -> None:
    catalog, store = write_inputs(tmp_path / "in", 4)
    labels = json.loads((catalog / "labels.json").read_text())
    (catalog / "labels.json").write_text(json.dumps({**labels, "labels": ["Action"]}))
    failed = _shards("--catalog", str(catalog), "--store", str(store),
                     "--out", str(tmp_path / "ds"))
    assert failed.exit_code == 1
    assert "are not in labels.json" in failed.stderr
    assert not (tmp_path / "ds").exists() or not list((tmp_path / "ds").iterdir())
