"""Shard fan-out: plan, parts and finalize give the one-call build's version, byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.datasets import ShardIntegrityError, read_manifest
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
    parts = [write_shard_part(*inputs, out, SMALL, part=(i, 3)) for i in range(3)]
    assert [len(p.rows) for p in parts] == [len(range(i, plan.shards, 3)) for i in range(3)]
    result = finalize_dataset(*inputs, out, SMALL, [r for p in parts for r in p.rows])
    assert (result.version, result.created, result.path) == (one.version, True, plan.path)
    assert sorted(os.listdir(out)) == [one.version]  # staging renamed away, nothing stray
    split, joined = tree(Path(one.path)), tree(Path(result.path))
    split.pop("dataset.json"), joined.pop("dataset.json")  # created_at differs
    assert split == joined  # byte-identical shards and manifest
    assert plan_dataset(*inputs, out, SMALL).exists


def test_part_rerun_keeps_finished_shards(inputs, tmp_path) -> None:
    first = write_shard_part(*inputs, tmp_path, SMALL, part=(1, 2))
    staged = Path(first.staging)
    before = {p.name: p.stat().st_mtime_ns for p in staged.iterdir()}
    assert len(before) == len(first.rows) and not [n for n in before if n.startswith(".")]
    again = write_shard_part(*inputs, tmp_path, SMALL, part=(1, 2))
    assert {p.name: p.stat().st_mtime_ns for p in staged.iterdir()} == before  # not rewritten
    assert again.rows == first.rows


def test_finalize_refuses_a_missing_part(inputs, tmp_path) -> None:
    rows = [r for i in (0, 2) for r in write_shard_part(*inputs, tmp_path, SMALL,
                                                        part=(i, 3)).rows]
    plan = plan_dataset(*inputs, tmp_path, SMALL)
    missing = sorted(set(read_manifest(build_dataset(*inputs, tmp_path / "ref", SMALL).path)
                         ["shard"]) - {r["shard"] for r in rows})
    with pytest.raises(ShardIntegrityError,
                       match=f"{len(missing)} of {plan.shards} shards not staged .*{missing[0]}"):
        finalize_dataset(*inputs, tmp_path, SMALL, rows)
    assert not Path(plan.path).exists()  # nothing published
    # a shard a part reported but whose staged file is gone is refused too
    os.unlink(Path(plan.staging) / rows[0]["shard"])
    with pytest.raises(ShardIntegrityError, match=rows[0]["shard"]):
        finalize_dataset(*inputs, tmp_path, SMALL,
                         rows + write_shard_part(*inputs, tmp_path, SMALL, part=(1, 3)).rows)


def test_part_must_be_in_range(inputs, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"0 <= i < n, got \(3, 3\)"):
        write_shard_part(*inputs, tmp_path, SMALL, part=(3, 3))
