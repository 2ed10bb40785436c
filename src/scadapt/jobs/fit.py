"""Fitting one configuration of one strategy on a prepared context, and scoring the result."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from scadapt.data.preprocess import input_form
from scadapt.evaluation.metrics import ClassificationReport, classification_report
from scadapt.fitting.classifier import FitResult
from scadapt.infra.notices import warn_once
from scadapt.jobs.context import TrainingContext
from scadapt.models.annotator import Annotator
from scadapt.models.novelty import DEFAULT_REJECTED, NoveltyScorer
from scadapt.strategies.base import Strategy
from scadapt.tracking.resources import PeakRSS, cuda_peak_bytes

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
    method: Strategy  # what fitted it, with the settings it used
    adjusted: dict[str, object] = field(default_factory=dict)  # hyperparameters the data forced to other values


def fit_strategy(ctx: TrainingContext, strategy: Strategy, progress: bool = True, on_epoch=None) -> FitOutcome:
    """Train ``strategy`` (with its settings) on ``ctx.split`` (the strategy owns its fit), timed
    and measured; the result predicts new cells."""
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    started = time.perf_counter()
    with PeakRSS(interval=0.02) as peak:
        fitted = strategy.fit(ctx, progress=progress, on_epoch=_until(ctx.deadline, on_epoch))
    fitted.annotator.trained_on = input_form(ctx.adata.X[ctx.split.train])  # a query in another form is brought to it
    for name, value in fitted.adjusted.items():
        warn_once(log, "%s=%s cannot be used on these %d training cells x %d genes; %s=%s was used instead.", name,
                    getattr(strategy.config, name), len(ctx.split.train), ctx.adata.n_vars, name, value)
    return FitOutcome(fitted.annotator, fitted.fit, time.perf_counter() - started, peak.peak_bytes, peak.added_bytes,
                      cuda_peak_bytes(ctx.device), fitted.total_parameters, strategy, fitted.adjusted)


def _until(deadline: float | None, on_epoch: Callable[[dict[str, float]], object] | None):
    """``on_epoch`` that also ends training (returns True) once ``deadline`` has passed: the fit
    keeps its best epoch so far, as when it stops early."""
    if deadline is None:
        return on_epoch

    def checked(record: dict[str, float]) -> bool:
        if on_epoch is not None:
            on_epoch(record)
        if time.time() < deadline:
            return False
        log.info("The time budget ends this fit after epoch %d; it keeps its best epoch.", int(record["epoch"]) + 1)
        return True

    return checked


def validation_report(ctx: TrainingContext, outcome: FitOutcome) -> ClassificationReport:
    """The validation report of a fit. A gradient-trained fit already scored the validation cells
    with the weights it restored (its best epoch), so they are not run through the model again."""
    logits = outcome.fit.best_val_logits if outcome.fit is not None else None
    if logits is None:
        return evaluate(ctx, outcome.annotator, "validation")[0]
    predicted = np.asarray(ctx.classes, dtype=object)[logits.argmax(axis=1)]
    return classification_report(ctx.labels[ctx.split.validation], predicted)


def evaluate(ctx: TrainingContext, annotator: Annotator, part: str) -> tuple[ClassificationReport, np.ndarray, np.ndarray]:
    """Report, embeddings and predicted labels for one part (``validation`` or ``test``) of the split."""
    indices = ctx.split.part(part)
    embedding, proba = _method_of(ctx, annotator).outputs(ctx, annotator, indices)
    predicted = np.asarray(ctx.classes, dtype=object)[proba.argmax(axis=1)]
    return classification_report(ctx.labels[indices], predicted), embedding, predicted


def calibrate_novelty(ctx: TrainingContext, annotator: Annotator) -> dict[str, float]:
    """Give the annotator its novelty scorer: class means and a shared covariance of the training
    cells' embeddings, calibrated on the validation cells (known types the fit did not train on).
    Returns the threshold at the default rejection rate as a metric."""
    if len(ctx.split.validation) == 0:
        return {}
    method = _method_of(ctx, annotator)
    trained, _ = method.outputs(ctx, annotator, ctx.split.train)
    known, _ = method.outputs(ctx, annotator, ctx.split.validation)
    annotator.novelty = NoveltyScorer.fit(trained, ctx.codes[ctx.split.train], known, ctx.codes[ctx.split.validation])
    return {"novelty_threshold": annotator.novelty.threshold(DEFAULT_REJECTED)}


def _method_of(ctx: TrainingContext, annotator: Annotator) -> Strategy:
    """The context's strategy, which scores what it fitted (a context serves one strategy's fits)."""
    if ctx.method is None or ctx.method.name != annotator.strategy:
        raise ValueError(f"a {annotator.strategy} annotator scored on a context prepared for another strategy")
    return ctx.method
