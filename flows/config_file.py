"""A commented YAML config file for a flow's config model: every field, its help, its default.

`posterflow config init` writes it. The comments are the fields' pydantic descriptions (the
same text as the Prefect UI's form); the values are the defaults, so the file, unchanged,
validates to the model's defaults. A required field gets a placeholder (`PLACEHOLDERS`)
and a comment saying it is required.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

INDENT = "  "
WIDTH = 95  # comment lines wrap at this many characters, indent included
PLACEHOLDERS: Mapping[str, object] = {"catalog_csv": "MovieGenre.csv"}
DEFAULTS_NOTE = "Every value below is the default: keep only the lines you change."


def config_template(model: type[BaseModel],
                    placeholders: Mapping[str, object] = PLACEHOLDERS) -> str:
    """The commented YAML of `model`: every field, nested sections indented, defaults as values.

    `placeholders` are the values of the required fields; the file validates as written.
    """
    values = model.model_validate(dict(placeholders)).model_dump(mode="json")
    header = [f"# {line}" for line in [*_docstring(model), DEFAULTS_NOTE]]
    return "\n".join([*header, *_section(model, values, 0)]) + "\n"


def _docstring(model: type[BaseModel]) -> list[str]:
    """The first paragraph of the model's docstring, wrapped as comment text."""
    first = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    return textwrap.wrap(f"{model.__name__}: {first}", WIDTH - 2)


def _section(model: type[BaseModel], values: Mapping[str, Any], depth: int) -> list[str]:
    """The lines of one section: each field's comment, then `name: value` or its sub-section."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        lines += _comment(field, depth)
        nested = _nested_model(field)
        if nested is not None and isinstance(values[name], dict):
            lines.append(f"{INDENT * depth}{name}:")
            lines += _section(nested, values[name], depth + 1)
        else:
            lines.append(f"{INDENT * depth}{name}: {_yaml_value(values[name])}")
    return lines


def _comment(field: FieldInfo, depth: int) -> list[str]:
    """The field's description as `# ` lines (wrapped), marked when the field is required."""
    text = field.description or ""
    if field.is_required():
        text = f"REQUIRED (replace the placeholder): {text}"
    prefix = f"{INDENT * depth}# "
    return textwrap.wrap(text, WIDTH, initial_indent=prefix, subsequent_indent=prefix,
                         break_long_words=False, break_on_hyphens=False)


def _nested_model(field: FieldInfo) -> type[BaseModel] | None:
    """The model class of a field that is a section (a pydantic model), else None."""
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(
        annotation, BaseModel) else None


def _yaml_value(value: Any) -> str:
    """One value as inline YAML: scalars as YAML writes them, lists in flow style."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()
