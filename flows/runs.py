"""Run the retrain flow in-process and summarise what each stage did (for `run` and `demo`).

A deterministic failure (bad input or settings: a catalog check, a missing column, a
damaged shard) fails the flow run in Prefect as any error does, but without its stack:
Prefect would print it once per task and flow it passes through. Each run's "Finished in
state Failed(<message>)" line remains. Unexpected errors keep their tracebacks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from flows.config import RetrainConfig
    from flows.retrain import RetrainResult


@dataclass(frozen=True)
class RunSummary:
    """One flow run: its id and final state, each task's state, the result or the error."""

    flow_run_id: str
    state: str
    stages: list[tuple[str, str]] = field(default_factory=list)
    result: RetrainResult | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (paths, metrics, stage states)."""
        out: dict[str, Any] = {"flow_run_id": self.flow_run_id, "state": self.state,
                               "stages": [list(s) for s in self.stages], "error": self.error}
        if self.result is not None:
            ingest, train = self.result.ingest, self.result.train
            out.update(
                catalog_dir=ingest.catalog_dir, data_docs=ingest.data_docs,
                dataset_dir=ingest.dataset_dir, fetch_outcomes=ingest.fetch_outcomes,
                model_dir=train.model_dir, report_dir=train.report_dir,
                registry_path=train.registry_path, version=train.version, alias=train.alias,
                decision=train.decision.reason, model_card=train.card_path,
                new_version=not (train.reused or self._registered_before()),
                val_macro_f1=train.metrics.get("val", {}).get("macro_f1"),
                test_macro_f1=train.metrics.get("test", {}).get("macro_f1"),
            )
        return out

    def _registered_before(self) -> bool:
        """True when the register task was cached: an earlier run registered this model."""
        return any(name.startswith("register-model") and state == "Cached"
                   for name, state in self.stages)


PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


def deterministic_errors() -> tuple[type[BaseException], ...]:
    """Failures that running again cannot fix: the input or the settings are wrong."""
    from pydantic import ValidationError

    from storage.datasets import ShardIntegrityError
    from tasks.backbone import BackboneUnavailableError
    from tasks.catalog import CatalogCheckError
    from tasks.catalog_csv import CatalogReadError, CatalogSchemaError
    from tasks.evaluate import LabelMismatchError
    from tasks.shards import DatasetCheckError

    return (CatalogCheckError, CatalogReadError, CatalogSchemaError, DatasetCheckError,
            ShardIntegrityError, LabelMismatchError, BackboneUnavailableError, ValidationError)


class MessageOnly(logging.Filter):
    """Drops Prefect's exception records (traceback included) for deterministic failures.

    They repeat what the run's "Finished in state Failed(...)" line says, plus the stack.
    """

    def __init__(self, errors: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record carrying a deterministic exception; True for all others."""
        return not (record.exc_info and isinstance(record.exc_info[1], self.errors))


@contextmanager
def tracebacks_for_unexpected_errors_only() -> Iterator[None]:
    """While a flow runs, Prefect's run loggers log deterministic failures as one line."""
    quiet = MessageOnly(deterministic_errors())
    loggers = [logging.getLogger(name) for name in PREFECT_RUN_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def run_retrain(config: RetrainConfig) -> RunSummary:
    """Run `retrain` on the current Prefect API (the ephemeral server when none is set)."""
    from flows.retrain import retrain_flow

    with tracebacks_for_unexpected_errors_only():
        state = retrain_flow(config, return_state=True)
    run_id = state.state_details.flow_run_id
    stages = stage_states(run_id) if run_id else []
    if state.is_completed():
        return RunSummary(str(run_id), str(state.name), stages, result=state.result())
    return RunSummary(str(run_id), str(state.name), stages, error=state.message)


def task_runs(flow_run_id: UUID) -> list[Any]:
    """Every task run of a flow run and of its subflows, by expected start time."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        ids, frontier = [flow_run_id], [flow_run_id]
        while frontier:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            frontier = [child.id for child in children]
            ids += frontier
        return list(client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        ))


def stage_states(flow_run_id: UUID) -> list[tuple[str, str]]:
    """(task run name, state name) of every task in a flow run and its subflows, in order."""
    runs = task_runs(flow_run_id)
    return [(run.name, str(run.state.name) if run.state else "?") for run in runs]
