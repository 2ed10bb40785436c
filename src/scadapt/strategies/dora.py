"""``dora``: weight-decomposed LoRA (Liu et al. 2024, peft's ``use_dora``). Each target weight is
split into a magnitude vector and a direction; LoRA updates the direction and the magnitude
trains on its own, which tracks full fine-tuning more closely at almost LoRA's cost (one extra
vector per target)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from peft import LoraConfig

from scadapt.strategies.base import register
from scadapt.strategies.lora import LoRA, LoRAConfig


@dataclass
class DoRAConfig(LoRAConfig):
    pass


@register
class DoRA(LoRA):
    name = "dora"
    config_class = DoRAConfig
    description = "DoRA: LoRA with a trained magnitude per output (peft)"

    @classmethod
    def peft_config(cls, config: DoRAConfig, layers: range) -> LoraConfig:
        return dataclasses.replace(super().peft_config(config, layers), use_dora=True)
