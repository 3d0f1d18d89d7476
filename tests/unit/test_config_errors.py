"""Config validation errors as one line each: field path, expectation, value, closest field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from flows.config import RetrainConfig
from flows.config_errors import config_errors


def _errors(data: dict) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        RetrainConfig.model_validate(data)
    return config_errors(exc.value, RetrainConfig)


def test_a_misspelt_nested_key_names_the_closest_field() -> None:
    assert _errors({"catalog_csv": "a.csv", "train": {"hed": {"epochs": 3}}}) == [
        "train.hed: unknown field; did you mean 'train.head'?"]
    assert _errors({"catalog_csv": "a.csv", "train": {"head": {"epoch": 3}}}) == [
        "train.head.epoch: unknown field; did you mean 'train.head.epochs'?"]


def test_an_unknown_key_like_no_field_lists_the_valid_ones() -> None:
    [line] = _errors({"catalog_csv": "a.csv", "storage": {"zzz": 1}})
    assert line == "storage.zzz: unknown field; valid here: data_root"


def test_a_wrong_type_says_what_was_expected_and_what_was_given() -> None:
    assert _errors({"catalog_csv": "a.csv", "train": {"head": {"epochs": "many"}}}) == [
        "train.head.epochs: Input should be a valid integer, unable to parse string as an "
        "integer (got 'many')"]
    [line] = _errors({"catalog_csv": "a.csv", "train": {"views": ["full", "nope"]}})
    assert line.startswith("train.views[1]: Input should be 'full'") and "(got 'nope')" in line


def test_a_missing_required_field_is_named_with_its_description() -> None:
    assert _errors({}) == [
        "catalog_csv: Field required (MovieGenre.csv to ingest: a local path or fsspec URL.)"]


def test_run_prints_one_line_per_error_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "f.yaml"
    config.write_text("catalog_csv: a.csv\ntrain:\n  hed: {}\n  head:\n    epochs: many\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "invalid config: train.head.epochs: Input should be a valid integer, unable to parse "
        "string as an integer (got 'many')",
        "invalid config: train.hed: unknown field; did you mean 'train.head'?",
    ]
