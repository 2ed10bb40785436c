"""Frozen bottom layers run once per fit, not once per epoch.

When a strategy adapts only the top layers of the backbone, everything below them (the token
embeddings and the first ``depth`` layers) computes a fixed function of each cell's tokens. Their
output for a cell is kept after its first pass and reused in every later epoch and validation
pass, so an epoch runs forward and backward through the adapted top layers only. The outputs are
the same as without the cache: nothing below ``depth`` trains or drops out (:func:`frozen_depth`
checks this on the model itself, whatever the strategy), and a cell whose tokens change between
epochs (more genes than fit in ``max_seq_len``) is only reused in the epoch whose tokens were kept.

Kept outputs live in CPU memory up to a budget (``SCADAPT_FROZEN_CACHE_MB``, default 4096; 0
turns the cache off); cells beyond it run through the frozen layers again in every epoch.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import Tensor, nn

from scadapt.backbone.attention import SelfAttention
from scadapt.backbone.model import ScGPTBackbone
from scadapt.devices import autocast
from scadapt.errors import ScadaptError
from scadapt.tokenization import GeneTokenizer, TokenizedCells

BUDGET_ENV = "SCADAPT_FROZEN_CACHE_MB"
DEFAULT_BUDGET_MB = 4096

log = logging.getLogger(__name__)


def budget_bytes() -> int:
    """The memory the cache may hold, from ``SCADAPT_FROZEN_CACHE_MB``."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    try:
        megabytes = float(text) if text else DEFAULT_BUDGET_MB
    except ValueError:
        megabytes = -1
    if megabytes < 0:
        raise ScadaptError(f"{BUDGET_ENV}={text!r} is not a number of megabytes (>= 0; 0 turns the cache off).")
    return int(megabytes * 2**20)


def frozen_depth(backbone: ScGPTBackbone) -> int:
    """How many bottom layers, with the input embeddings, compute a fixed function of the tokens:
    no trainable weight and no active dropout. 0 when the embeddings themselves are not fixed."""
    if not (_fixed(backbone.encoder) and _fixed(backbone.value_encoder)):
        return 0
    depth = 0
    for layer in backbone.transformer_encoder.layers:
        if not _fixed(layer):
            break
        depth += 1
    return depth


def _fixed(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters()) and all(
        m.p == 0 for m in module.modules() if isinstance(m, nn.Dropout)) and all(
        m.dropout == 0 for m in module.modules() if isinstance(m, SelfAttention))


class FrozenLayerCache:
    """Hidden states of cells after the backbone's first ``depth`` layers, each computed once.

    ``hidden`` returns them for a token batch, ``[B, L, d]`` float32 on the batch's device; the
    backbone's :meth:`~ScGPTBackbone.encode_from` runs the rest.
    """

    def __init__(self, backbone: ScGPTBackbone, tokenizer: GeneTokenizer, cells: TokenizedCells, depth: int,
                 device: torch.device, budget: int):
        self.backbone, self.tokenizer, self.cells, self.depth = backbone, tokenizer, cells, depth
        self.device, self.budget = device, budget
        self.kept: dict[int, Tensor] = {}  # cell -> [n_tokens, d] float32 on the CPU, for its epoch-0 tokens
        self.kept_bytes = 0
        self.full = False  # the budget ran out: some cells run the frozen layers every epoch

    @classmethod
    def for_model(cls, backbone: ScGPTBackbone, tokenizer: GeneTokenizer, cells: TokenizedCells,
                  device: torch.device, resampled: np.ndarray | None = None) -> FrozenLayerCache | None:
        """A cache for ``backbone`` as a strategy left it, or None when nothing below its
        adapted layers is fixed or the budget is 0. ``resampled``: the training cells, when those
        with too many genes get new tokens every epoch (reported: the cache cannot spare their work)."""
        depth, budget = frozen_depth(backbone), budget_bytes()
        if depth == 0 or budget == 0:
            return None
        log.info("The bottom %d of %d layers are frozen: their outputs are computed once per cell and reused.",
                 depth, len(backbone.transformer_encoder.layers))
        if resampled is not None and (n_long := int(tokenizer.varies_by_epoch(cells, resampled).sum())):
            log.info("%d of %d training cells have more genes than fit in %d tokens and draw new ones every epoch: "
                     "the frozen layers run again for them. resample_genes=false keeps each cell's first draw.",
                     n_long, len(resampled), tokenizer.max_seq_len)
        return cls(backbone, tokenizer, cells, depth, device, budget)

    def hidden(self, indices: np.ndarray, batch: dict[str, Tensor], epoch: int) -> Tensor:
        """Hidden states ``[B, L, d]`` after the frozen layers for the token ``batch`` of cells ``indices``."""
        gene_ids, values, padding = batch["gene_ids"], batch["values"], batch["padding_mask"]
        lengths = (~padding).sum(dim=1).tolist()
        # a cell whose tokens change between epochs matches what was kept only in epoch 0
        kept_tokens = ~self.tokenizer.varies_by_epoch(self.cells, indices) | (epoch == 0)
        out = torch.zeros(*gene_ids.shape, self.backbone.config.d_model)
        missing = []
        for row, cell in enumerate(np.asarray(indices).tolist()):
            stored = self.kept.get(cell) if kept_tokens[row] else None
            if stored is None:
                missing.append(row)
            else:
                out[row, : lengths[row]] = stored
        out = out.to(self.device, non_blocking=True)
        if missing:
            rows = torch.as_tensor(missing)
            with torch.no_grad(), autocast(self.device):
                computed = self.backbone.hidden_below(gene_ids[rows].to(self.device), values[rows].to(self.device),
                                                      padding[rows].to(self.device), self.depth).float()
            out[rows.to(self.device)] = computed
            self._keep(np.asarray(indices)[missing], computed, [lengths[r] for r in missing], kept_tokens[missing])
        return out

    def _keep(self, cells: np.ndarray, computed: Tensor, lengths: list[int], keepable: np.ndarray) -> None:
        computed = computed.cpu()
        for i, cell in enumerate(cells.tolist()):
            size = lengths[i] * computed.shape[-1] * 4
            if not keepable[i] or cell in self.kept:
                continue
            if self.kept_bytes + size > self.budget:
                if not self.full:
                    log.info("The frozen-layer cache reached its budget (%s=%d MB): further cells run the frozen "
                             "layers in every epoch.", BUDGET_ENV, self.budget // 2**20)
                self.full = True
                return
            self.kept[cell] = computed[i, : lengths[i]].clone()
            self.kept_bytes += size
