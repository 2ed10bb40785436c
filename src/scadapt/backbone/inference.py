"""Cell embeddings from a backbone, batched to waste as little work on padding as possible."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from scadapt.backbone.model import ScGPTBackbone
from scadapt.tokenization import GeneTokenizer, TokenizedCells
from scadapt.training.batching import length_grouped_batches
from scadapt.training.devices import autocast


def embed_cells(
    model: ScGPTBackbone,
    tokenizer: GeneTokenizer,
    cells: TokenizedCells,
    batch_size: int = 32,
    progress: bool = True,
    indices: np.ndarray | None = None,
) -> np.ndarray:
    """CLS embeddings ``[n, d_model]`` (float32) of ``cells[indices]`` (default: every cell), in that order.

    Cells are batched by length so that padding stays short, and the last layer computes the CLS
    row only. The model is put in eval mode.
    """
    device = next(model.parameters()).device
    model.eval()
    chosen = np.arange(cells.n_cells) if indices is None else np.asarray(indices)
    out = np.empty((len(chosen), model.config.d_model), dtype=np.float32)
    batches = length_grouped_batches(cells.lengths[chosen], batch_size, rng=None)
    with torch.inference_mode(), autocast(device):
        for rows in tqdm(batches, desc="embedding cells", disable=not progress, leave=False):
            batch = tokenizer.batch(cells, chosen[rows])
            emb = model(
                batch["gene_ids"].to(device),
                batch["values"].to(device),
                batch["padding_mask"].to(device),
            )
            out[rows] = emb.float().cpu().numpy()
    return out
