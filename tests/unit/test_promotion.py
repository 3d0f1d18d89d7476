"""tasks.promotion: the gate (margin, same split, champion score, force), the aliases it moves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from storage.registry import Registry, VersionInfo
from tasks.promotion import (
    GUARDRAILS_OFF,
    UNKNOWN_SPLIT,
    Guardrails,
    gate,
    hold_as_challenger,
    promote,
    register_candidate,
    split_key,
)
from tests.registry_helpers import make_export, model_files_without_tensorflow

MODEL = "posterflow"
Export = Callable[..., Path]  # (test_f1, dataset_version="ds-1") -> exported model folder


@pytest.fixture
def export(tmp_path: Path) -> Export:
    """Factory: an exported model folder with the given test macro F1 and dataset version."""
    template = model_files_without_tensorflow(tmp_path / "template")
    counter = iter(range(1000))

    def make(f1: float, dataset: str = "ds-1") -> Path:
        return make_export(template, tmp_path / f"export-{next(counter)}", f1, dataset)

    return make


def version(number: int, f1: float, test_split: str) -> VersionInfo:
    """A registered version's info as the gate sees it."""
    meta = {"metrics": {"test": {"macro_f1": f1}}, "test_split": test_split, "lineage": {}}
    return VersionInfo(MODEL, number, f"/r/{MODEL}/{number}", meta)


def test_gate_promotes_at_exactly_champion_plus_margin() -> None:
    champion = version(1, 0.50, "dataset:a")
    assert gate(version(2, 0.55, "dataset:a"), champion, margin=0.05).promoted
    refused = gate(version(2, 0.5499, "dataset:a"), champion, margin=0.05)
    assert (refused.promoted, refused.baseline_f1, refused.champion) == (False, 0.50, 1)
    assert gate(version(2, 0.1, "dataset:a"), None, margin=0.5).promoted  # no champion yet


def test_a_tie_never_replaces_the_champion() -> None:
    champion = version(1, 0.50, "dataset:a")
    tie = gate(version(2, 0.50, "dataset:a"), champion, margin=0.0)
    assert not tie.promoted and "0.5000 <= champion v1 0.5000" in tie.reason
    assert gate(version(2, 0.5001, "dataset:a"), champion, margin=0.0).promoted


def test_the_same_export_registered_twice_is_one_version(export: Export, tmp_path: Path) -> None:
    registry, model_dir = Registry(tmp_path / "r"), export(0.4)
    first = register_candidate(registry, model_dir, MODEL)
    again = register_candidate(registry, model_dir, MODEL)  # e.g. a retried register task
    assert (again.version, again.path, again.reused) == (first.version, first.path, True)
    assert not first.reused and registry.versions(MODEL) == [1]
    assert len(registry.aliases(MODEL)["history"]) == 1  # the gate did not run again
    assert register_candidate(registry, export(0.41), MODEL).version == 2  # other content


def test_holding_as_challenger_retries_a_concurrent_alias_change(export: Export,
                                                                 tmp_path: Path) -> None:
    root = f"memory://hold-{tmp_path.name}"
    registry = Registry(root)
    for f1 in (0.5, 0.4):
        register_candidate(registry, export(f1), MODEL)
    real = registry.backend.editing
    raced = []

    def editing_after_another_writer(model: str, model_dir: str):  # noqa: ANN202
        if not raced:
            raced.append(True)
            Registry(root).set_alias(MODEL, "canary", 1)  # commits between read and write
        return real(model, model_dir)

    registry.backend.editing = editing_after_another_writer  # type: ignore[method-assign]
    hold_as_challenger(registry, MODEL, 2, "awaiting approval")
    assert registry.aliases(MODEL)["aliases"] == {"champion": 1, "challenger": 2, "canary": 1}


def test_first_registration_is_champion(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    r = register_candidate(registry, export(0.4), MODEL, flow_run_id="run-123")
    assert (r.version, r.alias, r.decision.promoted) == (1, "champion", True)
    assert r.path == str(tmp_path / "registry" / MODEL / "1")
    assert r.decision.reason == "first version: no champion yet"
    [entry] = registry.aliases(MODEL)["history"]
    assert (entry["action"], entry["alias"], entry["flow_run_id"]) == ("register", "champion",
                                                                        "run-123")


def test_gate_promotes_at_or_above_champion_plus_margin(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    register_candidate(registry, export(0.50), MODEL)
    worse = register_candidate(registry, export(0.52), MODEL, margin=0.05)
    assert (worse.alias, worse.decision.promoted) == ("challenger", False)
    assert "0.5200 < champion v1 0.5000 + margin 0.0500" in worse.decision.reason
    better = register_candidate(registry, export(0.55), MODEL, margin=0.05)
    assert (better.alias, better.decision.baseline_f1) == ("champion", 0.50)
    state = registry.aliases(MODEL)
    assert state["aliases"] == {"champion": 3, "challenger": 2}
    refused = [h for h in state["history"] if h["version"] == 2]
    assert refused[0]["alias"] == "challenger" and "margin 0.0500" in refused[0]["reason"]


def test_gate_on_another_split_needs_the_champion_score(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    register_candidate(registry, export(0.70, "ds-1"), MODEL)
    blind = register_candidate(registry, export(0.60, "ds-2"), MODEL)
    assert blind.alias == "challenger"
    assert "scored on dataset:ds-1, the candidate on dataset:ds-2" in blind.decision.reason
    # The champion scores 0.55 on ds-2's test split: 0.60 beats it there.
    fair = promote(registry, MODEL, blind.version, champion_score=0.55)
    assert (fair.promoted, fair.baseline_f1) == (True, 0.55)
    worse = register_candidate(registry, export(0.50, "ds-2"), MODEL, champion_score=0.99)
    assert worse.alias == "challenger"  # same split as champion v2 now: its 0.60 is used
    assert worse.decision.baseline_f1 == 0.60


def test_split_fingerprint_wins_over_dataset_version() -> None:
    assert split_key({"dataset_version": "a", "test_split_fingerprint": "f"}) == "fingerprint:f"
    assert split_key({"dataset_version": "a"}) == "dataset:a"
    assert split_key({}) == UNKNOWN_SPLIT


def test_unknown_splits_are_never_the_same_split(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    for f1 in (0.5, 0.9):
        folder = export(f1)
        (folder / "assets" / "lineage.json").write_text('{"backbone": "x"}')
        last = register_candidate(registry, folder, MODEL)
    assert registry.info(MODEL, 2).metadata["test_split"] == UNKNOWN_SPLIT
    assert last.alias == "challenger" and "scored on unknown" in last.decision.reason


def test_force_overrides_the_gate_and_is_recorded(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    register_candidate(registry, export(0.8), MODEL)
    forced = register_candidate(registry, export(0.1), MODEL, force=True)
    assert (forced.alias, forced.decision.forced) == ("champion", True)
    last = registry.aliases(MODEL)["history"][-1]
    assert last["forced"] is True and last["reason"].startswith("forced over the gate: ")


def test_promote_challenger_later_clears_it(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    register_candidate(registry, export(0.5, "ds-1"), MODEL)
    register_candidate(registry, export(0.6, "ds-2"), MODEL)
    assert registry.aliases(MODEL)["aliases"] == {"champion": 1, "challenger": 2}
    decision = promote(registry, MODEL, 2, champion_score=0.45)
    assert decision.promoted
    assert registry.aliases(MODEL)["aliases"] == {"champion": 2}


def test_promoting_the_champion_again_changes_nothing(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    register_candidate(registry, export(0.5), MODEL)
    aliases_file = tmp_path / "r" / MODEL / "aliases.json"
    before = aliases_file.read_bytes()
    decision = promote(registry, MODEL, 1, margin=0.9)
    assert (decision.promoted, decision.reason) == (True, "v1 is already champion")
    assert aliases_file.read_bytes() == before


def test_awaiting_approval_leaves_the_candidate_challenger(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    register_candidate(registry, export(0.5), MODEL)
    held = register_candidate(registry, export(0.9), MODEL, awaiting_approval=True)
    assert (held.version, held.alias, held.decision.promoted) == (2, "challenger", False)
    assert registry.aliases(MODEL)["aliases"] == {"champion": 1, "challenger": 2}
    assert registry.aliases(MODEL)["history"][-1]["reason"] == "awaiting approval"


def test_approval_goes_through_the_gate_and_is_recorded(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    register_candidate(registry, export(0.5), MODEL)
    register_candidate(registry, export(0.4), MODEL, awaiting_approval=True)
    refused = promote(registry, MODEL, 2, approval="looks fine", action="approve")
    assert not refused.promoted and refused.reason.startswith("approved (looks fine); test")
    forced = promote(registry, MODEL, 2, approval="ship it", force=True, action="approve")
    assert forced.promoted and forced.forced
    last = registry.aliases(MODEL)["history"][-2]
    assert (last["alias"], last["forced"], last["action"]) == ("champion", True, "approve")
    assert "approved (ship it); forced over the gate" in last["reason"]


def test_rejection_keeps_the_challenger_with_the_reason(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    register_candidate(registry, export(0.5), MODEL, awaiting_approval=True)
    hold_as_challenger(registry, MODEL, 1, "rejected by reviewer: blurry", action="reject")
    state = registry.aliases(MODEL)
    assert state["aliases"] == {"challenger": 1}
    assert state["history"][-1]["reason"] == "rejected by reviewer: blurry"


def with_test_metrics(folder: Path, per_label: dict[str, tuple[int, int]], records: int = 100,
                      f1: float = 0.5, interval: tuple[float, float] = (0.45, 0.55)) -> Path:
    """Give an export per-genre test metrics: {genre: (support, posters predicted)}."""
    test = {"macro_f1": f1, "records": records, "macro_f1_ci95": list(interval),
            "per_label_tuned": {name: {"f1": f1, "support": support, "predicted": predicted}
                                for name, (support, predicted) in per_label.items()}}
    (folder / "assets" / "metrics.json").write_text(json.dumps({"val": {"macro_f1": f1},
                                                                "test": test}))
    return folder


def test_a_first_version_predicting_most_genres_for_every_poster_is_challenger(
        export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    degenerate = with_test_metrics(export(0.5), {"Drama": (40, 100), "Horror": (10, 99),
                                                 "Comedy": (30, 20), "War": (8, 5)})
    held = register_candidate(registry, degenerate, MODEL)
    assert (held.alias, held.decision.promoted) == ("challenger", False)
    [check] = held.decision.failed_checks
    assert check.startswith("2 of 4 genres predicted for every test poster (Drama, Horror)")
    assert held.decision.reason == f"failed guardrails: {check}"
    assert registry.aliases(MODEL)["aliases"] == {"challenger": 1}
    one_of_four = with_test_metrics(export(0.5), {"Drama": (40, 100), "Horror": (10, 50),
                                                  "Comedy": (30, 20), "War": (8, 5)})
    assert register_candidate(registry, one_of_four, MODEL).alias == "champion"  # 1/4 <= 0.25


def test_minimum_macro_f1_and_test_support_are_checked_and_force_overrides(
        export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    weak = with_test_metrics(export(0.1), {"Drama": (40, 30), "War": (3, 2)}, f1=0.1)
    held = register_candidate(registry, weak, MODEL)
    assert held.alias == "challenger" and held.decision.failed_checks == (
        "test macro F1 0.1000 < minimum 0.2", "test support below 5 posters: War 3")
    assert register_candidate(registry, weak, MODEL, guardrails=GUARDRAILS_OFF).reused
    lenient = Guardrails(min_macro_f1=0.05, min_test_support=3)
    assert promote(registry, MODEL, 1, guardrails=lenient).promoted
    strict = with_test_metrics(export(0.9), {"Drama": (40, 30)}, f1=0.9)
    forced = register_candidate(registry, strict, MODEL, force=True,
                                guardrails=Guardrails(min_macro_f1=0.95))
    assert (forced.alias, forced.decision.forced) == ("champion", True)
    assert forced.decision.reason.startswith("forced over the gate: failed guardrails: ")


def test_approval_does_not_bypass_the_guardrails(export: Export, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    weak = with_test_metrics(export(0.1), {"Drama": (40, 30)}, f1=0.1)
    register_candidate(registry, weak, MODEL, awaiting_approval=True)
    approved = promote(registry, MODEL, 1, approval="fine", action="approve")
    assert not approved.promoted and "failed guardrails: test macro F1 0.1000" in approved.reason


def test_a_test_split_too_small_for_the_margin_is_a_warning(export: Export,
                                                           tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    register_candidate(registry, export(0.5), MODEL)
    noisy = with_test_metrics(export(0.6), {"Drama": (40, 30)}, f1=0.6, interval=(0.5, 0.7))
    r = register_candidate(registry, noisy, MODEL, margin=0.02)
    assert r.alias == "champion"  # a warning decides nothing
    assert r.decision.warnings == ("the test split (100 posters) is too small for the margin: "
                                   "test macro F1's 95% interval is +-0.1000, wider than the "
                                   "margin 0.0200",)
    sure = with_test_metrics(export(0.7), {"Drama": (40, 30)}, f1=0.7, interval=(0.69, 0.71))
    assert register_candidate(registry, sure, MODEL, margin=0.02).decision.warnings == ()
