"""A model's aliases (`champion`, `challenger`, any name -> version) and their history.

```
<root>/<model>/aliases.json                 {"aliases": {"champion": 3, ...}, "history": [...]}
<root>/<model>/.aliases/<generation>.json   (object stores: every alias state, numbered)
```

`AliasChanges` is one edit of that state; every move appends a history entry. How an edit
is committed (a lock locally, a compare-and-swap on object stores) is the registry
backend's (`storage.registry_backends`); which version deserves `champion` is the
promotion policy's (`tasks.promotion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.registry_files import CorruptRegistry, RegistryError, read_registry_json, utc_now

CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = "aliases.json"
GENERATIONS = ".aliases"  # object stores: <generation>.json, each alias state created once
ALIAS_ATTEMPTS = 32  # compare-and-swap retries before an alias edit gives up


class AliasConflict(RegistryError):
    """Another writer changed the aliases between this edit's read and its write."""


def empty_state() -> dict[str, Any]:
    """The alias state of a model that has none yet."""
    return {"aliases": {}, "history": []}


def read_alias_state(url: str) -> dict[str, Any]:
    """An alias state file (aliases.json or a generation); empty when absent."""
    try:
        state = read_registry_json(url, ("aliases", "history"))
    except FileNotFoundError:
        return empty_state()
    if not isinstance(state["aliases"], dict) or not isinstance(state["history"], list):
        raise CorruptRegistry(f"{url} is damaged: expected an aliases mapping and a "
                              "history list")
    return state


@dataclass
class AliasChanges:
    """A model's alias state being edited; every move is recorded in its history."""

    state: dict[str, Any]  # {"aliases": {name: version}, "history": [...]}
    changed: bool = False

    def get(self, alias: str) -> int | None:
        """The version an alias points at, if any."""
        version = self.state["aliases"].get(alias)
        return None if version is None else int(version)

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.state["history"])

    def move(
        self,
        alias: str,
        version: int | None,
        *,
        action: str,
        reason: str,
        forced: bool = False,
        flow_run_id: str | None = None,
    ) -> None:
        """Point (or with None, drop) an alias and append the change to the history."""
        aliases = self.state["aliases"]
        previous = aliases.get(alias)
        if version is None:
            aliases.pop(alias, None)
        else:
            aliases[alias] = version
        entry = {"action": action, "forced": forced, "reason": reason, "flow_run_id": flow_run_id}
        self.state["history"].append(
            {"at": utc_now(), "alias": alias, "version": version, "previous": previous, **entry}
        )
        self.changed = True
