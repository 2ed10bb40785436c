"""Cell embeddings from a backbone, batched to waste as little work on padding as possible."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from scadapt.backbone.model import ScGPTBackbone
from scadapt.infra.devices import autocast, inference_tokens
from scadapt.infra.notices import steps_shown
from scadapt.tokenization import GeneTokenizer, TokenizedCells
from scadapt.tokenization.batching import inference_batches


def embed_cells(
    model: ScGPTBackbone,
    tokenizer: GeneTokenizer,
    cells: TokenizedCells,
    batch_size: int = 64,
    progress: bool = True,
    indices: np.ndarray | None = None,
    max_tokens: int | None = None,
) -> np.ndarray:
    """CLS embeddings ``[n, d_model]`` (float32) of ``cells[indices]`` (default: every cell), in that order."""
    return cell_outputs(model, tokenizer, cells, indices, batch_size=batch_size, progress=progress,
                        max_tokens=max_tokens)[0]


def cell_outputs(
    model: ScGPTBackbone,
    tokenizer: GeneTokenizer,
    cells: TokenizedCells,
    indices: np.ndarray | None = None,
    head: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "embedding cells",
    max_tokens: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The one batched forward pass over tokenized cells, used by training, evaluation, ``predict``
    and the served model: CLS embeddings ``[n, d_model]`` of ``cells[indices]`` and, with ``head``
    (a function of the embeddings, e.g. class probabilities), its outputs ``[n, k]``; float32, in
    the order of ``indices``.

    Cells are batched by length so that padding stays short, at most ``batch_size`` cells and
    :func:`~scadapt.infra.devices.inference_tokens` tokens a batch (or ``max_tokens``, if fewer: a memory
    budget's), and the last layer computes the CLS row only. The model is put in eval mode.
    """
    device = next(model.parameters()).device
    model.eval()
    chosen = np.arange(cells.n_cells) if indices is None else np.asarray(indices)
    embedding = np.empty((len(chosen), model.config.d_model), dtype=np.float32)
    outputs: np.ndarray | None = None
    batches = inference_batches(tokenizer.token_lengths(cells, chosen), inference_tokens(device, max_tokens),
                                batch_size)
    with torch.inference_mode(), autocast(device):
        for rows in tqdm(batches, desc=desc, disable=not (progress and steps_shown()), leave=False):
            batch = tokenizer.batch(cells, chosen[rows])
            cls = model(batch["gene_ids"].to(device), batch["values"].to(device), batch["padding_mask"].to(device))
            embedding[rows] = cls.float().cpu().numpy()
            if head is not None:
                out = head(cls).float().cpu().numpy()
                if outputs is None:
                    outputs = np.empty((len(chosen), out.shape[1]), dtype=np.float32)
                outputs[rows] = out
    return embedding, outputs
