"""``adapter``: bottleneck adapters (Houlsby et al.) after the attention output and the FFN of
each chosen layer: ``y + up(relu(down(y)))``. The up-projection starts at zero, so training
starts from exactly the pretrained function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from scadapt.errors import ScadaptError
from scadapt.strategies.base import TorchConfig, register
from scadapt.strategies.families import AdaptedStrategy


class Bottleneck(nn.Module):
    """Wraps a base ``nn.Linear`` and adds a residual bottleneck on its output."""

    def __init__(self, base: nn.Linear, width: int):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.out_features, width)
        self.up = nn.Linear(width, base.out_features)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        return y + self.up(nn.functional.relu(self.down(y)))


@dataclass
class AdapterConfig(TorchConfig):
    ratio: float = 0.25  # bottleneck width as a fraction of d_model (scPEFT: 0.25)
    layers: str = "all"  # "all" or "first_half" (scPEFT)

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        return {
            **super().search_space(trial),
            "ratio": trial.suggest_categorical("ratio", [0.0625, 0.125, 0.25]),
            "layers": trial.suggest_categorical("layers", ["all", "first_half"]),
        }


@register
class Adapter(AdaptedStrategy):
    name = "adapter"
    config_class = AdapterConfig
    description = "bottleneck adapters after attention and FFN (ours)"

    @classmethod
    def adapt(cls, backbone: nn.Module, config: AdapterConfig) -> None:
        if config.layers not in ("all", "first_half"):
            raise ScadaptError(f"adapter layers must be 'all' or 'first_half', got {config.layers!r}.")
        layers = backbone.transformer_encoder.layers
        chosen = layers if config.layers == "all" else layers[: max(1, len(layers) // 2)]
        width = max(1, round(backbone.config.d_model * config.ratio))
        for layer in chosen:
            layer.self_attn.out = Bottleneck(layer.self_attn.out, width)
            layer.linear2 = Bottleneck(layer.linear2, width)
