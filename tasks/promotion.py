"""The promotion gate: which registered version becomes `champion`, and why.

A candidate becomes champion only if its test macro F1 is at least the champion's plus a
margin, both measured on the same test split (the same `test_split_fingerprint`, else the
same dataset version). When the champion was scored on another split, the caller may pass
the champion's score on the candidate's split (the train flow computes it); without it the
two are not compared. A refused candidate becomes `challenger`; `force` promotes over the
gate, and the decision, its reason and `force` are recorded in the alias history.

The registry (`storage.registry`) publishes versions and moves aliases; this module decides,
in `Registry.update_aliases` (a lock locally, a compare-and-swap on object stores), so that
concurrent registrations are gated one at a time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

from storage.layout import DEFAULT_MODEL_NAME
from storage.registry import (
    CHALLENGER,
    CHAMPION,
    AliasChanges,
    Registry,
    VersionInfo,
    read_export,
)

log = logging.getLogger(__name__)

UNKNOWN_SPLIT = "unknown"  # lineage without a dataset version: never "the same split"


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate becomes champion, and why (recorded in the alias history)."""

    promoted: bool
    reason: str
    candidate_f1: float
    baseline_f1: float | None = None
    champion: int | None = None
    forced: bool = False


@dataclass(frozen=True)
class Registration:
    """What `register_candidate` did: the new version, its folder and the gate's decision."""

    model: str
    version: int
    path: str
    alias: str
    decision: GateDecision


def split_key(lineage: dict[str, Any]) -> str:
    """Identity of the test split a model was scored on: fingerprint if given, else dataset."""
    if lineage.get("test_split_fingerprint"):
        return f"fingerprint:{lineage['test_split_fingerprint']}"
    if lineage.get("dataset_version"):
        return f"dataset:{lineage['dataset_version']}"
    return UNKNOWN_SPLIT


def gate(
    candidate: VersionInfo,
    champion: VersionInfo | None,
    margin: float,
    champion_score: float | None = None,
) -> GateDecision:
    """Promote when candidate test macro F1 >= champion's (on the same split) + margin."""
    f1 = candidate.test_macro_f1
    if champion is None:
        return GateDecision(True, "first version: no champion yet", f1)
    if champion.test_split == candidate.test_split and candidate.test_split != UNKNOWN_SPLIT:
        baseline, where = champion.test_macro_f1, f"on the same test split ({candidate.test_split})"
    elif champion_score is not None:
        baseline = champion_score
        where = f"(given) on the candidate's test split ({candidate.test_split})"
    else:
        return GateDecision(
            False,
            f"not compared: champion v{champion.version} was scored on {champion.test_split}, "
            f"the candidate on {candidate.test_split}; pass the champion's score on the "
            "candidate's split (champion_score) to gate it",
            f1,
            champion=champion.version,
        )
    promoted = f1 >= baseline + margin
    op = ">=" if promoted else "<"
    reason = (
        f"test macro F1 {f1:.4f} {op} champion v{champion.version} {baseline:.4f} "
        f"+ margin {margin:.4f} {where}"
    )
    return GateDecision(promoted, reason, f1, baseline, champion.version)


def promote(
    registry: Registry,
    model: str,
    version: int,
    *,
    margin: float = 0.0,
    champion_score: float | None = None,
    force: bool = False,
    flow_run_id: str | None = None,
    action: str = "promote",
    approval: str | None = None,
) -> GateDecision:
    """Gate a verified version against the champion; on refusal it becomes challenger.

    `approval` is a reviewer's reason for approving (recorded before the gate's reason):
    approval lets the gate decide, it does not bypass it; only `force` does.
    """
    candidate = registry.verified(model, version)

    def decide(aliases: AliasChanges) -> GateDecision:  # re-run if another writer got first
        current = aliases.get(CHAMPION)
        if current == version:
            return GateDecision(True, f"v{version} is already champion", candidate.test_macro_f1)
        champion = registry.info(model, current) if current is not None else None
        decision = gate(candidate, champion, margin, champion_score)
        if force and not decision.promoted:
            reason = f"forced over the gate: {decision.reason}"
            decision = replace(decision, promoted=True, forced=True, reason=reason)
        if approval is not None:
            decision = replace(decision, reason=f"approved ({approval or 'no reason given'}); "
                               f"{decision.reason}")
        entry: dict[str, Any] = {
            "action": action,
            "forced": decision.forced,
            "reason": decision.reason,
            "flow_run_id": flow_run_id,
        }
        if decision.promoted:
            aliases.move(CHAMPION, version, **entry)
            if aliases.get(CHALLENGER) == version:
                aliases.move(CHALLENGER, None, **entry)
        else:
            aliases.move(CHALLENGER, version, **entry)
        return decision

    decision = registry.update_aliases(model, decide)
    log.info("%s v%d: %s", model, version, decision.reason)
    return decision


def hold_as_challenger(
    registry: Registry,
    model: str,
    version: int,
    reason: str,
    *,
    action: str = "register",
    flow_run_id: str | None = None,
) -> GateDecision:
    """Make (or keep) a version challenger without gating it, e.g. until a reviewer decides."""
    candidate = registry.verified(model, version)
    with registry.editing_aliases(model) as aliases:
        aliases.move(CHALLENGER, version, action=action, reason=reason, flow_run_id=flow_run_id)
    log.info("%s v%d challenger: %s", model, version, reason)
    return GateDecision(False, reason, candidate.test_macro_f1)


def register_candidate(
    registry: Registry,
    model_dir: str | os.PathLike[str],
    model: str = DEFAULT_MODEL_NAME,
    *,
    margin: float = 0.0,
    champion_score: float | None = None,
    force: bool = False,
    flow_run_id: str | None = None,
    awaiting_approval: bool = False,
) -> Registration:
    """Publish an exported model as the registry's next version, then gate it.

    `awaiting_approval` leaves it challenger instead: the gate runs once a reviewer approves.
    """
    export = read_export(model_dir)
    published = registry.publish(
        export, model, test_split=split_key(export.lineage), flow_run_id=flow_run_id
    )
    if awaiting_approval:
        decision = hold_as_challenger(registry, model, published.version, "awaiting approval",
                                      flow_run_id=flow_run_id)
        return Registration(model, published.version, published.path, CHALLENGER, decision)
    decision = promote(
        registry,
        model,
        published.version,
        margin=margin,
        champion_score=champion_score,
        force=force,
        flow_run_id=flow_run_id,
        action="register",
    )
    alias = CHAMPION if decision.promoted else CHALLENGER
    return Registration(model, published.version, published.path, alias, decision)
