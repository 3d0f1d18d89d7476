"""The promotion gate: which registered version becomes `champion`, and why.

A candidate becomes champion only if its test macro F1 beats the champion's by at least a
margin (with margin 0: strictly; a tie never replaces the champion), both measured on the
same test split (the same `test_split_fingerprint`, else the
same dataset version). When the champion was scored on another split, the caller may pass
the champion's score on the candidate's split (the train flow computes it); without it the
two are not compared. Before any comparison a candidate must pass the absolute checks of
`Guardrails` (minimum macro F1, genres predicted for every poster, test support per genre),
the first version too: one that fails is held as `challenger`. A refused candidate becomes
`challenger`; `force` promotes over the gate and the guardrails, and the decision, its
reason and `force` are recorded in the alias history.

The registry (`storage.registry`) publishes versions and moves aliases; this module decides,
in `Registry.update_aliases` (a lock locally, a compare-and-swap on object stores), so that
concurrent registrations are gated one at a time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from storage.aliases import CHALLENGER, CHAMPION, AliasChanges
from storage.layout import DEFAULT_MODEL_NAME
from storage.model_export import read_export
from storage.registry import NotFoundError, Registry, VersionInfo

log = logging.getLogger(__name__)

UNKNOWN_SPLIT = "unknown"  # lineage without a dataset version: never "the same split"
# A genre predicted for this share of test posters or more says nothing about the poster.
ALWAYS_PREDICTED_RATE = 0.99


class Guardrails(BaseModel):
    """Absolute checks on a candidate's test metrics, applied before the gate compares it.

    Checks whose metrics an export lacks (an old export) are skipped, not failed.
    """

    model_config = ConfigDict(extra="forbid")

    min_macro_f1: float = Field(
        0.2, ge=0.0, le=1.0, description="A candidate needs at least this test macro F1 @0.5.")
    max_always_predicted: float = Field(
        0.25, ge=0.0, le=1.0, description="At most this share of the genres may be predicted "
        "(at their tuned thresholds) for 99% or more of the test posters.")
    min_test_support: int = Field(
        5, ge=0, description="Every genre needs at least this many test posters (fewer: its "
        "F1 is noise).")

    def failures(self, metrics: dict[str, Any]) -> list[str]:
        """The checks a candidate's metrics fail, one line each."""
        test = metrics.get("test", {})
        failed = []
        if test.get("macro_f1", 1.0) < self.min_macro_f1:
            failed.append(f"test macro F1 {test['macro_f1']:.4f} < minimum {self.min_macro_f1}")
        per_label, records = test.get("per_label_tuned") or {}, test.get("records") or 0
        always = [name for name, s in per_label.items()
                  if "predicted" in s and records and s["predicted"] >= ALWAYS_PREDICTED_RATE
                  * records]
        if per_label and len(always) > self.max_always_predicted * len(per_label):
            failed.append(f"{len(always)} of {len(per_label)} genres predicted for every test "
                          f"poster ({', '.join(always)}) > maximum share "
                          f"{self.max_always_predicted}")
        thin = [f"{name} {s['support']}" for name, s in per_label.items()
                if s.get("support", self.min_test_support) < self.min_test_support]
        if thin:
            failed.append(f"test support below {self.min_test_support} posters: "
                          f"{', '.join(thin)}")
        return failed


GUARDRAILS_OFF = Guardrails(min_macro_f1=0.0, max_always_predicted=1.0, min_test_support=0)


def margin_warnings(metrics: dict[str, Any], margin: float) -> list[str]:
    """A warning when the test split is too small to tell a difference of `margin` from noise."""
    test = metrics.get("test", {})
    interval = test.get("macro_f1_ci95")
    if not interval:
        return []
    half = (interval[1] - interval[0]) / 2
    if half <= margin:
        return []
    return [f"the test split ({test.get('records', '?')} posters) is too small for the margin: "
            f"test macro F1's 95% interval is +-{half:.4f}, wider than the margin {margin:.4f}"]


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate becomes champion, and why (recorded in the alias history)."""

    promoted: bool
    reason: str
    candidate_f1: float
    baseline_f1: float | None = None
    champion: int | None = None
    forced: bool = False
    failed_checks: tuple[str, ...] = ()  # `Guardrails.failures`: fails the candidate
    warnings: tuple[str, ...] = ()  # `margin_warnings`: shown, decides nothing


@dataclass(frozen=True)
class Registration:
    """What `register_candidate` did: the new version, its folder and the gate's decision."""

    model: str
    version: int
    path: str
    alias: str
    decision: GateDecision
    reused: bool = False  # the registry already held this export: nothing new registered


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
    """Promote when candidate test macro F1 beats the champion's (on the same split): by at
    least `margin`, or with margin 0 strictly."""
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
    # Strictly better (a tie, e.g. an identical retrain, changes nothing), or by the margin.
    promoted = f1 >= baseline + margin if margin > 0 else f1 > baseline
    op = (">=" if margin > 0 else ">") if promoted else ("<" if margin > 0 else "<=")
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
    guardrails: Guardrails | None = None,
    flow_run_id: str | None = None,
    action: str = "promote",
    approval: str | None = None,
) -> GateDecision:
    """Check a verified version against the guardrails (default `Guardrails()`), then gate
    it against the champion; on refusal it becomes challenger.

    `approval` is a reviewer's reason for approving (recorded before the gate's reason):
    approval lets the gate decide, it does not bypass it; only `force` does.
    """
    candidate = registry.verified(model, version)
    metrics = candidate.metadata.get("metrics", {})
    failed = tuple((guardrails or Guardrails()).failures(metrics))

    def decide(aliases: AliasChanges) -> GateDecision:  # re-run if another writer got first
        current = aliases.get(CHAMPION)
        if current == version:
            return GateDecision(True, f"v{version} is already champion", candidate.test_macro_f1)
        champion = registry.info(model, current) if current is not None else None
        decision = gate(candidate, champion, margin, champion_score)
        if champion is not None:
            decision = replace(decision, warnings=tuple(margin_warnings(metrics, margin)))
        if failed:
            decision = replace(decision, promoted=False, failed_checks=failed,
                               reason=f"failed guardrails: {'; '.join(failed)}")
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
    registry.update_aliases(model, lambda aliases: aliases.move(
        CHALLENGER, version, action=action, reason=reason, flow_run_id=flow_run_id))
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
    guardrails: Guardrails | None = None,
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
    if published.reused:
        return _already_registered(registry, published)
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
        guardrails=guardrails,
        flow_run_id=flow_run_id,
        action="register",
    )
    alias = CHAMPION if decision.promoted else CHALLENGER
    return Registration(model, published.version, published.path, alias, decision)


def _already_registered(registry: Registry, held: VersionInfo) -> Registration:
    """The registration of an export the registry already held: its aliases, untouched."""
    aliases = registry.aliases(held.model)["aliases"]
    alias = next((a for a in (CHAMPION, CHALLENGER) if aliases.get(a) == held.version), "")
    reason = f"v{held.version} already holds this export: nothing new registered"
    decision = GateDecision(alias == CHAMPION, reason, held.test_macro_f1)
    return Registration(held.model, held.version, held.path, alias, decision, reused=True)


def apply_review(registry: Registry, registration: Registration, *, approve: bool,
                 reason: str, force: bool = False, margin: float = 0.0,
                 champion_score: float | None = None, guardrails: Guardrails | None = None,
                 flow_run_id: str | None = None) -> Registration:
    """A reviewer's decision on a challenger: approved, the gate decides (forced if asked);
    rejected, it stays challenger with the reviewer's reason."""
    model, version = registration.model, registration.version
    if approve:
        decision = promote(registry, model, version, margin=margin,
                           champion_score=champion_score, force=force, guardrails=guardrails,
                           flow_run_id=flow_run_id, action="approve", approval=reason)
    else:
        decision = hold_as_challenger(
            registry, model, version, f"rejected by reviewer: {reason or 'no reason given'}",
            action="reject", flow_run_id=flow_run_id)
    return replace(registration, alias=CHAMPION if decision.promoted else CHALLENGER,
                   decision=decision)


def set_alias(registry: Registry, model: str, alias: str, version: int, reason: str = "") -> None:
    """Point any alias except champion (moved only by the gate or `rollback`) at a version."""
    if alias == CHAMPION:
        raise ValueError("champion moves only through promote (the gate) or rollback")
    registry.set_alias(model, alias, version, reason=reason)


def rollback_target(aliases: AliasChanges, model: str, to: int | None) -> tuple[int, int]:
    """(current champion, the version to roll back to): `to`, else the latest earlier champion."""
    current = aliases.get(CHAMPION)
    if current is None:
        raise NotFoundError(f"{model} has no champion to roll back")
    target = to
    if target is None:
        former = {h["version"] for h in aliases.history if h["alias"] == CHAMPION}
        earlier = sorted(v for v in former if v is not None and v < current)
        if not earlier:
            raise NotFoundError(f"{model}: no champion before v{current} to roll back to")
        target = earlier[-1]
    if target >= current:
        raise ValueError(f"rollback goes to an earlier version than v{current}, got v{target}")
    return current, target


def rollback(registry: Registry, model: str, to: int | None = None, reason: str = "") -> int:
    """Point champion back at an earlier verified version (default: the latest earlier one)."""

    def edit(aliases: AliasChanges) -> tuple[int, int]:
        current, target = rollback_target(aliases, model, to)
        registry.verified(model, target)
        aliases.move(CHAMPION, target, action="rollback",
                     reason=reason or f"rolled back from v{current}")
        return current, target

    current, target = registry.update_aliases(model, edit)
    log.info("%s champion rolled back from v%d to v%d", model, current, target)
    return target
