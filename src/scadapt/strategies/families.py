"""The three families of strategy (expression, frozen backbone, adapted backbone), each holding the
fit its members share.

A strategy module subclasses one of them and adds only what is its own: the config, and for a
strategy trained through the backbone, :meth:`AdaptedStrategy.adapt` (and, if it needs them, the
per-step and extra-loss hooks of :meth:`AdaptedStrategy.hooks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from scadapt.backbone import load_backbone
from scadapt.fitting.classifier import TrainingHooks, fit_classifier
from scadapt.fitting.frozen_layers import FrozenLayerCache, SharedFrozenLayers
from scadapt.fitting.linear import fit_logistic, load_into_head
from scadapt.fitting.sources import EmbeddingSource, TokenSource
from scadapt.infra.errors import CheckpointError
from scadapt.models.annotator import BackboneAnnotator
from scadapt.models.expression import EXPRESSION_KINDS
from scadapt.models.head import BackboneClassifier, ClassifierHead
from scadapt.strategies.base import Fitted, Strategy, StrategyConfig, TorchConfig, freeze, layers_used

if TYPE_CHECKING:
    from scadapt.models.annotator import Annotator
    from scadapt.strategies.base import FitData
    from scadapt.strategies.costs import Rates, StudyWork


class ExpressionStrategy(Strategy):
    """No backbone: a model of the expression matrix itself. Every one is a baseline."""

    needs_backbone = False
    baseline = True
    relative_cost = 0.05

    @classmethod
    def estimate_seconds(cls, work: StudyWork, rates: Rates) -> float:
        return work.trials * (work.n_train * rates.expression_cell_sec + rates.trial_overhead_sec)

    @classmethod
    def rebuild(cls, manifest, config, weights, checkpoint, device) -> Annotator:
        return EXPRESSION_KINDS[manifest["kind"]].from_saved(manifest, config, weights, device)


class BackboneStrategy(Strategy):
    """A classifier head on the CLS embedding of the (possibly adapted) backbone."""

    head_layers: ClassVar[int | None] = None  # None: the config's ``head_layers``

    def build_model(self, backbone: nn.Module, n_classes: int) -> BackboneClassifier:
        """Freeze the backbone, let the strategy change it, and put a fresh head on top (seeded
        from ``config.seed``, so the same settings give the same initial model)."""
        config = self.config
        freeze(backbone)
        torch.manual_seed(config.seed)
        self.prepare_backbone(backbone, config)
        layers = self.head_layers or getattr(config, "head_layers", 1)
        head = ClassifierHead(backbone.config.d_model, n_classes, layers, getattr(config, "head_dropout", 0.0))
        return BackboneClassifier(backbone, head)

    @classmethod
    def prepare_backbone(cls, backbone: nn.Module, config: StrategyConfig) -> None:
        """Change the frozen backbone in place (nothing, for the frozen families)."""

    def outputs(self, data: FitData, annotator: Annotator, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return annotator.cell_outputs(data.cells, indices)  # the fit's tokens: each cell keeps its gene subset

    @classmethod
    def rebuild(cls, manifest, config, weights, checkpoint, device) -> Annotator:
        recorded = manifest["backbone"]
        if checkpoint is None:
            raise CheckpointError(
                f"This {cls.name} annotator sits on a backbone checkpoint (weights hash {recorded['weights_hash'][:16]}"
                f", trained from {recorded['source']}); pass that checkpoint's folder, or read the annotator with "
                "scadapt.load_model, which finds it.")
        loaded = load_backbone(checkpoint, with_decoders=False, device=device)
        if loaded.weights_hash != recorded["weights_hash"]:
            raise CheckpointError(
                f"The backbone in {checkpoint} (weights hash {loaded.weights_hash[:16]}) is not the one this annotator "
                f"was trained on ({recorded['weights_hash'][:16]}). Pass the original checkpoint folder."
            )
        model = cls(config).build_model(loaded.model, len(manifest["classes"])).to(device)
        return BackboneAnnotator.from_saved(manifest, config, weights, model, loaded.vocab, str(checkpoint))

    def _annotator(self, data: FitData, model: BackboneClassifier) -> BackboneAnnotator:
        return BackboneAnnotator(self.name, self.config, data.classes, model, data.tokenizer, data.weights_hash,
                                 str(data.checkpoint), data.checkpoint_uri)


class FrozenStrategy(BackboneStrategy):
    """The backbone stays as pretrained and embeds every cell once; only a head is fitted on the
    cached embeddings, which training, evaluation and tuning trials share."""

    frozen_embeddings = True
    relative_cost = 0.07

    @classmethod
    def estimate_seconds(cls, work: StudyWork, rates: Rates) -> float:
        """One embedding pass over every cell (shared by the trials), then heads that fit in moments."""
        return work.n_cells * rates.embed_cell_sec + work.trials * rates.trial_overhead_sec

    def fit(self, data: FitData, progress: bool = True, on_epoch=None) -> Fitted:
        model = self.build_model(data.backbone, len(data.classes)).to(data.device)  # reads, never changes, it
        embeddings = data.embeddings(progress=progress)
        fit = self.fit_head(data, model, embeddings, progress, on_epoch)
        return Fitted(self._annotator(data, model), fit, sum(p.numel() for p in model.parameters()))

    def fit_head(self, data: FitData, model: BackboneClassifier, embeddings: np.ndarray, progress: bool, on_epoch):
        """Fit ``model.head`` on ``embeddings`` ``[n_cells, d]``; returns the training curve or None."""
        raise NotImplementedError

    def outputs(self, data: FitData, annotator: Annotator, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embedding = data.embeddings(indices)  # cached: the backbone does not run again
        return embedding, annotator.classify(embedding)


class ProbeStrategy(FrozenStrategy):
    """A closed-form linear classifier (logistic regression) on the frozen embeddings, loaded
    into a one-layer head."""

    head_layers = 1
    baseline = True

    def fit_head(self, data, model, embeddings, progress, on_epoch) -> None:
        train, config = data.split.train, self.config
        load_into_head(model.head, fit_logistic(embeddings[train], data.codes[train], len(data.classes), config.C,
                                                config.class_weighted, config.max_iter, config.seed))


class HeadStrategy(FrozenStrategy):
    """A head trained by the shared loop on the frozen embeddings."""

    def fit_head(self, data, model, embeddings, progress, on_epoch):
        split = data.split
        model.head.set_standardization(torch.as_tensor(embeddings[split.train], device=data.device))
        return fit_classifier(EmbeddingSource(model.head, embeddings, data.device), data.codes, split.train,
                              split.validation, len(data.classes), self.config, data.device, on_epoch=on_epoch,
                              progress=progress)


class AdaptedStrategy(BackboneStrategy):
    """Trained through the backbone: it runs in every step, with the weights or injected modules
    :meth:`adapt` makes trainable. Every base weight starts frozen; a strategy injects its own
    modules around the base modules (never changing the base weights) or unfreezes weights."""

    relative_cost = 0.5

    @classmethod
    def adapt(cls, backbone: nn.Module, config: TorchConfig) -> None:
        raise NotImplementedError

    @classmethod
    def hooks(cls, model: BackboneClassifier, config: TorchConfig, total_steps: int) -> TrainingHooks:
        """Per-step callback and extra loss for the shared loop (none by default)."""
        return TrainingHooks()

    @classmethod
    def prepare_backbone(cls, backbone: nn.Module, config: TorchConfig) -> None:
        backbone.set_dropout(config.backbone_dropout)  # before injection: injected modules keep their own
        cls.adapt(backbone, config)

    def fit(self, data: FitData, progress: bool = True, on_epoch=None) -> Fitted:
        split, config, ctx = data.split, self.config, data
        model = self.build_model(ctx.fresh_backbone(), len(ctx.classes)).to(ctx.device)
        # the frozen backbone's embeddings of the training cells set the head's input statistics
        model.head.set_standardization(torch.as_tensor(ctx.embeddings(split.train, progress), device=ctx.device))
        total_steps = -(-len(split.train) // config.batch_size) * config.epochs
        frozen = FrozenLayerCache.for_model(model.backbone, ctx.tokenizer, ctx.cells, ctx.device,
                                            split.train if config.resample_genes else None, ctx.weights_hash,
                                            limit=ctx.frozen_limit())
        source = TokenSource(model, ctx.tokenizer, ctx.cells, ctx.device, frozen, config.resample_genes, ctx.memory,
                             ctx.checkpointing)
        fit = fit_classifier(source, ctx.codes, split.train,
                             split.validation, len(ctx.classes), config, ctx.device, on_epoch=on_epoch,
                             progress=progress, hooks=self.hooks(model, config, total_steps))
        return Fitted(self._annotator(ctx, model), fit, sum(p.numel() for p in model.parameters()),
                      layers_used(model.backbone, config))

    def outputs(self, data: FitData, annotator: Annotator, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Through the frozen layers' outputs the fits on these cells keep (the same function as the
        served path, computed from the middle), or by the served path when none are kept."""
        ctx = data
        frozen = FrozenLayerCache.for_model(annotator.model.backbone, ctx.tokenizer, ctx.cells, ctx.device,
                                            weights_hash=ctx.weights_hash, quiet=True, limit=ctx.frozen_limit())
        if not isinstance(frozen, SharedFrozenLayers):
            return super().outputs(data, annotator, indices)
        source = TokenSource(annotator.model, ctx.tokenizer, ctx.cells, ctx.device, frozen)
        source.inference_cap = ctx.inference_cap()
        embedding = source.embeddings(np.asarray(indices), annotator.batch_size)
        return embedding, annotator.classify(embedding)
