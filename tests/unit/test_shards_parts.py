"""Shard fan-out: plan, parts and finalize give the one-call build's version, byte for byte;
the plan is made once and the parts and finalize read it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from storage.datasets import ShardIntegrityError, read_manifest
from storage.posters import PosterStore
from tasks.shards import (
    ShardConfig,
    build_dataset,
    finalize_dataset,
    plan_dataset,
    write_shard_part,
)
from tests.shards_helpers import tree, write_inputs

SMALL = ShardConfig(records_per_shard=4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 30-movie catalog with every poster fetched."""
    return write_inputs(tmp_path_factory.mktemp("inputs"), 30)


def test_three_parts_equal_one_call(inputs, tmp_path) -> None:
    one = build_dataset(*inputs, tmp_path / "one", SMALL)
    out = tmp_path / "parts"
    plan = plan_dataset(*inputs, out, SMALL)
    assert (plan.version, plan.shards, plan.exists) == (one.version, one.shards, False)
    parts = [write_shard_part(plan, inputs[1], part=(i, 3)) for i in range(3)]
    assert [len(p.rows) for p in parts] == [len(range(i, plan.shards, 3)) for i in range(3)]
    result = finalize_dataset(plan, [r for p in parts for r in p.rows])
    assert (result.version, result.created, result.path) == (one.version, True, plan.path)
    assert sorted(os.listdir(out)) == [one.version]  # staging renamed away, nothing stray
    split, joined = tree(Path(one.path)), tree(Path(result.path))
    split.pop("dataset.json"), joined.pop("dataset.json")  # created_at differs
    assert split == joined  # byte-identical shards and manifest
    assert plan_dataset(*inputs, out, SMALL).exists


def test_part_rerun_keeps_finished_shards(inputs, tmp_path) -> None:
    plan = plan_dataset(*inputs, tmp_path, SMALL)
    first = write_shard_part(plan, inputs[1], part=(1, 2))
    staged = Path(first.staging)
    before = {p.name: p.stat().st_mtime_ns for p in staged.iterdir() if p.name != "plan.parquet"}
    assert len(before) == len(first.rows) and not [n for n in before if n.startswith(".")]
    again = write_shard_part(plan, inputs[1], part=(1, 2))
    assert {p.name: p.stat().st_mtime_ns for p in staged.iterdir()
            if p.name != "plan.parquet"} == before  # not rewritten
    assert again.rows == first.rows


def test_finalize_refuses_a_missing_part(inputs, tmp_path) -> None:
    plan = plan_dataset(*inputs, tmp_path, SMALL)
    rows = [r for i in (0, 2) for r in write_shard_part(plan, inputs[1], part=(i, 3)).rows]
    missing = sorted(set(read_manifest(build_dataset(*inputs, tmp_path / "ref", SMALL).path)
                         ["shard"]) - {r["shard"] for r in rows})
    with pytest.raises(ShardIntegrityError,
                       match=f"{len(missing)} of {plan.shards} shards not staged .*{missing[0]}"):
        finalize_dataset(plan, rows)
    assert not Path(plan.path).exists()  # nothing published
    # a shard a part reported but whose staged file is gone is refused too
    os.unlink(Path(plan.staging) / rows[0]["shard"])
    with pytest.raises(ShardIntegrityError, match=rows[0]["shard"]):
        finalize_dataset(plan, rows + write_shard_part(plan, inputs[1], part=(1, 3)).rows)


def test_part_must_be_in_range(inputs, tmp_path) -> None:
    plan = plan_dataset(*inputs, tmp_path, SMALL)
    with pytest.raises(ValueError, match=r"0 <= i < n, got \(3, 3\)"):
        write_shard_part(plan, inputs[1], part=(3, 3))


def test_parts_and_finalize_read_the_plan_not_the_inputs(inputs, tmp_path) -> None:
    one = build_dataset(*inputs, tmp_path / "one", SMALL)
    catalog, store = (Path(shutil.copytree(p, tmp_path / p.name)) for p in inputs)
    plan = plan_dataset(catalog, store, tmp_path / "parts", SMALL)
    shutil.rmtree(catalog)  # a new plan would fail: neither parts nor finalize may make one
    os.unlink(store / "index.parquet")
    rows = [r for i in range(2) for r in write_shard_part(plan, store, part=(i, 2)).rows]
    result = finalize_dataset(plan, rows)
    assert (result.version, result.created) == (one.version, True)
    assert "plan.parquet" not in os.listdir(result.path)  # staging-only: never published
    published, reference = tree(Path(result.path)), tree(Path(one.path))
    published.pop("dataset.json"), reference.pop("dataset.json")
    assert published == reference


def test_a_build_reads_the_store_listing_and_index_once(inputs, tmp_path, monkeypatch) -> None:
    calls = {"stored_hashes": 0, "read_index": 0}
    for name in calls:
        real = getattr(PosterStore, name)

        def counted(self, _real=real, _name=name):
            calls[_name] += 1
            return _real(self)

        monkeypatch.setattr(PosterStore, name, counted)
    build_dataset(*inputs, tmp_path, SMALL)
    assert calls == {"stored_hashes": 1, "read_index": 1}


def test_a_part_without_its_plan_says_to_plan_first(inputs, tmp_path) -> None:
    plan = plan_dataset(*inputs, tmp_path, SMALL)
    shutil.rmtree(plan.staging)
    with pytest.raises(FileNotFoundError, match=r"plan\.parquet does not exist: plan the dataset"):
        write_shard_part(plan, inputs[1])
