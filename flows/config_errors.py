"""A config's validation errors as one line each: the field, what was expected, what was given.

Pydantic's own text is a block per error with a docs URL; a person editing a YAML file wants
the dotted field path, the expectation, the value they wrote, and for a misspelt key the
field they probably meant (`train.hed: unknown field; did you mean 'train.head'?`).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

VALUE_CHARS = 80  # longer values given are cut in the line


def config_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per error of validating `model`: `path: message (got value)`."""
    return [_line(error, model) for error in exc.errors()]


def _line(error: ErrorDetails, model: type[BaseModel]) -> str:
    """The line of one error."""
    loc = error["loc"]
    path = _dotted(loc)
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown field; {_suggestion(model, loc)}"
    if error["type"] == "missing":
        description = _description(model, loc)
        return f"{path}: {error['msg']}" + (f" ({description})" if description else "")
    given = error.get("input")
    if isinstance(given, dict):  # a whole section: the message names the problem
        return f"{path}: {error['msg']}"
    return f"{path}: {error['msg']} (got {_shorten(repr(given))})"


def _dotted(loc: Sequence[int | str]) -> str:
    """A pydantic location as a dotted path, list items in brackets: train.views[1]."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "config"


def _suggestion(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    """`did you mean 'a.b'?` for the valid field closest to an unknown key, else the choices."""
    section = _model_at(model, loc[:-1])
    if section is None:
        return "not a setting"
    fields = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    if close:
        return f"did you mean {_dotted([*loc[:-1], close[0]])!r}?"
    return f"valid here: {', '.join(fields)}"


def _description(model: type[BaseModel], loc: Sequence[int | str]) -> str | None:
    """The description of the field at `loc`, when there is one."""
    section = _model_at(model, loc[:-1])
    field = section.model_fields.get(str(loc[-1])) if section and loc else None
    return field.description if field else None


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model of the section at `loc` (list items share their list's), None if no section."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return None
        current = _model_in(current.model_fields[part].annotation)
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: itself, or inside Optional[...] / list[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _shorten(text: str) -> str:
    """`text`, cut to VALUE_CHARS with an ellipsis."""
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 3] + "..."
