"""The CLI's option defaults stand for the config models' own, and errors print as written."""

from __future__ import annotations

import re

import click
import pytest
import typer
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.options import ModelDefault, given
from flows.cli.output import fail


def _model_defaults(group: click.Group) -> list[tuple[str, ModelDefault]]:
    """(command --option, default) for every option defaulting to a config model's value."""
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _model_defaults(command)
            continue
        found += [(f"{name} {p.opts[0]}", p.default) for p in command.params
                  if isinstance(p.default, ModelDefault)]
    return found


def test_every_model_default_names_a_real_field() -> None:
    defaults = _model_defaults(typer.main.get_command(app))
    assert {name.split()[0] for name, _ in defaults} == {"validate", "fetch", "shards", "train"}
    for name, default in defaults:
        assert default() is None, name  # the command leaves the field to the model
        default.value()  # raises ImportError/AttributeError/KeyError when the field moved


def test_help_shows_the_models_defaults() -> None:
    runner = CliRunner(env={"COLUMNS": "250"})
    out = runner.invoke(app, ["shards", "--help"]).output
    assert "[default: 100.0]" in out  # ShardConfig.target_shard_bytes in MB
    out = runner.invoke(app, ["train", "--help"]).output
    assert re.search(r"--recipe\b(?:(?!--epochs).)*\[default: default\]", out, re.S)
    assert "(default: the recipe's)" in out  # head options: the recipe's head
    assert "mobilenet_v2_100_224/feature_vector/4]" in out


def test_train_offers_and_checks_the_config_models_choices() -> None:
    runner = CliRunner(env={"COLUMNS": "250"})
    out = runner.invoke(app, ["train", "--help"]).output
    assert "<default|tutorial|seed>" in out and "<soft_f1|bce|asl>" in out
    assert "<default|mirrored|multi_worker_mirrored>" in out
    bad = runner.invoke(app, ["train", "--dataset", "d", "--out", "o", "--loss", "hinge"])
    assert bad.exit_code == 2 and "hinge" in bad.output


def test_given_leaves_out_what_was_not_given() -> None:
    assert given(a=None, b=[], c=0, d=False, e=["x"]) == {"c": 0, "d": False, "e": ["x"]}


def test_fail_prints_brackets_and_exits_with_the_code(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(typer.Exit) as exit_:
        fail("error:", "no alias [champion]", "second", code=2)
    assert exit_.value.exit_code == 2
    assert capsys.readouterr().err == "error: no alias [champion]\nerror: second\n"
