"""``ia3``: learned rescaling of keys, values and FFN activations ((IA)^3, injected by ``peft``).
The fewest trainable weights of any backbone strategy: ``2 d + d_hid`` per layer."""

from __future__ import annotations

from dataclasses import dataclass

from peft import IA3Config as PeftIA3Config
from peft import inject_adapter_in_model
from torch import nn

from scadapt.strategies.base import LAYER_PATTERN as LAYER
from scadapt.strategies.base import TorchConfig, register
from scadapt.strategies.families import AdaptedStrategy


@dataclass
class IA3Config(TorchConfig):
    lr: float = 3e-3


@register
class IA3(AdaptedStrategy):
    name = "ia3"
    config_class = IA3Config
    description = "(IA)^3 rescaling of keys, values and FFN activations (peft)"

    @classmethod
    def adapt(cls, backbone: nn.Module, config: IA3Config) -> None:
        peft_config = PeftIA3Config(
            target_modules=LAYER + r"(self_attn\.(k|v)|linear2)", feedforward_modules=LAYER + r"linear2"
        )
        inject_adapter_in_model(peft_config, backbone)
