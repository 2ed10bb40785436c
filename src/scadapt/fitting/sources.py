"""What feeds the shared training loop (:func:`scadapt.fitting.classifier.fit_classifier`): a
*source* gives batches and their logits. :class:`TokenSource` runs token batches through the
(adapted) backbone, in micro-batches that fit a memory budget, through the frozen layers' kept
outputs where it can; :class:`EmbeddingSource` runs fixed features (frozen embeddings computed
once, or expression) through a head alone."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

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
from scadapt.infra.devices import autocast, inference_tokens
from scadapt.infra.errors import ScadaptError
from scadapt.models.head import BackboneClassifier
from scadapt.tokenization import GeneTokenizer, TokenizedCells
from scadapt.tokenization.batching import inference_batches, length_grouped_batches

log = logging.getLogger(__name__)


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
