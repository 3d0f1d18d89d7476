"""flows.events: which event each alias change is, and what it carries; the registry's hook."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.events import alias_event, alias_event_name
from storage.registry import Registry
from tasks.promotion import promote, register_candidate, rollback
from tests.registry_helpers import make_export, model_files_without_tensorflow


def entry(alias: str, version: int | None, action: str, forced: bool = False) -> dict:
    return {"alias": alias, "version": version, "previous": 1, "action": action,
            "forced": forced, "reason": "why", "flow_run_id": None}


@pytest.mark.parametrize(("change", "name"), [
    (entry("champion", 2, "register"), "posterflow.model.promoted"),
    (entry("champion", 2, "approve"), "posterflow.model.promoted"),
    (entry("champion", 2, "promote", forced=True), "posterflow.model.forced"),
    (entry("champion", 1, "rollback"), "posterflow.model.rolled-back"),
    (entry("challenger", 2, "register"), "posterflow.model.challenger"),
    (entry("challenger", 2, "reject"), "posterflow.model.rejected"),
    (entry("challenger", None, "promote"), "posterflow.model.alias-removed"),
    (entry("stable", 2, "set"), "posterflow.model.alias-set"),
])
def test_event_name_of_each_alias_change(change: dict, name: str) -> None:
    assert alias_event_name(change) == name


def test_event_resource_is_the_version_and_payload_has_metrics_and_reason() -> None:
    event = alias_event("posterflow", entry("challenger", None, "promote"),
                        {"test": {"macro_f1": 0.5}, "val": {"macro_f1": 0.6}})
    assert event["resource"]["prefect.resource.id"] == "posterflow.model.posterflow.1"
    assert all(isinstance(v, str) for v in event["resource"].values())
    assert event["payload"]["metrics"]["test_macro_f1"] == 0.5
    assert event["payload"]["reason"] == "why" and event["payload"]["version"] == 1


def test_registry_tells_its_listener_every_alias_change(tmp_path: Path) -> None:
    seen: list[tuple[str, list[dict]]] = []
    registry = Registry(tmp_path / "reg", on_alias_change=lambda r, m, e: seen.append((m, e)))
    template = model_files_without_tensorflow(tmp_path / "template")
    register_candidate(registry, make_export(template, tmp_path / "a", 0.5), "posterflow")
    register_candidate(registry, make_export(template, tmp_path / "b", 0.4), "posterflow")
    promote(registry, "posterflow", 2, force=True)
    assert [[(e["alias"], e["version"], e["action"]) for e in entries] for _, entries in seen] == [
        [("champion", 1, "register")], [("challenger", 2, "register")],
        [("champion", 2, "promote"), ("challenger", None, "promote")]]
    rollback(registry, "posterflow")
    assert seen[-1][1][0]["action"] == "rollback"


def test_the_documented_automation_is_a_valid_prefect_automation() -> None:
    import uuid

    import yaml
    from prefect.events.schemas.automations import AutomationCore

    text = (Path(__file__).resolve().parents[2] / "deployments" / "automations" /
            "notify-on-promotion.yaml").read_text()
    automation = AutomationCore.model_validate(yaml.safe_load(
        text.replace("NOTIFICATION_BLOCK_ID", str(uuid.uuid4()))))
    assert automation.trigger.expect == {"posterflow.model.promoted", "posterflow.model.forced"}
