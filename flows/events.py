"""Prefect events for registry alias changes, so automations can react (notify, redeploy).

Every history entry an alias write adds becomes one event (see `alias_event_name`), with
the version as its resource and the metrics and reason as payload:

    posterflow.model.promoted      champion moved by the gate (or a reviewer's approval)
    posterflow.model.forced        champion moved over the gate's refusal
    posterflow.model.rolled-back   champion moved back to an earlier version
    posterflow.model.challenger    the version became (or stays) challenger
    posterflow.model.rejected      a reviewer rejected the challenger
    posterflow.model.alias-set     any other alias set; `.alias-removed` when dropped

`deployments/automations/` has an automation reacting to `posterflow.model.promoted`.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from storage.aliases import CHALLENGER, CHAMPION
from storage.registry import NotFoundError, Registry

EVENT_PREFIX = "posterflow.model."


def alias_event_name(entry: dict[str, Any]) -> str:
    """The event name of one alias history entry."""
    alias, action = entry["alias"], entry.get("action")
    if entry["version"] is None:
        suffix = "alias-removed"
    elif alias == CHAMPION:
        suffix = ("rolled-back" if action == "rollback" else
                  "forced" if entry.get("forced") else "promoted")
    elif alias == CHALLENGER:
        suffix = "rejected" if action == "reject" else "challenger"
    else:
        suffix = "alias-set"
    return EVENT_PREFIX + suffix


def alias_event(model: str, entry: dict[str, Any], metrics: dict[str, Any] | None
                ) -> dict[str, Any]:
    """`emit_event` keyword arguments for one history entry (resource labels are strings)."""
    version = entry["version"] if entry["version"] is not None else entry["previous"]
    test, val = (metrics or {}).get("test", {}), (metrics or {}).get("val", {})
    return {
        "event": alias_event_name(entry),
        "resource": {
            "prefect.resource.id": f"posterflow.model.{model}.{version}",
            "prefect.resource.name": f"{model} v{version}",
            "posterflow.model": model,
            "posterflow.version": str(version),
            "posterflow.alias": entry["alias"],
        },
        "payload": {
            "model": model, "version": version, "alias": entry["alias"],
            "previous": entry["previous"], "action": entry.get("action"),
            "forced": bool(entry.get("forced")), "reason": entry.get("reason", ""),
            "flow_run_id": entry.get("flow_run_id"),
            "metrics": {"test_macro_f1": test.get("macro_f1"),
                        "test_macro_f1_tuned": test.get("macro_f1_tuned"),
                        "val_macro_f1": val.get("macro_f1")},
        },
    }


def emit_alias_events(registry: Registry, model: str, entries: list[dict[str, Any]]) -> None:
    """The registry's `on_alias_change` listener: one Prefect event per history entry."""
    for entry in entries:
        version = entry["version"] if entry["version"] is not None else entry["previous"]
        try:
            metrics = registry.info(model, int(version)).metadata.get("metrics")
        except (NotFoundError, TypeError):
            metrics = None
        emit_event(**alias_event(model, entry, metrics))


def evented_registry(root: str) -> Registry:
    """A Registry whose every alias change is emitted as a Prefect event."""
    return Registry(root, on_alias_change=emit_alias_events)
