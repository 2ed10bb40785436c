"""``lora``: low-rank updates of the attention projections and FFN linears, injected by ``peft``."""

from __future__ import annotations

from dataclasses import dataclass

from optuna.distributions import CategoricalDistribution
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from scadapt.strategies.base import InjectedConfig, adapted_layers, layer_prefix, register
from scadapt.strategies.families import AdaptedStrategy
from scadapt.strategies.hyperparameters import hyperparameter

TARGETS = {  # modules within each adapted layer
    "qv": r"self_attn\.(q|v)",
    "attention": r"self_attn\.(q|k|v|out)",
    "attention_ffn": r"(self_attn\.(q|k|v|out)|linear1|linear2)",
}


@dataclass
class LoRAConfig(InjectedConfig):
    r: int = hyperparameter(8, "rank of each update", at_least=1, search=CategoricalDistribution([4, 8, 16]))
    alpha: float = hyperparameter(16.0, "scale of the update (alpha / r)", above=0)
    # 0 by default: on CPU, dropout on the input of every target made a PBMC epoch 1.5x slower
    # (benchmarks/RESULTS.md); it stays in the search space.
    lora_dropout: float = hyperparameter(0.0, "dropout on the input of each target", at_least=0, below=1,
                                         search=CategoricalDistribution([0.0, 0.1]))
    targets: str = hyperparameter("attention_ffn", "the modules adapted in each layer: qv (query, value), attention "
                                  "(q, k, v, out) or attention_ffn (those and the FFN linears)", choices=tuple(TARGETS),
                                  search=CategoricalDistribution(list(TARGETS)))


@register
class LoRA(AdaptedStrategy):
    name = "lora"
    config_class = LoRAConfig
    description = "LoRA on attention q/k/v/out and FFN linears (peft)"

    @classmethod
    def peft_config(cls, config: LoRAConfig, layers: range) -> LoraConfig:
        return LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.lora_dropout,
                          target_modules=target_pattern(config.targets, layers))

    @classmethod
    def adapt(cls, backbone: nn.Module, config: LoRAConfig) -> None:
        inject_adapter_in_model(cls.peft_config(config, adapted_layers(backbone, config)), backbone)


def target_pattern(targets: str, layers: range) -> str:
    """The peft ``target_modules`` regex of a ``targets`` name in the encoder layers ``layers``."""
    return layer_prefix(layers) + TARGETS[targets]
