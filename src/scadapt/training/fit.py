"""Fitting one configuration of one strategy on a prepared context, and scoring the result."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from scadapt.evaluation.metrics import ClassificationReport, classification_report
from scadapt.models.annotator import Annotator, BackboneAnnotator, ExpressionAnnotator
from scadapt.models.build import build_annotation_model
from scadapt.strategies import StrategyConfig, get_strategy
from scadapt.tracking.resources import PeakRSS, cuda_peak_bytes
from scadapt.training.classifier import EmbeddingSource, FitResult, TokenSource, fit_classifier, predict_logits
from scadapt.training.context import TrainingContext
from scadapt.training.linear import fit_logistic, fit_pca_logistic, load_into_head

log = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    annotator: Annotator
    fit: FitResult | None
    runtime_sec: float
    peak_rss_bytes: int  # of the process during the fit
    added_rss_bytes: int  # that peak above the level before the fit
    peak_cuda_bytes: int | None
    total_parameters: int
    adjusted: dict[str, object] = field(default_factory=dict)  # hyperparameters the data forced to other values


def fit_strategy(ctx: TrainingContext, strategy_name: str, config: StrategyConfig, progress: bool = True,
                 on_epoch=None) -> FitOutcome:
    """Train one configuration of one strategy on ``ctx.split``; the result predicts new cells."""
    strategy = get_strategy(strategy_name)
    split, n_classes = ctx.split, len(ctx.classes)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    started = time.perf_counter()
    fit = None
    adjusted: dict[str, object] = {}
    with PeakRSS(interval=0.02) as peak:
        if strategy.kind == "expression":
            result = fit_pca_logistic(ctx.adata.X[split.train], ctx.adata.var_names, ctx.codes[split.train], n_classes,
                                      config.n_components, config.n_top_genes, config.C, config.class_weighted,
                                      config.max_iter, config.seed)
            annotator: Annotator = ExpressionAnnotator(strategy_name, config, ctx.classes, result.genes, result.arrays)
            total = annotator.fitted_parameters
            if result.n_components != config.n_components:
                adjusted["n_components"] = result.n_components
        else:
            frozen = strategy.kind == "frozen"
            # frozen strategies only read the backbone, so they share the pristine one
            backbone = ctx.backbone if frozen else ctx.fresh_backbone()
            model = build_annotation_model(strategy_name, config, backbone, n_classes).to(ctx.device)
            # the one pass through the frozen backbone, counted in this runtime: every cell for the
            # frozen strategies, otherwise the training cells (for the head's input statistics)
            if frozen:
                ctx.embeddings(progress=progress)
            train_embeddings = ctx.embeddings(split.train, progress)
            if strategy_name == "frozen_probe":
                load_into_head(model.head, fit_logistic(train_embeddings, ctx.codes[split.train], n_classes, config.C,
                                                        config.class_weighted, config.max_iter, config.seed))
            else:
                model.head.set_standardization(torch.as_tensor(train_embeddings, device=ctx.device))
                source = EmbeddingSource(model, ctx.embeddings(progress=progress), ctx.device) if frozen else \
                    TokenSource(model, ctx.tokenizer, ctx.cells, ctx.device)
                fit = fit_classifier(source, ctx.codes, split.train, split.validation, n_classes, config, ctx.device,
                                     on_epoch=on_epoch, progress=progress)
            annotator = BackboneAnnotator(strategy_name, config, ctx.classes, model, ctx.tokenizer, ctx.weights_hash,
                                          str(ctx.checkpoint))
            total = sum(p.numel() for p in model.parameters())
    for name, value in adjusted.items():
        log.warning("%s=%s cannot be used on these %d training cells x %d genes; %s=%s was used instead.", name,
                    getattr(config, name), len(split.train), ctx.adata.n_vars, name, value)
    return FitOutcome(annotator, fit, time.perf_counter() - started, peak.peak_bytes, peak.added_bytes,
                      cuda_peak_bytes(ctx.device), total, adjusted)


def annotator_outputs(ctx: TrainingContext, annotator: Annotator, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and probabilities for cells ``indices`` of the context's data."""
    if isinstance(annotator, ExpressionAnnotator):
        return annotator.outputs(ctx.adata[indices])
    if get_strategy(annotator.strategy).kind == "frozen":  # reuse the cached embeddings
        embedding = ctx.embeddings(indices)
        logits = predict_logits(EmbeddingSource(annotator.model, ctx.embeddings(), ctx.device), indices, 1024)
        return embedding, torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    return annotator.cell_outputs(ctx.cells, indices)


def evaluate(ctx: TrainingContext, annotator: Annotator, part: str) -> tuple[ClassificationReport, np.ndarray, np.ndarray]:
    """Report, embeddings and predicted labels for one part (``validation`` or ``test``) of the split."""
    indices = ctx.split.part(part)
    embedding, proba = annotator_outputs(ctx, annotator, indices)
    predicted = np.asarray(ctx.classes, dtype=object)[proba.argmax(axis=1)]
    return classification_report(ctx.labels[indices], predicted), embedding, predicted
