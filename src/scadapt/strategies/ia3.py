"""``ia3``: learned rescaling of keys, values and FFN activations ((IA)^3, injected by ``peft``).
The fewest trainable weights of any backbone strategy: ``2 d + d_hid`` per layer."""

from __future__ import annotations

from dataclasses import dataclass

from peft import IA3Config as PeftIA3Config
from peft import inject_adapter_in_model
from torch import nn

from scadapt.strategies.base import InjectedConfig, adapted_layers, layer_prefix, register
from scadapt.strategies.families import AdaptedStrategy


@dataclass
class IA3Config(InjectedConfig):
    lr: float = 3e-3


@register
class IA3(AdaptedStrategy):
    name = "ia3"
    config_class = IA3Config
    description = "(IA)^3 rescaling of keys, values and FFN activations (peft)"

    @classmethod
    def adapt(cls, backbone: nn.Module, config: IA3Config) -> None:
        prefix = layer_prefix(adapted_layers(backbone, config))
        peft_config = PeftIA3Config(
            target_modules=prefix + r"(self_attn\.(k|v)|linear2)", feedforward_modules=prefix + r"linear2"
        )
        inject_adapter_in_model(peft_config, backbone)
