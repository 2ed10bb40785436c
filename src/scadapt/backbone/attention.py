"""Multi-head self-attention with separate q/k/v/out projections.

The projections are plain ``nn.Linear`` modules *called as modules*, so adapters that ``peft`` (or
our own strategies) wrap around them act in training and in eval mode alike. ``torch``'s
``nn.MultiheadAttention`` reads its packed weights directly on its fast path, which silently
bypasses such adapters (DESIGN.md section 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """Scaled dot-product self-attention over ``[batch, seq, d_model]`` inputs."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.nhead = nhead
        self.head_dim = d_model // nhead
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.nhead, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        attend_mask: Tensor | None,
        query: Tensor | None = None,
        prefix: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Attend from ``query`` (default: ``x``) to all positions of ``x``.

        Args:
            x: ``[B, L, d]`` keys/values source.
            attend_mask: ``[B, 1, 1, L]`` bool, True where a key may be attended; None = all.
            query: ``[B, Lq, d]`` query source; lets the last layer compute only the CLS row.
            prefix: extra keys and values ``[B, P, d]`` (already projected) placed before the
                sequence and always attended: prefix tuning.

        Returns:
            ``[B, Lq, d]``.
        """
        query = x if query is None else query
        q = self._heads(self.q(query))
        k = self._heads(self.k(x))
        v = self._heads(self.v(x))
        if prefix is not None:
            k = torch.cat([self._heads(prefix[0]), k], dim=2)
            v = torch.cat([self._heads(prefix[1]), v], dim=2)
            if attend_mask is not None:
                always = attend_mask.new_ones(*attend_mask.shape[:-1], prefix[0].shape[1])
                attend_mask = torch.cat([always, attend_mask], dim=-1)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend_mask, dropout_p=self.dropout if self.training else 0.0
        )
        batch, _, seq_q, _ = attended.shape
        return self.out(attended.transpose(1, 2).reshape(batch, seq_q, -1))
