"""`posterflow config init`: a commented YAML of RetrainConfig that validates as written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from flows.cli import app
from flows.config import RetrainConfig, ScoreConfig
from flows.config_file import config_template


def _leaf_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The dotted path of every leaf field of a config model, sections walked."""
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _leaf_paths(annotation, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_the_template_validates_unchanged_to_the_defaults() -> None:
    data = yaml.safe_load(config_template(RetrainConfig))
    assert RetrainConfig.model_validate(data) == RetrainConfig(catalog_csv="MovieGenre.csv")


def test_every_leaf_field_is_in_the_template_with_its_description_above() -> None:
    text = config_template(RetrainConfig)
    data = yaml.safe_load(text)
    leaves = _leaf_paths(RetrainConfig)
    assert ("train", "head", "epochs") in leaves and ("fetch", "allow_hosts") in leaves
    for path in leaves:
        node = data
        for part in path:
            assert isinstance(node, dict) and part in node, ".".join(path)
            node = node[part]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("#"):  # every setting (and section) is explained
            assert lines[i - 1].lstrip().startswith("# "), line
    assert "  head:\n    # Adam learning rate" in text  # sections nest by indentation


def test_the_required_catalog_is_a_placeholder_marked_required() -> None:
    lines = config_template(RetrainConfig).splitlines()
    at = lines.index("catalog_csv: MovieGenre.csv")
    assert lines[at - 1].startswith("# REQUIRED") and "MovieGenre.csv to ingest" in lines[at - 1]


def test_config_init_writes_refuses_to_overwrite_and_forces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["config", "init"])
    assert first.exit_code == 0, first.output
    written = tmp_path / "posterflow.yaml"
    assert written.read_text() == config_template(RetrainConfig)
    written.write_text("catalog_csv: mine.csv\n")
    again = runner.invoke(app, ["config", "init", str(written)])
    assert again.exit_code == 1
    assert "exists (pass --force to replace it)" in again.output
    assert written.read_text() == "catalog_csv: mine.csv\n"
    forced = runner.invoke(app, ["config", "init", str(written), "--force"])
    assert forced.exit_code == 0 and written.read_text() == config_template(RetrainConfig)


def test_config_init_dash_prints_the_template(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["config", "init", "-"])
    assert result.exit_code == 0 and result.stdout == config_template(RetrainConfig)
    assert list(tmp_path.iterdir()) == []


def test_run_help_points_at_config_init() -> None:
    out = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["run", "--help"]).output
    assert "write a commented one with `posterflow config init`" in out


def test_config_init_for_the_score_flow(tmp_path: Path) -> None:
    written = tmp_path / "score.yaml"
    result = CliRunner().invoke(app, ["config", "init", str(written), "--flow", "score"])
    assert result.exit_code == 0, result.output
    assert written.read_text() == config_template(ScoreConfig)
    assert "posterflow score --config" in result.output
    assert ScoreConfig.model_validate(yaml.safe_load(written.read_text())).model.alias
    out = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["score", "--help"]).output
    assert "`posterflow config init --flow score`" in out
