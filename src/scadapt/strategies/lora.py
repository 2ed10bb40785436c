"""``lora``: low-rank updates of the attention projections and FFN linears, injected by ``peft``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from scadapt.infra.errors import ScadaptError
from scadapt.strategies.base import InjectedConfig, adapted_layers, layer_prefix, register
from scadapt.strategies.families import AdaptedStrategy

TARGETS = {  # modules within each adapted layer
    "qv": r"self_attn\.(q|v)",
    "attention": r"self_attn\.(q|k|v|out)",
    "attention_ffn": r"(self_attn\.(q|k|v|out)|linear1|linear2)",
}


@dataclass
class LoRAConfig(InjectedConfig):
    r: int = 8
    alpha: float = 16.0
    # 0 by default: on CPU, dropout on the input of every target made a PBMC epoch 1.5x slower
    # (benchmarks/RESULTS.md); it stays in the search space.
    lora_dropout: float = 0.0
    targets: str = "attention_ffn"  # one of TARGETS

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        return {
            **super().search_space(trial),
            "r": trial.suggest_categorical("r", [4, 8, 16]),
            "targets": trial.suggest_categorical("targets", list(TARGETS)),
            "lora_dropout": trial.suggest_categorical("lora_dropout", [0.0, 0.1]),
        }


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
    if targets not in TARGETS:
        raise ScadaptError(f"LoRA targets must be one of {', '.join(TARGETS)}, got {targets!r}.")
    return layer_prefix(layers) + TARGETS[targets]
