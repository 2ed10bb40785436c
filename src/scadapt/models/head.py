"""The classifier head on the CLS embedding, shared by every backbone strategy, and the model
that joins it to a (possibly adapted) backbone."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClassifierHead(nn.Module):
    """Fixed standardisation of the embedding, ``n_layers - 1`` blocks of Linear-ReLU-LayerNorm
    (scGPT's ``ClsDecoder`` shape), dropout, then a Linear to the classes. ``n_layers=1`` is a
    plain linear (logistic) layer.

    The standardisation (``input_mean``/``input_scale`` buffers, identity until
    :meth:`set_standardization`) is set from the frozen backbone's embeddings of the training
    cells, for every strategy that trains the head: CLS embeddings of a post-norm encoder vary
    little between cells compared with their common offset, and a head on the raw values learns
    slowly or not at all. (``frozen_probe`` keeps the identity; its logistic regression is fitted
    on the raw embeddings.)
    """

    def __init__(self, d_model: int, n_classes: int, n_layers: int = 3, dropout: float = 0.0, width: int | None = None,
                 input_clip: float | None = None, layer_norm: bool = True):
        """``width``: of the hidden blocks (default ``d_model``; the ``mlp`` baseline narrows it).
        ``input_clip``: standardised inputs are clipped to ``[-input_clip, input_clip]`` (the ``mlp``
        baseline's genes: one nearly constant in the training cells would otherwise reach
        thousands of standard deviations in cells of another technology and decide alone).
        ``layer_norm``: each hidden block ends with a LayerNorm (scGPT's shape; the ``mlp`` baseline
        leaves it out)."""
        super().__init__()
        self.input_clip = input_clip
        self.register_buffer("input_mean", torch.zeros(d_model))
        self.register_buffer("input_scale", torch.ones(d_model))
        width = width or d_model
        blocks: list[nn.Module] = []
        for i in range(max(0, n_layers - 1)):
            blocks += [nn.Linear(d_model if i == 0 else width, width), nn.ReLU(), *([nn.LayerNorm(width)] if layer_norm else [])]
        self.hidden = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width if n_layers > 1 else d_model, n_classes)

    def set_standardization(self, embeddings: Tensor) -> None:
        """Centre and scale inputs by the mean and std of ``embeddings`` ``[n, d]``."""
        with torch.no_grad():
            self.input_mean.copy_(embeddings.mean(dim=0))
            self.input_scale.copy_(embeddings.std(dim=0).clamp_min(1e-6))

    def features(self, cell_embedding: Tensor) -> Tensor:
        """``[B, d]`` -> the last hidden layer's activations ``[B, width]``."""
        standardized = (cell_embedding - self.input_mean) / self.input_scale
        if self.input_clip is not None:
            standardized = standardized.clamp(-self.input_clip, self.input_clip)
        return self.hidden(standardized)

    def forward(self, cell_embedding: Tensor) -> Tensor:
        """``[B, d]`` -> logits ``[B, n_classes]``."""
        return self.out(self.dropout(self.features(cell_embedding)))


class BackboneClassifier(nn.Module):
    """Backbone (with whatever a strategy injected) -> CLS embedding -> head -> logits."""

    def __init__(self, backbone: nn.Module, head: ClassifierHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor | None) -> Tensor:
        """Token batch ``[B, L]`` -> logits ``[B, n_classes]``."""
        return self.head(self.backbone(gene_ids, values, padding_mask))


def trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """What a strategy fitted: every weight with ``requires_grad`` plus the head's input
    standardisation buffers, detached on the CPU."""
    state = {name: p.detach().cpu().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    state.update({name: b.detach().cpu().clone().contiguous() for name, b in model.named_buffers() if "input_" in name})
    return state
