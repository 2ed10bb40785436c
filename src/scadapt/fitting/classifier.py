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
from torch import Tensor, nn
from tqdm.auto import tqdm

from scadapt.backbone.inference import cell_outputs
from scadapt.fitting.frozen_layers import FrozenLayerCache, SharedFrozenLayers, frozen_depth
from scadapt.fitting.memory import (
    LARGE_STEP_BYTES,
    MemoryBudget,
    StepPlan,
    format_bytes,
    inference_token_cap,
    plan_steps,
    return_freed_memory,
    saved_activation_bytes,
)
from scadapt.fitting.optim import MAX_NONFINITE_STEPS, Updater
from scadapt.infra.devices import autocast, inference_tokens
from scadapt.infra.errors import ScadaptError, TrainingDiverged
from scadapt.infra.notices import steps_shown
from scadapt.models.head import BackboneClassifier, trainable_state
from scadapt.tokenization import GeneTokenizer, TokenizedCells
from scadapt.tokenization.batching import inference_batches, length_grouped_batches

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


class TokenSource:
    """Cells as token batches through backbone and head (strategies trained through the backbone).

    With ``frozen``, the backbone's frozen bottom layers are not run again for a cell they have
    already seen: training and validation start from their kept output (same results). Without
    ``resample_genes``, a cell with more genes than fit keeps its epoch-0 subset in every epoch.
    With a memory ``budget``, :meth:`plan_steps` sizes the micro-batches (and turns activation
    checkpointing on if ``checkpointing`` is ``auto`` and it must) and passes without gradients."""

    def __init__(self, model: BackboneClassifier, tokenizer: GeneTokenizer, cells: TokenizedCells,
                 device: torch.device, frozen: FrozenLayerCache | SharedFrozenLayers | None = None,
                 resample_genes: bool = True, budget: MemoryBudget | None = None, checkpointing: str = "auto"):
        self.model, self.tokenizer, self.cells, self.device = model, tokenizer, cells, device
        self.frozen, self.resample_genes = frozen, resample_genes
        self.budget, self.checkpointing = budget, checkpointing
        self.plan = StepPlan(checkpointing=checkpointing == "on")
        self.inference_cap: int | None = None  # tokens of a pass without gradients, from the budget

    @property
    def module(self) -> nn.Module:
        return self.model

    def batches(self, indices: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        order = length_grouped_batches(self.cells.lengths[indices], batch_size, rng)
        return [indices[rows] for rows in order]

    def plan_steps(self, train_idx: np.ndarray, batch_size: int) -> StepPlan:
        """Fit the optimisation batches of ``train_idx`` into the memory budget (measured on the
        longest training cell); without a budget, whole batches."""
        backbone = self.model.backbone
        if self.budget is None:
            backbone.checkpointing = self.plan.checkpointing
            return self.plan
        lengths = self.tokenizer.token_lengths(self.cells, train_idx)
        longest_cell = np.asarray(train_idx)[[int(np.argmax(lengths))]]

        def measure(checkpointed: bool) -> int:
            backbone.checkpointing = checkpointed
            self.model.train()
            try:
                with autocast(self.device):
                    return saved_activation_bytes(lambda: self.logits(longest_cell, 0), self.model, self.device)
            finally:
                backbone.checkpointing = False

        config = backbone.config
        planned = dict(budget=self.budget, checkpointing=self.checkpointing,
                       trainable=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                       longest=int(lengths.max()), batch_size=batch_size, measure=measure,
                       layers_with_grad=config.nlayers - frozen_depth(backbone), d_model=config.d_model)
        kept = self.frozen.held_bytes() if self.frozen is not None else 0
        try:
            self.plan = plan_steps(kept_bytes=kept, **planned)
        except ScadaptError:
            if not isinstance(self.frozen, FrozenLayerCache) or kept == 0:
                raise
            # Kept frozen-layer outputs only save time: a step that fits without them runs with the cache
            # cut to what the step leaves. So the advice of an unmeetable plan (raised here) counts no cache,
            # and a budget raised to it runs, instead of giving the cache a share of each raise.
            self.plan = plan_steps(kept_bytes=0, **planned)
            self.frozen.budget = max(0, self.budget.bytes - self.plan.estimate_bytes)
            log.info("The memory budget leaves %s for the kept frozen-layer outputs (a step needs the rest); cells "
                     "beyond it run the frozen layers in every epoch.", format_bytes(self.frozen.budget))
        backbone.checkpointing = self.plan.checkpointing
        if self.device.type == "cpu" and self.plan.step_activation_bytes >= LARGE_STEP_BYTES:
            return_freed_memory()
        self.inference_cap = inference_token_cap(self.budget, config.d_model, config.d_hid, config.nhead,
                                                 int(lengths.max()))
        split = "whole batches" if self.plan.max_tokens is None else \
            f"micro-batches of at most {self.plan.max_tokens} tokens, gradients accumulated"
        log.info("Memory budget %s: %s, activation checkpointing %s; about %s planned.", self.budget.describe(), split,
                 "on" if self.plan.checkpointing else "off", format_bytes(self.plan.estimate_bytes))
        return self.plan

    def micro_batches(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.plan.split(batch, self.tokenizer.token_lengths(self.cells, batch))

    def shrink(self, parts: list[np.ndarray]) -> None:
        """Halve the micro-batches after running out of memory on ``parts``; refuse at one cell."""
        tokens = [len(part) * int(self.tokenizer.token_lengths(self.cells, part).max()) for part in parts]
        largest = parts[int(np.argmax(tokens))]
        if len(largest) == 1:
            budget = f" within the memory budget of {self.budget.describe()}" if self.budget else ""
            raise ScadaptError(
                f"Out of memory on {self.device} with one training cell of {max(tokens)} tokens per micro-batch"
                f"{budget}. Other processes may hold the device's memory: lower --memory-budget to what is free, "
                f"use --activation-checkpointing on, or lower --max-seq-len.")
        self.plan = self.plan.halved(max(tokens))
        log.warning("Out of memory on %s with a micro-batch of %d cells (%d tokens): micro-batches are halved to at "
                    "most %d tokens and the step is run again.", self.device, len(largest), max(tokens),
                    self.plan.max_tokens)

    def finish(self) -> None:
        self.model.backbone.checkpointing = False

    def logits(self, indices: np.ndarray, epoch: int) -> Tensor:
        epoch = epoch if self.resample_genes else 0
        batch = self.tokenizer.batch(self.cells, indices, epoch)
        if self.frozen is None:
            return self.model(*(batch[k].to(self.device) for k in ("gene_ids", "values", "padding_mask")))
        hidden = self.frozen.hidden(indices, batch, epoch)
        padding = batch["padding_mask"].to(self.device)
        return self.model.head(self.model.backbone.encode_from(hidden, padding, self.frozen.depth))

    def predict(self, indices: np.ndarray, batch_size: int) -> np.ndarray:
        """Logits ``[len(indices), n_classes]``: by the path that serves the model, or from the
        frozen layers' kept outputs (the same function, computed from the middle)."""
        if self.frozen is None:
            return cell_outputs(self.model.backbone, self.tokenizer, self.cells, indices, head=self.model.head,
                                batch_size=batch_size, max_tokens=self.inference_cap)[1]
        with torch.no_grad(), autocast(self.device):
            return self.model.head(torch.as_tensor(self.embeddings(indices, batch_size), device=self.device)
                                   ).float().cpu().numpy()

    def embeddings(self, indices: np.ndarray, batch_size: int) -> np.ndarray:
        """CLS embeddings ``[len(indices), d]`` of the (adapted) backbone in eval mode, from the
        frozen layers' kept outputs."""
        self.model.eval()
        embedding = np.empty((len(indices), self.model.backbone.config.d_model), dtype=np.float32)
        with torch.no_grad(), autocast(self.device):  # not inference_mode: kept outputs train later
            for rows in inference_batches(self.tokenizer.token_lengths(self.cells, indices),
                                          inference_tokens(self.device, self.inference_cap), batch_size):
                batch = self.tokenizer.batch(self.cells, indices[rows], 0)
                hidden = self.frozen.hidden(indices[rows], batch, 0)
                embedding[rows] = self.model.backbone.encode_from(
                    hidden, batch["padding_mask"].to(self.device), self.frozen.depth).float().cpu().numpy()
        return embedding


class EmbeddingSource:
    """Fixed features ``[n_cells, d]`` (frozen CLS embeddings, or expression) through ``head`` alone."""

    def __init__(self, head: nn.Module, embeddings: np.ndarray, device: torch.device):
        self.head = head
        self.embeddings = torch.as_tensor(embeddings, dtype=torch.float32, device=device)

    @property
    def module(self) -> nn.Module:
        return self.head

    def batches(self, indices: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        order = rng.permutation(indices) if rng is not None else indices
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def plan_steps(self, train_idx: np.ndarray, batch_size: int) -> StepPlan:
        return StepPlan()  # a head on fixed features: whole batches

    def micro_batches(self, batch: np.ndarray) -> list[np.ndarray]:
        return [batch]

    def shrink(self, parts: list[np.ndarray]) -> None:
        raise ScadaptError(f"Out of memory on {self.embeddings.device} training a head on {len(parts[0])} cells' "
                           "features: lower batch_size.")

    def finish(self) -> None:
        pass

    def logits(self, indices: np.ndarray, epoch: int) -> Tensor:
        return self.head(self.embeddings[torch.as_tensor(indices, device=self.embeddings.device)])

    def predict(self, indices: np.ndarray, batch_size: int) -> np.ndarray:
        """Logits ``[len(indices), n_classes]``."""
        self.head.eval()
        with torch.inference_mode(), autocast(self.embeddings.device):
            return torch.cat([self.logits(indices[i: i + batch_size], 0).float()
                              for i in range(0, len(indices), batch_size)]).cpu().numpy()


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
