"""Frozen bottom layers run once per cell, not once per epoch (nor once per fit).

When a strategy adapts only the top layers of the backbone, everything below them (the token
embeddings and the first ``depth`` layers) computes a fixed function of each cell's tokens. Their
output for a cell is kept after its first pass and reused in every later epoch, validation pass
and test evaluation, so an epoch runs forward and backward through the adapted top layers only.
The outputs are the same as without the cache: nothing below ``depth`` trains or drops out
(:func:`frozen_depth` checks this on the model itself, whatever the strategy), and a cell whose
tokens change between epochs (more genes than fit in ``max_seq_len``) is only reused in the epoch
whose tokens were kept.

Kept outputs live in CPU memory up to a budget (``SCADAPT_FROZEN_CACHE_MB``, default 4096; 0
turns the cache off). When every cell of the data fits in it, they are kept for the whole process
(:class:`SharedFrozenLayers`): every fit, trial and matrix cell on the same backbone, tokens and
depth reuses them. They are then computed in fixed batches of the whole data, so a cell's kept
output, and every result built on it, does not depend on which fit came first. Otherwise each fit
keeps what fits of its own cells (:class:`FrozenLayerCache`) and the rest run the frozen layers
again in every epoch.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor, nn

from scadapt.backbone.attention import SelfAttention
from scadapt.backbone.model import ScGPTBackbone
from scadapt.infra.devices import autocast, compute_dtype, inference_tokens
from scadapt.infra.errors import ScadaptError
from scadapt.tokenization import GeneTokenizer, TokenizedCells
from scadapt.tokenization.batching import inference_batches

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
    """Hidden states of cells after the backbone's first ``depth`` layers, each computed once in a fit.

    ``hidden`` returns them for a token batch, ``[B, L, d]`` float32 on the batch's device; the
    backbone's :meth:`~ScGPTBackbone.encode_from` runs the rest. This one keeps the cells of one
    fit as they come, up to its budget; :meth:`for_model` gives the process-wide
    :class:`SharedFrozenLayers` instead when the whole data fits.
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
                  device: torch.device, resampled: np.ndarray | None = None, weights_hash: str | None = None,
                  quiet: bool = False, limit: int | None = None) -> FrozenLayerCache | SharedFrozenLayers | None:
        """A cache for ``backbone`` as a strategy left it, or None when nothing below its adapted
        layers is fixed or the budget is 0. With the hash of the backbone's pretrained weights (and
        tokens that know their data's hash) it is the process-wide one, when the data fits.
        ``resampled``: the training cells, when those with too many genes get new tokens every
        epoch (reported: the cache cannot spare their work). ``limit``: bytes the cache may hold at
        most whatever ``SCADAPT_FROZEN_CACHE_MB`` says (a share of the job's memory budget)."""
        depth, budget = frozen_depth(backbone), budget_bytes()
        if limit is not None:
            budget = min(budget, limit)
        if depth == 0 or budget == 0:
            return None
        shared = SharedFrozenLayers.find(backbone, tokenizer, cells, depth, device, budget, weights_hash)
        if not quiet:
            log.info("The bottom %d of %d layers are frozen: their outputs are computed once per cell and reused%s.",
                     depth, len(backbone.transformer_encoder.layers), " by every fit on these cells" if shared else "")
            if resampled is not None and (n_long := int(tokenizer.varies_by_epoch(cells, resampled).sum())):
                log.info("%d of %d training cells have more genes than fit in %d tokens and draw new ones every "
                         "epoch (resample_genes=true): the frozen layers run again for them.", n_long,
                         len(resampled), tokenizer.max_seq_len)
        return shared or cls(backbone, tokenizer, cells, depth, device, budget)

    def held_bytes(self) -> int:
        """The most this cache holds during a fit (its budget)."""
        return self.budget

    def hidden(self, indices: np.ndarray, batch: dict[str, Tensor], epoch: int) -> Tensor:
        """Hidden states ``[B, L, d]`` after the frozen layers for the token ``batch`` of cells ``indices``."""
        gene_ids, padding = batch["gene_ids"], batch["padding_mask"]
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
            computed = _run_frozen(self.backbone, batch, missing, self.depth, self.device)
            out[torch.as_tensor(missing, device=self.device)] = computed
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


class SharedFrozenLayers:
    """Every cell's hidden states after the first ``depth`` layers (for its epoch-0 tokens), kept for
    the whole process in one ``[tokens of all cells, d]`` tensor and shared by every fit on the same
    pretrained weights, tokens, depth and device (:meth:`find`).

    Cells are computed in fixed batches of the whole data (its cells sorted by length, cut as an
    inference pass cuts them), a batch the first time one of its cells is asked for: so a cell's
    kept output is the same bits whichever fit asks first and whatever else it asks for. The least
    recently used of these stores make room for a new one within the budget.
    """

    _stores: OrderedDict[tuple, SharedFrozenLayers] = OrderedDict()

    def __init__(self, tokenizer: GeneTokenizer, cells: TokenizedCells, depth: int, d_model: int,
                 device: torch.device):
        self.tokenizer, self.cells, self.depth, self.device = tokenizer, cells, depth, device
        self.backbone: ScGPTBackbone | None = None  # the latest fit's: its layers below ``depth`` are the pretrained ones
        self.lengths = tokenizer.token_lengths(cells, np.arange(cells.n_cells))
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.groups = inference_batches(self.lengths, inference_tokens(device), max_cells=64)
        self.group_of = np.empty(cells.n_cells, dtype=np.int64)
        for number, group in enumerate(self.groups):
            self.group_of[group] = number
        self.done = np.zeros(len(self.groups), dtype=bool)
        self.flat = torch.zeros(int(self.offsets[-1]), d_model)

    @staticmethod
    def size_bytes(tokenizer: GeneTokenizer, cells: TokenizedCells, d_model: int) -> int:
        return int(tokenizer.token_lengths(cells, np.arange(cells.n_cells)).sum()) * d_model * 4

    @classmethod
    def find(cls, backbone: ScGPTBackbone, tokenizer: GeneTokenizer, cells: TokenizedCells, depth: int,
             device: torch.device, budget: int, weights_hash: str | None) -> SharedFrozenLayers | None:
        """The store for this backbone's frozen layers on ``cells`` (made, or found), or None when
        the data is unknown or does not fit in ``budget`` (with the other stores moved out)."""
        if not (weights_hash and cells.key):
            return None
        d_model = backbone.config.d_model
        needed = cls.size_bytes(tokenizer, cells, d_model)
        if needed > budget:
            return None
        key = (weights_hash, cells.key, tokenizer.max_seq_len, tokenizer.pad_value, tokenizer.seed, depth,
               str(device), str(compute_dtype(device)))
        store = cls._stores.pop(key, None)
        if store is None:
            while cls._stores and sum(s.flat.nelement() * 4 for s in cls._stores.values()) + needed > budget:
                cls._stores.popitem(last=False)
            store = cls(tokenizer, cells, depth, d_model, device)
        cls._stores[key] = store  # the most recently used
        store.backbone = backbone
        return store

    @classmethod
    def held_bytes(cls) -> int:
        """What every kept store holds (the process's, as they are shared)."""
        return sum(store.flat.nelement() * 4 for store in cls._stores.values())

    @classmethod
    def clear(cls) -> None:
        """Forget every store (their memory is freed)."""
        cls._stores.clear()

    def hidden(self, indices: np.ndarray, batch: dict[str, Tensor], epoch: int) -> Tensor:
        """Hidden states ``[B, L, d]`` after the frozen layers for the token ``batch`` of cells ``indices``."""
        indices = np.asarray(indices)
        width = batch["padding_mask"].shape[1]
        self._compute(indices)
        lengths = torch.as_tensor(self.lengths[indices])
        positions = torch.arange(width)
        rows = (torch.as_tensor(self.offsets[indices])[:, None] + positions[None, :]).clamp(max=len(self.flat) - 1)
        inside = positions[None, :] < lengths[:, None]  # the rest is padding: zeros, as nothing attends to it
        out = torch.where(inside[..., None], self.flat[rows], 0.0).to(self.device)
        if epoch > 0 and (changed := np.flatnonzero(self.tokenizer.varies_by_epoch(self.cells, indices))).size:
            out[torch.as_tensor(changed, device=self.device)] = _run_frozen(self.backbone, batch, changed.tolist(),
                                                                            self.depth, self.device)
        return out

    def _compute(self, indices: np.ndarray) -> None:
        """Run the frozen layers over the groups of ``indices`` not yet computed."""
        for number in np.unique(self.group_of[indices]):
            if self.done[number]:
                continue
            group = self.groups[number]
            batch = self.tokenizer.batch(self.cells, group, epoch=0)
            computed = _run_frozen(self.backbone, batch, list(range(len(group))), self.depth, self.device).cpu()
            for row, cell in enumerate(group.tolist()):
                start = int(self.offsets[cell])
                self.flat[start: start + int(self.lengths[cell])] = computed[row, : self.lengths[cell]]
            self.done[number] = True


def _run_frozen(backbone: ScGPTBackbone, batch: dict[str, Tensor], rows: list[int], depth: int,
                device: torch.device) -> Tensor:
    """The frozen layers' output ``[len(rows), L, d]`` (float32, on ``device``) for rows ``rows`` of a token batch."""
    picked = torch.as_tensor(rows)
    with torch.no_grad(), autocast(device):
        return backbone.hidden_below(batch["gene_ids"][picked].to(device), batch["values"][picked].to(device),
                                     batch["padding_mask"][picked].to(device), depth).float()
