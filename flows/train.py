"""The train flow: embed -> fit -> evaluate -> export -> score champion -> register -> card
-> (review) -> report."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows.approval import request_review
from flows.artifacts import report_links
from flows.config import TrainFlowConfig
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
from tasks.model_card import card_markdown


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
    reused: bool = False  # the registry already held this model: nothing new registered


@flow(name="train")
def train_flow(config: TrainFlowConfig) -> TrainFlowResult:
    """Embed, fit, evaluate and export (each its own cached task), register through the gate
    (or a reviewer), card."""
    storage, reg = config.storage, config.registry
    registry_root, train_config = config.registry_root(), config.resolved_train()
    embedded = embed_posters(config.dataset_dir, train_config.cache_root, train_config.backbone,
                             train_config.embed_batch_size, train_config.image_size,
                             train_config.embedded_views())
    fit = fit_genre_model(config.dataset_dir, embedded, storage.path(RUNS), train_config)
    evaluation = evaluate_genre_model(config.dataset_dir, fit, train_config)
    trained = export_genre_model(fit, evaluation, train_config)
    champion = score_champion(registry_root, reg.model_name, config.dataset_dir)
    review_wanted = reg.approval == "required"
    registration = register_model(trained.model_dir, registry_root, reg.model_name,
                                  reg.margin, reg.force, champion, review_wanted)
    posters = pick_card_posters(trained, config.dataset_dir)
    card_inputs = (champion, posters, config.dataset_dir, registry_root, storage.data_root,
                   config.notes)
    if review_wanted and registration.alias == CHALLENGER:
        card = write_model_card(trained, registration, *card_inputs, status="awaiting approval")
        review = request_review(card_markdown(card.data, card.path), reg.approval_timeout_s)
        registration = apply_review(review, registration, registry_root, reg.margin, reg.force,
                                    champion)
        status = "" if review else "challenger: approval timed out"
        card = write_model_card(trained, registration, *card_inputs, status=status)
    else:
        card = write_model_card(trained, registration, *card_inputs)
    publish_report(card, registration, report_links(trained, config.dataset_dir,
                                                     storage.path(CATALOGS)))
    return TrainFlowResult(trained.model_dir, trained.report_dir, registration.path,
                           registration.version, registration.alias, trained.metrics, card.path,
                           registration.reused)
