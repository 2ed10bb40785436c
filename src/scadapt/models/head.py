"""The classifier head on the CLS embedding, shared by every backbone strategy, and the model
that joins it to a (possibly adapted) backbone."""

from __future__ import annotations

from torch import Tensor, nn


class ClassifierHead(nn.Module):
    """``n_layers - 1`` blocks of Linear-ReLU-LayerNorm (scGPT's ``ClsDecoder`` shape), dropout,
    then a Linear to the classes. ``n_layers=1`` is a plain linear (logistic) layer."""

    def __init__(self, d_model: int, n_classes: int, n_layers: int = 3, dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        for _ in range(max(0, n_layers - 1)):
            blocks += [nn.Linear(d_model, d_model), nn.ReLU(), nn.LayerNorm(d_model)]
        self.hidden = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, n_classes)

    def forward(self, cell_embedding: Tensor) -> Tensor:
        """``[B, d]`` -> logits ``[B, n_classes]``."""
        return self.out(self.dropout(self.hidden(cell_embedding)))


class AnnotationModel(nn.Module):
    """Backbone (with whatever a strategy injected) -> CLS embedding -> head -> logits."""

    def __init__(self, backbone: nn.Module, head: ClassifierHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor | None) -> Tensor:
        """Token batch ``[B, L]`` -> logits ``[B, n_classes]``."""
        return self.head(self.backbone(gene_ids, values, padding_mask))
