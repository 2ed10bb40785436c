"""The scGPT-compatible encoder (DESIGN.md section 3).

Module and parameter names follow scGPT's release checkpoints so that a state dict maps onto
this model by name; only the attention projections differ (``q/k/v/out`` here, packed ``Wqkv`` and
``out_proj`` in the files), and :mod:`scadapt.backbone.checkpoint` converts between the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scadapt.backbone.attention import SelfAttention
from scadapt.backbone.config import BackboneConfig


class GeneEncoder(nn.Module):
    """Gene-token embedding followed by LayerNorm."""

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(d_model)

    def forward(self, gene_ids: Tensor) -> Tensor:
        return self.enc_norm(self.embedding(gene_ids))


class ContinuousValueEncoder(nn.Module):
    """Projects each (binned) expression value to a ``d_model`` vector; values clamp at ``max_value``."""

    def __init__(self, d_model: int, dropout: float, max_value: float):
        super().__init__()
        self.linear1 = nn.Linear(1, d_model)
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.max_value = max_value

    def forward(self, values: Tensor) -> Tensor:
        x = values.unsqueeze(-1).clamp(max=self.max_value)
        return self.dropout(self.norm(self.linear2(F.relu(self.linear1(x)))))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: ``x = norm1(x + attn(x)); x = norm2(x + ffn(x))``."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg.d_model, cfg.nhead, cfg.attention_dropout)
        self.linear1 = nn.Linear(cfg.d_model, cfg.d_hid)
        self.linear2 = nn.Linear(cfg.d_hid, cfg.d_model)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attend_mask: Tensor | None, first_only: bool = False) -> Tensor:
        """``x``: ``[B, L, d]``. With ``first_only`` only position 0 (CLS) is computed: ``[B, 1, d]``."""
        residual = x[:, :1] if first_only else x
        attended = self.self_attn(x, attend_mask, query=residual)
        h = self.norm1(residual + self.dropout1(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(h))))
        return self.norm2(h + self.dropout2(ffn))


class TransformerStack(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.nlayers))


class ExpressionDecoder(nn.Module):
    """Per-token value prediction (scGPT's ``decoder``), used by masked-value pretraining."""

    def __init__(self, d_model: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(d_model, d_model),
            nn.LeakyReLU(),
            nn.Linear(d_model, d_model),
            nn.LeakyReLU(),
            nn.Linear(d_model, 1),
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.fc(hidden).squeeze(-1)


class CellToGeneDecoder(nn.Module):
    """Predicts each gene's value from the cell embedding (scGPT's ``mvc_decoder``, inner product)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.gene2query = nn.Linear(d_model, d_model)
        self.W = nn.Linear(d_model, d_model, bias=False)

    def forward(self, cell_emb: Tensor, gene_embs: Tensor) -> Tensor:
        query = torch.sigmoid(self.gene2query(gene_embs))  # [B, L, d]
        return torch.einsum("bld,bd->bl", self.W(query), cell_emb)


class ScGPTBackbone(nn.Module):
    """scGPT encoder: gene embedding + value encoder -> post-norm transformer -> CLS embedding.

    Inputs are the tokenizer's arrays: ``gene_ids`` ``[B, L]`` (long, ``<cls>`` first),
    ``values`` ``[B, L]`` (float bins, ``pad_value`` at padding) and ``padding_mask`` ``[B, L]``
    (bool, True at padding).
    """

    def __init__(self, cfg: BackboneConfig, pad_id: int, with_decoders: bool = True):
        super().__init__()
        self.config = cfg
        self.encoder = GeneEncoder(cfg.vocab_size, cfg.d_model, padding_idx=pad_id)
        self.value_encoder = ContinuousValueEncoder(cfg.d_model, cfg.dropout, cfg.max_value)
        self.transformer_encoder = TransformerStack(cfg)
        self.decoder = ExpressionDecoder(cfg.d_model) if with_decoders else None
        self.mvc_decoder = (
            CellToGeneDecoder(cfg.d_model) if with_decoders and cfg.do_mvc else None
        )
        nn.init.uniform_(self.encoder.embedding.weight, -0.1, 0.1)
        # recompute each layer's activations in the backward pass instead of keeping them (same
        # outputs and gradients, dropout included; less memory, about one more forward pass)
        self.checkpointing = False

    def set_dropout(self, p: float) -> None:
        """Set every dropout of the backbone (activations and attention probabilities) to ``p``.

        Eval-mode outputs do not change. Strategies call this before injecting their own
        modules, whose dropout stays as configured.
        """
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, SelfAttention):
                module.dropout = p

    @staticmethod
    def _attend_mask(padding_mask: Tensor | None) -> Tensor | None:
        """``[B, 1, 1, L]`` bool mask (True = may attend) or None when nothing is padded."""
        if padding_mask is None or not bool(padding_mask.any()):
            return None
        return (~padding_mask)[:, None, None, :]

    def embed_tokens(self, gene_ids: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Input embeddings ``[B, L, d]`` and the gene-token part alone (for the MVC decoder)."""
        gene_embs = self.encoder(gene_ids)
        return gene_embs + self.value_encoder(values), gene_embs

    def encode(
        self,
        gene_ids: Tensor,
        values: Tensor,
        padding_mask: Tensor | None,
        cls_only: bool = False,
    ) -> Tensor:
        """Hidden states ``[B, L, d]``; with ``cls_only`` the CLS embeddings ``[B, d]``.

        ``cls_only`` skips every non-CLS row of the last layer (they cannot influence the CLS
        output), saving about ``1/nlayers`` of the work.
        """
        x, _ = self.embed_tokens(gene_ids, values)
        return self._run_layers(x, padding_mask, cls_only)

    def hidden_below(self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor | None, depth: int) -> Tensor:
        """Hidden states ``[B, L, d]`` after the first ``depth`` layers (the input embeddings for 0)."""
        x, _ = self.embed_tokens(gene_ids, values)
        return self._run_layers(x, padding_mask, cls_only=False, stop=depth)

    def encode_from(self, hidden: Tensor, padding_mask: Tensor | None, depth: int) -> Tensor:
        """CLS embeddings ``[B, d]`` from :meth:`hidden_below`'s output at ``depth``: the rest of
        :meth:`forward`, so that training can keep frozen bottom layers' outputs and run the rest."""
        return self._run_layers(hidden, padding_mask, cls_only=True, start=depth)

    def _run_layers(self, x: Tensor, padding_mask: Tensor | None, cls_only: bool, start: int = 0,
                    stop: int | None = None) -> Tensor:
        layers = self.transformer_encoder.layers
        stop = len(layers) if stop is None else stop
        attend_mask = self._attend_mask(padding_mask)
        checkpointed = self.checkpointing and torch.is_grad_enabled()
        for index in range(start, stop):
            first_only = cls_only and index == len(layers) - 1
            if checkpointed:
                x = checkpoint(layers[index], x, attend_mask, first_only=first_only, use_reentrant=False)
            else:
                x = layers[index](x, attend_mask, first_only=first_only)
        return x[:, 0] if cls_only else x

    def forward(self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor | None) -> Tensor:
        """CLS cell embeddings ``[B, d]``."""
        return self.encode(gene_ids, values, padding_mask, cls_only=True)

    def pretraining_outputs(
        self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor | None
    ) -> dict[str, Tensor]:
        """Per-token value predictions from the expression decoder and (if present) the MVC decoder."""
        if self.decoder is None:
            raise RuntimeError("This backbone was built without decoders; it cannot be pretrained.")
        x, gene_embs = self.embed_tokens(gene_ids, values)
        hidden = self._run_layers(x, padding_mask, cls_only=False)
        out = {"expr_pred": self.decoder(hidden), "cell_emb": hidden[:, 0]}
        if self.mvc_decoder is not None:
            out["mvc_pred"] = self.mvc_decoder(hidden[:, 0], gene_embs)
        return out
