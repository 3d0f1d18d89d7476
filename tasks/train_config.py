"""The training run's settings: the head's hyperparameters, the recipes, `TrainConfig`.

Its own module, cheap to import (pydantic and the choices' names only), so that the CLI and
the flow configs can read the fields' choices and defaults without loading TensorFlow or the
shard reader.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.backbone import DEFAULT_BACKBONE
from tasks.views import DEFAULT_VIEWS, View

LossName = Literal["soft_f1", "bce", "asl"]
Combine = Literal["concat", "mean"]
Recipe = Literal["default", "tutorial"]
RECIPE_ALIASES = {"seed": "tutorial"}  # earlier names, still accepted
RecipeName = Literal["default", "tutorial", "seed"]  # what a user may type
Distribution = Literal["default", "mirrored", "multi_worker_mirrored"]


class HeadParams(BaseModel):
    """The hyperparameters of one head training run (what the sweep varies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(1e-5, gt=0, description="Adam learning rate (seed: 1e-5).")
    epochs: int = Field(30, ge=1, description="Maximum epochs (seed: 30).")
    hidden: int = Field(1024, ge=0, description="Hidden Dense units; 0 = linear probe.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the features.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (AdamW); "
                                "0 = plain Adam (the seed).")
    loss: LossName = Field("soft_f1", description="'soft_f1' (seed), 'bce' or 'asl' "
                           "(asymmetric loss, Ridnik et al. 2021).")


# The default recipe's head (benchmarks/quality.py, chosen on val): a 100x higher learning
# rate than the seed's, dropout, and early stopping on val picking the epoch.
DEFAULT_HEAD = HeadParams(learning_rate=1e-3, epochs=100, hidden=1024, dropout=0.5)
# The tutorial's method: the squashed poster, one head, fixed hyperparameters, all 30 epochs,
# no selection. `recipe="tutorial"` fills these in for every field not given explicitly.
TUTORIAL_RECIPE: dict[str, Any] = {
    "views": ["full"], "combine": "mean", "flip_augment": False, "view_examples": False,
    "ensemble": 1, "sweep": False, "early_stopping": False, "shuffle_buffer": 1024,
    "head": HeadParams(),
}


class TrainConfig(BaseModel):
    """Backbone, head, model selection and fine-tuning settings of one training run.

    The defaults are the `default` recipe, chosen on the dev posters' val split by
    `benchmarks/quality.py` (BENCHMARKS.md); `recipe="tutorial"` is the tutorial's.
    """

    model_config = ConfigDict(extra="forbid")

    recipe: Recipe = Field(
        "default", description="'default' (the measured best) or 'tutorial' (the tutorial's "
        "method: full view, lr 1e-5, 30 epochs, no selection; 'seed' is accepted for it); "
        "fields given explicitly win.")
    backbone: str = Field(
        DEFAULT_BACKBONE, description="TF Hub URL, Kaggle Models handle or local SavedModel "
        "folder of an image feature-vector model (float32 [b,224,224,3] in [0,1]).")
    embeddings_root: str | None = Field(
        None, description="Embedding cache root; default DATA_ROOT/embeddings (`resolved`).")
    image_size: int = Field(224, ge=32, description="Backbone input size.")
    views: list[View] = Field(
        list(DEFAULT_VIEWS), min_length=1,
        description="Views of each poster the model sees, each embedded once: 'full' (the "
        "whole poster squashed to a square, the seed), 'top'/'bottom' (its first/last "
        "square), 'top_left'/'top_right'/'bottom_left'/'bottom_right' (corner squares of "
        "2/3 the short side), 'pad' (letterboxed), 'flip' (mirrored full). The SavedModel "
        "cuts them too.")
    combine: Combine = Field("mean", description="How the views' features meet: 'mean' "
                             "(average) or 'concat'.")
    flip_augment: bool = Field(
        False, description="Feature-space augmentation: in training, each epoch replaces "
        "the 'full' view's features by the mirrored poster's with probability 1/2.")
    view_examples: bool = Field(
        True, description="Feature-space augmentation: in training, each view's features "
        "are an example of their own (`tasks.model.view_examples`); val, test and serving "
        "average the views' features as `combine: mean` does. Needs combine 'mean'.")
    ensemble: int = Field(1, ge=1, description="Average the probabilities of the N best "
                          "heads of the sweep (or N seeds of the configured head).")
    batch_size: int = Field(256, ge=1, description="Training batch size (seed: 256).")
    head: HeadParams = Field(DEFAULT_HEAD,
                             description="Head hyperparameters (used when sweep is off).")
    early_stopping: bool = Field(
        True, description="Stop when val macro F1 has not improved for `patience` epochs and "
        "restore the best epoch's weights; off = train all epochs, keep the last (the seed).")
    patience: int = Field(10, ge=1, description="Early-stopping patience in epochs.")
    shuffle_buffer: int = Field(4096, ge=1, description="Shuffle buffer of training "
                                "examples (seed: 1024).")
    seed: int = Field(0, description="Seed of weights and shuffling: same seed, same model.")
    sweep: bool = Field(False, description="Choose head hyperparameters by val macro F1 "
                        "over the grid below (on cached features); off = the `head` above "
                        "(epochs are still chosen on val by early stopping).")
    sweep_learning_rates: list[float] = Field([1e-4, 1e-3], min_length=1,
                                              description="Sweep grid: Adam learning rates.")
    sweep_hidden: list[int] = Field([256, 1024], min_length=1,
                                    description="Sweep grid: hidden units.")
    sweep_dropout: list[float] = Field([0.0, 0.5], min_length=1,
                                       description="Sweep grid: dropout rates.")
    sweep_weight_decays: list[float] = Field([0.0], min_length=1,
                                             description="Sweep grid: weight decays.")
    sweep_losses: list[LossName] = Field(["soft_f1", "bce"], min_length=1,
                                         description="Sweep grid: losses.")
    sweep_epochs: int = Field(100, ge=1, description="Maximum epochs of each sweep run.")
    compare_losses: bool = Field(
        False, description="Also train the head with the other loss (same hyperparameters) "
        "for the report's soft-F1 vs BCE probability histograms.")
    fine_tune_blocks: int = Field(0, ge=0, description="After the head, train the top N "
                                  "backbone blocks end to end from the shards (0 = off; "
                                  "needs views ['full'] and ensemble 1).")
    fine_tune_learning_rate: float = Field(1e-5, gt=0, description="Fine-tune Adam rate.")
    fine_tune_epochs: int = Field(3, ge=1, description="Fine-tune epochs.")
    embed_batch_size: int = Field(64, ge=1, description="Backbone batch size when embedding.")
    distribution: Distribution = Field(
        "default", description="tf.distribute strategy for training: 'default' (one device: "
        "the GPU when there is one), 'mirrored' (every local GPU), 'multi_worker_mirrored' "
        "(several machines; reads TF_CONFIG).")

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        """`recipe="tutorial"` (or its old name "seed"): its values for fields not given."""
        if isinstance(data, dict) and data.get("recipe") in RECIPE_ALIASES:
            data = {**data, "recipe": RECIPE_ALIASES[data["recipe"]]}
        if isinstance(data, dict) and data.get("recipe") == "tutorial":
            return {**TUTORIAL_RECIPE, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if len(set(self.views)) != len(self.views):
            raise ValueError(f"views repeat: {self.views}")
        if self.view_examples and (self.combine != "mean" or self.flip_augment):
            raise ValueError("view_examples trains on single views averaged at prediction: "
                             "needs combine 'mean' and no flip_augment")
        if self.flip_augment and "full" not in self.views:
            raise ValueError("flip_augment replaces the 'full' view: add 'full' to views")
        if self.fine_tune_blocks and (self.views != ["full"] or self.ensemble != 1):
            raise ValueError("fine-tuning trains one head on the full view: set views "
                             "['full'] and ensemble 1 (or recipe 'tutorial')")
        return self

    def embedded_views(self) -> list[View]:
        """The views to embed: the model's, plus the mirrored poster when augmenting."""
        extra: list[View] = ["flip"] if self.flip_augment and "flip" not in self.views else []
        return [*self.views, *extra]

    def resolved(self, data_root: str) -> TrainConfig:
        """This config with its embedding cache root filled in: DATA_ROOT/embeddings by default.

        The one rule for the cache's place; every stage function reads `cache_root`.
        """
        from storage.layout import EMBEDDINGS, root_under

        if self.embeddings_root:
            return self
        return self.model_copy(update={"embeddings_root": root_under(data_root, EMBEDDINGS)})

    @property
    def cache_root(self) -> str:
        """The embedding cache root of a `resolved` config."""
        if not self.embeddings_root:
            raise ValueError("TrainConfig.embeddings_root is unset: call resolved(data_root)")
        return self.embeddings_root
