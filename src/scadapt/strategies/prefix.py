"""``prefix``: true prefix tuning. Each layer gets ``n_prefix`` learned key and value vectors that
every token can attend to; the base weights are untouched. (``peft``'s PrefixTuning works only
on Hugging Face models, so this is ours.)"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from optuna.distributions import CategoricalDistribution
from torch import Tensor, nn

from scadapt.backbone.attention import SelfAttention
from scadapt.strategies.base import InjectedConfig, adapted_layers, register
from scadapt.strategies.families import AdaptedStrategy
from scadapt.strategies.hyperparameters import hyperparameter


class PrefixAttention(nn.Module):
    """Wraps a :class:`SelfAttention` and supplies its learned prefix keys/values."""

    def __init__(self, base: SelfAttention, n_prefix: int):
        super().__init__()
        self.base = base
        d_model = base.q.in_features
        with torch.no_grad():  # start at keys/values of typical (unit-scale) layer inputs
            seed = torch.randn(n_prefix, d_model)
            self.prefix_k = nn.Parameter(base.k(seed).clone())
            self.prefix_v = nn.Parameter(base.v(seed).clone())

    def forward(self, x: Tensor, attend_mask: Tensor | None, query: Tensor | None = None) -> Tensor:
        batch = x.shape[0]
        prefix = (self.prefix_k.expand(batch, -1, -1).to(x.dtype), self.prefix_v.expand(batch, -1, -1).to(x.dtype))
        return self.base(x, attend_mask, query=query, prefix=prefix)


@dataclass
class PrefixConfig(InjectedConfig):
    lr: float = 5e-3
    n_prefix: int = hyperparameter(8, "learned key/value vectors prepended in each adapted layer (scPEFT: 8; "
                                      "scDLKit: 20)", at_least=1, search=CategoricalDistribution([4, 8, 16, 32]))


@register
class Prefix(AdaptedStrategy):
    name = "prefix"
    config_class = PrefixConfig
    description = "learned key/value prefixes in every adapted layer (ours)"

    @classmethod
    def adapt(cls, backbone: nn.Module, config: PrefixConfig) -> None:
        layers = backbone.transformer_encoder.layers
        for index in adapted_layers(backbone, config):
            layers[index].self_attn = PrefixAttention(layers[index].self_attn, config.n_prefix)
