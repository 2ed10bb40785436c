"""``full``: every backbone weight trains with the head. The unconstrained reference point; it
needs a low learning rate, warmup and clipping (scDLKit saw it collapse at 5e-4)."""

from __future__ import annotations

from dataclasses import dataclass

from optuna.distributions import FloatDistribution
from torch import nn

from scadapt.strategies.base import TorchConfig, register
from scadapt.strategies.families import AdaptedStrategy
from scadapt.strategies.hyperparameters import hyperparameter


@dataclass
class FullConfig(TorchConfig):
    lr: float = hyperparameter(1e-4, "peak learning rate of AdamW (linear warm-up, then cosine decay)", above=0,
                               search=FloatDistribution(1e-5, 3e-4, log=True))
    freeze_gene_embedding: bool = hyperparameter(False, "keep the gene embedding (~60% of scGPT's weights) frozen")


@register
class Full(AdaptedStrategy):
    name = "full"
    config_class = FullConfig
    description = "full fine-tuning of the backbone and head"
    relative_cost = 1.0  # the reference of every other strategy's

    @classmethod
    def adapt(cls, backbone: nn.Module, config: FullConfig) -> None:
        for param in backbone.parameters():
            param.requires_grad_(True)
        if config.freeze_gene_embedding:
            backbone.encoder.embedding.weight.requires_grad_(False)
