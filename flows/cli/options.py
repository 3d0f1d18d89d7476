"""Options left out mean "the config model's default"; `--help` shows that default.

One convention for every command: an option's default is `model_default(...)`, which hands
the command None, and the command builds its config from `given(...)`, so the model alone
decides the value. The model is imported only when `--help` shows the default, so
`posterflow --help`, `fetch` and `mirror` do not import the stages' modules to start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class ModelDefault:
    """An option default standing for a config model field's own default.

    Click calls it for the value (None: left to the model); Typer's help prints it (`str`)
    and reads a flag's default from it (`bool`), importing the model only then.
    """

    def __init__(self, model: str, field: str, shown: Callable[[Any], object]) -> None:
        self.model, self.field, self.shown = model, field, shown

    def __call__(self) -> None:
        return None

    def value(self) -> object:
        """The field's default as the option shows it (e.g. MB for a byte count)."""
        module, _, name = self.model.rpartition(".")
        field = getattr(importlib.import_module(module), name).model_fields[self.field]
        return self.shown(field.get_default(call_default_factory=True))

    def __str__(self) -> str:
        value = self.value()
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    def __bool__(self) -> bool:
        return bool(self.value())


def model_default(model: str, field: str, shown: Callable[[Any], object] = lambda v: v) -> Any:
    """The default of an option that sets `field` of `model` ("package.module.Class")."""
    return ModelDefault(model, field, shown)


def given(**options: object) -> dict[str, Any]:
    """The options the user gave: not None, and for repeatable options given at least once."""
    return {k: v for k, v in options.items() if v is not None and v != []}
