"""Prefect tasks of the train stages: embed, fit, evaluate, export, gate, register, card,
review, report.

Each task calls one stage function from `tasks/` (or the registry) and passes only paths and
small result dataclasses across task boundaries; what is large (features, trained weights,
the report, the SavedModel) is on the storage root, so the next task may run on another
machine. The stage tasks are cached on their inputs' content (the dataset's manifest, the
backbone, the views, the recipe, the previous task's output folder), so an unchanged
retrain finds them all cached and a killed one resumes after its last finished task. Each
stage function verifies a shard once (`storage.shard_reader.verify_once`). Only the export's
upload and the registry write retry; embedding, fitting and evaluation fail deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from flows.artifacts import ReportLinks, publish_report_artifact, report_markdown
from flows.caching import IO_RETRIES, StageCache, dataset_digest, missing_outputs
from flows.events import evented_registry
from storage.fits import FIT_JSON
from storage.fs import atomic_write_text, exists, join
from storage.layout import CATALOGS, POSTERS, RunFolder
from storage.model_export import SAVED_MODEL
from storage.run_ids import new_run_id

if TYPE_CHECKING:
    from flows.approval import Review
    from storage.fits import SavedFit
    from tasks.embed import EmbedResult
    from tasks.evaluate import Evaluation
    from tasks.images import View
    from tasks.model_card import CardData, PosterExample
    from tasks.promotion import Guardrails, Registration
    from tasks.train import TrainResult
    from tasks.train_config import TrainConfig


@dataclass(frozen=True)
class ChampionScore:
    """The champion's metrics on the candidate's test split (`evaluate_saved_model`)."""

    version: int
    metrics: dict[str, Any]

    @property
    def macro_f1(self) -> float:
        return float(self.metrics["macro_f1"])


@dataclass(frozen=True)
class ModelCard:
    """A written card: its path beside the version, and what the artifact and form show."""

    path: str
    data: CardData


def _backbone_digest(backbone: str) -> str:
    """Cache key of a backbone: its id (a local folder's content hash, else its handle)."""
    from tasks.backbone import backbone_id

    return backbone_id(backbone)


def _view_folders(result: EmbedResult) -> list[str]:
    """The embedding cache folders an embed result names, one per view."""
    return [join(result.cache_dir, view) for view in result.views]


@task(name="embed-posters", task_run_name="embed-posters-{part}-of-{parts}", persist_result=True,
      cache_policy=StageCache(content={"dataset_dir": dataset_digest, "backbone": _backbone_digest},
                              stale=missing_outputs(_view_folders)))
def embed_posters(dataset_dir: str, embeddings_root: str, backbone: str, batch_size: int,
                  image_size: int, views: list[View], part: int = 0, parts: int = 1
                  ) -> EmbedResult:
    """Compute backbone features of each view for the part's posters the cache lacks (once
    each; `tasks.embed.in_part`)."""
    from tasks.embed import embed_dataset

    result = embed_dataset(dataset_dir, embeddings_root, backbone, views=views,
                           batch_size=batch_size, image_size=image_size, part=part, parts=parts)
    get_run_logger().info("embeddings of part %d of %d: %d new, %d reused (%s)", part + 1,
                          parts, result.embedded, result.reused, result.cache_dir)
    return result


def _features(embedded: EmbedResult) -> str:
    """What the fit reads from the embedding cache: the backbone's features of these views."""
    return f"{embedded.backbone_id}:{','.join(embedded.views)}"


def _run_folder(saved: SavedFit) -> RunFolder:
    """The run folder holding the fit (`<runs>/<run>/fit`), its report and its model."""
    return RunFolder(saved.fit_dir.rstrip("/").rsplit("/", 1)[0])


@task(name="fit-model", persist_result=True,
      cache_policy=StageCache(content={"dataset_dir": dataset_digest, "embedded": _features},
                              stale=missing_outputs(lambda r: [join(r.fit_dir, FIT_JSON)])))
def fit_genre_model(dataset_dir: str, embedded: EmbedResult, runs_root: str,
                    config: TrainConfig) -> SavedFit:
    """Fit the recipe's head(s) on the cached features into a new run's `fit/` folder."""
    from tasks.train import fit_model

    run = RunFolder(join(runs_root, new_run_id(dataset_dir.rstrip("/").rsplit("/", 1)[-1][:16])))
    saved = fit_model(dataset_dir, run.fit_dir, config, backbone_id=embedded.backbone_id)
    get_run_logger().info("fitted %s: val macro F1 %.4f", saved.fit_dir, saved.val_macro_f1)
    return saved


def _fit_folder(saved: SavedFit) -> str:
    """Cache key of a fit: its folder (each fit writes a new run folder)."""
    return saved.fit_dir


def _report_folder(evaluation: Evaluation) -> str:
    """Cache key of an evaluation: its report folder (inside the fit's run folder)."""
    return evaluation.report_dir


@task(name="evaluate-model", persist_result=True,
      cache_policy=StageCache(content={"dataset_dir": dataset_digest, "fit": _fit_folder},
                              stale=missing_outputs(lambda r: [join(r.report_dir, "metrics.json"),
                                                               join(r.report_dir, "sweep.json")])))
def evaluate_genre_model(dataset_dir: str, fit: SavedFit, config: TrainConfig) -> Evaluation:
    """Tune thresholds on val, score test once, write the run's report."""
    from tasks.evaluate import evaluate_fit

    evaluation = evaluate_fit(dataset_dir, fit, _run_folder(fit).report_dir, config)
    get_run_logger().info("report %s: val macro F1 %.4f, test macro F1 %.4f",
                          evaluation.report_dir, evaluation.metrics["val"]["macro_f1"],
                          evaluation.metrics["test"]["macro_f1"])
    return evaluation


@task(name="export-model", persist_result=True, **IO_RETRIES,
      cache_policy=StageCache(content={"fit": _fit_folder, "evaluation": _report_folder},
                              stale=missing_outputs(lambda r: [join(r.model_dir, SAVED_MODEL)])))
def export_genre_model(fit: SavedFit, evaluation: Evaluation, config: TrainConfig
                       ) -> TrainResult:
    """Export the fitted model as the run's SavedModel (staged, then renamed or uploaded).

    Retried: the upload to an object store is IO. A model a killed run finished exporting
    is kept (models are immutable).
    """
    from tasks.export import export_fit
    from tasks.train import TrainResult

    model_dir = _run_folder(fit).model_dir
    if exists(join(model_dir, SAVED_MODEL)):
        get_run_logger().info("%s was exported by an earlier run: kept", model_dir)
    else:
        export_fit(fit, evaluation, model_dir, config, flow_run_id=flow_run.id)
        get_run_logger().info("exported %s", model_dir)
    return TrainResult.of(model_dir, fit, evaluation)


@task(name="score-champion")
def score_champion(registry_root: str, model_name: str, dataset_dir: str) -> ChampionScore | None:
    """The champion's test metrics on the candidate's test split (None without a champion)."""
    from storage.aliases import CHAMPION
    from storage.registry import NotFoundError, Registry
    from tasks.evaluate import evaluate_saved_model

    registry = Registry(registry_root)
    try:
        version = registry.resolve(model_name, CHAMPION)
        champion = registry.local_path(model_name, version)  # TF loads local folders only
    except NotFoundError:
        get_run_logger().info("no champion for %s yet", model_name)
        return None
    score = ChampionScore(version, evaluate_saved_model(champion, dataset_dir, split="test"))
    get_run_logger().info("champion %s scores test macro F1 %.4f on %s", champion,
                          score.macro_f1, dataset_dir)
    return score


@task(name="register-model", persist_result=True, **IO_RETRIES,
      cache_policy=StageCache(stale=missing_outputs(lambda r: [r.path]),
                              ignore=("margin", "force", "guardrails", "champion",
                                      "awaiting_approval")))
def register_model(model_dir: str, registry_root: str, model_name: str, margin: float,
                   force: bool, guardrails: Guardrails, champion: ChampionScore | None,
                   awaiting_approval: bool = False) -> Registration:
    """Add the exported model as a new registry version; apply the guardrails and the gate.

    With `awaiting_approval` the version becomes challenger and the gate waits for the
    review. Cached on the model folder alone: a rerun never registers the same model twice.
    """
    from tasks.promotion import register_candidate

    reg = register_candidate(
        evented_registry(registry_root), model_dir, model_name, margin=margin,
        champion_score=champion.macro_f1 if champion else None, force=force,
        guardrails=guardrails, flow_run_id=flow_run.id, awaiting_approval=awaiting_approval,
    )
    get_run_logger().info("registered %s v%d as %s: %s", model_name, reg.version, reg.alias,
                          reg.decision.reason)
    return reg


@task(name="pick-card-posters")
def pick_card_posters(trained: TrainResult, dataset_dir: str
                      ) -> tuple[list[PosterExample], list[PosterExample]]:
    """The trained model's best- and worst-predicted test posters, for its card."""
    from tasks.model_card import collect_posters

    return collect_posters(trained.report_dir, dataset_dir)


@task(name="write-model-card", **IO_RETRIES)
def write_model_card(trained: TrainResult, registration: Registration,
                     champion: ChampionScore | None, posters: tuple[list, list],
                     dataset_dir: str, registry_root: str, data_root: str, notes: list[str],
                     status: str = "") -> ModelCard:
    """Render the version's card and store it beside the version (`storage.cards`)."""
    from storage.cards import write_card
    from storage.registry import Registry
    from tasks.model_card import assemble_card, render_card_html

    info = Registry(registry_root).info(registration.model, registration.version)
    data = assemble_card(
        info, registration, trained.report_dir, dataset_dir, join(data_root, CATALOGS),
        join(data_root, POSTERS), champion=(champion.version, champion.metrics) if champion
        else None, posters=posters, notes=notes, status=status)
    path = write_card(registry_root, registration.model, registration.version,
                      render_card_html(data), data.lineage)
    get_run_logger().info("model card: %s", path)
    return ModelCard(path, data)


@task(name="apply-review", **IO_RETRIES)
def apply_review(review: Review | None, registration: Registration, registry_root: str,
                 margin: float, force: bool, guardrails: Guardrails,
                 champion: ChampionScore | None) -> Registration:
    """Approved: the gate decides (forced if asked); rejected: stays challenger, with the reason."""
    from tasks.promotion import apply_review as decide_review

    if review is None:
        return registration
    reviewed = decide_review(
        evented_registry(registry_root), registration, approve=review.approve,
        reason=review.reason, force=force or review.force, margin=margin,
        champion_score=champion.macro_f1 if champion else None, guardrails=guardrails,
        flow_run_id=flow_run.id)
    get_run_logger().info("review of %s v%d: %s", reviewed.model, reviewed.version,
                          reviewed.decision.reason)
    return reviewed


@task(name="publish-report")
def publish_report(card: ModelCard, registration: Registration, links: ReportLinks) -> str:
    """The card's tables and figures as the `model-report` artifact and `report/summary.md`."""
    markdown = report_markdown(card.data, card.path, registration.path, links)
    atomic_write_text(join(links.report_dir, "summary.md"), markdown)
    publish_report_artifact(markdown, registration)
    return markdown
