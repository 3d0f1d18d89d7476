"""The train flow: embed -> fit -> evaluate -> export -> score champion -> register -> card
-> (review) -> report."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, unmapped

from flows.approval import request_review
from flows.artifacts import report_links
from flows.config import TrainFlowConfig
from flows.runners import task_runner
from flows.train_tasks import (
    apply_review,
    embed_posters,
    evaluate_genre_model,
    export_genre_model,
    fit_genre_model,
    pick_card_posters,
    publish_report,
    register_model,
    score_champion,
    write_model_card,
)
from storage.aliases import CHALLENGER
from storage.layout import CATALOGS, RUNS
from tasks.embed import EmbedResult, merge_results
from tasks.model_card import card_markdown
from tasks.promotion import GateDecision
from tasks.train_config import TrainConfig


@dataclass(frozen=True)
class TrainFlowResult:
    """Where the trained model, its report, its card and its registry version are."""

    model_dir: str
    report_dir: str
    registry_path: str
    version: int
    alias: str
    metrics: dict
    card_path: str
    decision: GateDecision
    reused: bool = False  # the registry already held this model: nothing new registered


@flow(name="embed")
def embed_flow(dataset_dir: str, train_config: TrainConfig, parts: int) -> EmbedResult:
    """Embed the dataset's posters as `parts` concurrent parts (by content hash), each writing
    cache parts of its own on the shared root."""
    embedded = embed_posters.map(
        unmapped(dataset_dir), unmapped(train_config.cache_root), unmapped(train_config.backbone),
        unmapped(train_config.embed_batch_size), unmapped(train_config.image_size),
        unmapped(train_config.embedded_views()), list(range(parts)), unmapped(parts))
    return merge_results(embedded.result())


@flow(name="train")
def train_flow(config: TrainFlowConfig) -> TrainFlowResult:
    """Embed (over parts), fit, evaluate and export (each its own cached task), register
    through the gate (or a reviewer), card."""
    storage, reg = config.storage, config.registry
    registry_root, train_config = config.registry_root(), config.resolved_train()
    embedded = embed_flow.with_options(task_runner=task_runner(config.scale))(
        config.dataset_dir, train_config, config.scale.embed_parts)
    fit = fit_genre_model(config.dataset_dir, embedded, storage.path(RUNS), train_config)
    evaluation = evaluate_genre_model(config.dataset_dir, fit, train_config)
    trained = export_genre_model(fit, evaluation, train_config)
    champion = score_champion(registry_root, reg.model_name, config.dataset_dir)
    review_wanted = reg.approval == "required"
    registration = register_model(trained.model_dir, registry_root, reg.model_name,
                                  reg.margin, reg.force, reg.guardrails, champion, review_wanted)
    posters = pick_card_posters(trained, config.dataset_dir)
    card_inputs = (champion, posters, config.dataset_dir, registry_root, storage.data_root,
                   config.notes)
    links = report_links(trained, config.dataset_dir, storage.path(CATALOGS))
    if review_wanted and registration.alias == CHALLENGER:
        card = write_model_card(trained, registration, *card_inputs, status="awaiting approval")
        publish_report(card, registration, links)  # the reviewer reads it while the run waits
        review = request_review(card_markdown(card.data, card.path), reg.approval_timeout_s)
        registration = apply_review(review, registration, registry_root, reg.margin, reg.force,
                                    reg.guardrails, champion)
        status = "" if review else "challenger: approval timed out"
        card = write_model_card(trained, registration, *card_inputs, status=status)
    else:
        card = write_model_card(trained, registration, *card_inputs)
    publish_report(card, registration, links)
    return TrainFlowResult(trained.model_dir, trained.report_dir, registration.path,
                           registration.version, registration.alias, trained.metrics, card.path,
                           registration.decision, registration.reused)
