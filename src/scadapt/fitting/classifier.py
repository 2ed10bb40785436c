"""The training loop shared by every gradient-trained strategy.

AdamW with warmup and cosine decay, gradient clipping, an optional class-weighted loss, AMP on
CUDA, early stopping on validation macro-F1 with the best weights restored. What feeds the
classifier is a *source*: token batches through the (adapted) backbone, or fixed features (frozen
embeddings computed once, or expression) through a head alone. A strategy may hook into the loop
(:class:`TrainingHooks`): an extra loss term, a callback after every update.

Through the backbone, an optimisation batch runs in micro-batches that fit a memory budget
(:mod:`scadapt.fitting.memory`) and their gradients are accumulated: the step is the unsplit
batch's. Running out of device memory halves the micro-batches and retries the step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import Tensor
from tqdm.auto import tqdm

from scadapt.fitting.memory import (
    StepPlan,
)
from scadapt.fitting.optim import MAX_NONFINITE_STEPS, Updater
from scadapt.infra.devices import autocast
from scadapt.infra.errors import TrainingDiverged
from scadapt.infra.notices import steps_shown
from scadapt.models.head import trainable_state

log = logging.getLogger(__name__)


class LoopSettings(Protocol):
    """What the shared loop reads of a strategy's settings (:class:`scadapt.strategies.base.TorchConfig`)."""

    lr: float
    epochs: int
    batch_size: int
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    class_weighted: bool
    patience: int
    seed: int


@dataclass
class TrainingHooks:
    """What a strategy adds to the shared loop."""

    extra_loss: Callable[[], Tensor] | None = None  # added to every training step's loss (e.g. a regulariser)
    after_update: Callable[[int], None] | None = None  # called with the global step after each update; gradients are still set


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0
    best_val_macro_f1: float = float("-inf")
    stopped_early: bool = False
    # [n_validation_cells, n_classes]: the best epoch's validation logits, i.e. the outputs of the weights
    # the fit restores (reported as they are instead of running the validation cells again)
    best_val_logits: np.ndarray | None = field(default=None, repr=False)
    plan: StepPlan = field(default_factory=StepPlan)  # how the optimisation batches ran (memory budget)


def class_weights(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """``n / (n_classes * n_c)``: every class contributes equally to the loss."""
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, len(codes) / (n_classes * np.maximum(counts, 1)), 0.0)


def predict_logits(source, indices: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits ``[len(indices), n_classes]`` in eval mode, in the order of ``indices``."""
    source.module.eval()
    return source.predict(np.asarray(indices), batch_size)


def fit_classifier(
    source,
    codes: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    n_classes: int,
    cfg: LoopSettings,
    device: torch.device,
    on_epoch: Callable[[dict[str, float]], bool | None] | None = None,
    progress: bool = True,
    hooks: TrainingHooks | None = None,
) -> FitResult:
    """Train ``source.module``'s trainable weights; restore the epoch with the best validation
    macro-F1 (ties: lower validation loss).

    Args:
        codes: ``[n_cells]`` class index per cell (-1 for a class unknown to the model, which
            counts as an error in validation metrics and is left out of the loss).
        train_idx, val_idx: cells to train on / to select the epoch with.
    """
    module = source.module
    hooks = hooks or TrainingHooks()
    params = [p for p in module.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    updater = Updater(params, cfg.lr, cfg.weight_decay, max(1, round(cfg.warmup_ratio * total)), total, device,
                      clip_norm=cfg.max_grad_norm)
    weight = torch.as_tensor(class_weights(codes[train_idx], n_classes), dtype=torch.float32, device=device) \
        if cfg.class_weighted else None
    targets = torch.as_tensor(codes, device=device)
    rng = np.random.default_rng(cfg.seed)
    result, best_state, waited = FitResult(), trainable_state(module), 0
    best_key = (float("-inf"), float("-inf"))
    nonfinite = 0  # consecutive steps whose loss was NaN or infinite
    result.plan = source.plan_steps(train_idx, cfg.batch_size)
    bar = tqdm(total=total, desc="training", unit="step", disable=not (progress and steps_shown()), leave=False)
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        module.train()
        losses = []
        for step, batch in enumerate(source.batches(train_idx, cfg.batch_size, rng)):
            value = accumulate_gradients(source, updater, batch, epoch, targets, weight, hooks.extra_loss)
            bar.update(1)
            if not math.isfinite(value):  # skipped, as a grad scaler skips an overflow; diverged if it persists
                nonfinite += 1
                if nonfinite >= MAX_NONFINITE_STEPS:
                    bar.close()
                    source.finish()
                    raise TrainingDiverged.at(value, epoch, step, cfg.lr)
                continue
            nonfinite = 0
            updater.apply()
            if hooks.after_update is not None:
                hooks.after_update(updater.steps_done)
            losses.append(value)
        scores, val_logits = _validate(source, codes, val_idx, cfg.batch_size * 2)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), "lr": updater.lr,
                  **scores, "epoch_sec": time.perf_counter() - started}
        result.history.append(record)
        bar.set_postfix(val_macro_f1=f"{record['val_macro_f1']:.3f}")
        stop = bool(on_epoch(record)) if on_epoch is not None else False  # True: end here (a time budget)
        key = (record["val_macro_f1"], -record["val_loss"])
        if key > best_key:
            best_key, best_state, waited = key, trainable_state(module), 0
            result.best_epoch, result.best_val_macro_f1 = epoch, record["val_macro_f1"]
            result.best_val_logits = val_logits
        else:
            waited += 1
            if waited >= cfg.patience:
                result.stopped_early = True
                break
        if stop:
            result.stopped_early = True
            break
    bar.close()
    source.finish()
    module.load_state_dict({k: v.to(device) for k, v in best_state.items()}, strict=False)
    module.eval()
    return result


def accumulate_gradients(source, updater: Updater, batch: np.ndarray, epoch: int, targets: Tensor,
                         weight: Tensor | None, extra_loss: Callable[[], Tensor] | None) -> float:
    """Gradients of one optimisation batch's loss on the weights, summed over ``source``'s
    micro-batches (each part's loss is its share of the batch's weighted mean); the loss value,
    not finite when the step must be skipped. Out of memory, the micro-batches are halved and
    the batch runs again."""
    while True:
        parts = source.micro_batches(batch)
        updater.zero_grad()
        try:
            return _forward_backward(source, updater, parts, epoch, targets, weight, extra_loss)
        except torch.OutOfMemoryError:
            pass  # leave the except block first, so that the failed pass's tensors are freed
        updater.zero_grad()
        if targets.device.type == "cuda":
            torch.cuda.empty_cache()
        source.shrink(parts)


def _forward_backward(source, updater: Updater, parts: list[np.ndarray], epoch: int, targets: Tensor,
                      weight: Tensor | None, extra_loss: Callable[[], Tensor] | None) -> float:
    device = targets.device
    if len(parts) == 1:
        mean, denominator = True, 1.0
    else:
        mean, every = False, torch.as_tensor(np.concatenate(parts), device=device)
        denominator = weight[targets[every]].sum() if weight is not None else float(len(every))
    total = 0.0
    for number, part in enumerate(parts):
        with autocast(device):
            logits = source.logits(part, epoch)
        truth = targets[torch.as_tensor(part, device=device)]
        if mean:
            loss = F.cross_entropy(logits.float(), truth, weight=weight)
        else:
            loss = F.cross_entropy(logits.float(), truth, weight=weight, reduction="sum") / denominator
        if number == 0 and extra_loss is not None:
            loss = loss + extra_loss()
        value = loss.item()
        if not math.isfinite(value):
            return value
        updater.backward(loss)
        total += value
    return total


def _validate(source, codes: np.ndarray, val_idx: np.ndarray, batch_size: int) -> tuple[dict[str, float], np.ndarray]:
    logits = predict_logits(source, val_idx, batch_size)
    truth = codes[val_idx]
    known = truth >= 0
    loss = F.cross_entropy(torch.from_numpy(logits[known]), torch.from_numpy(truth[known])).item() if known.any() else 0.0
    predicted = logits.argmax(axis=1)
    return {"val_loss": loss, "val_macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "val_accuracy": float((predicted == truth).mean())}, logits
