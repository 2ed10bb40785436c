"""``adapter``: bottleneck adapters (Houlsby et al.) after the attention output and the FFN of
each adapted layer: ``y + up(relu(down(y)))``. The up-projection starts at zero, so training
starts from exactly the pretrained function."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import CategoricalDistribution
from torch import Tensor, nn

from scadapt.infra.errors import ScadaptError
from scadapt.strategies.base import InjectedConfig, adapted_layers, register
from scadapt.strategies.families import AdaptedStrategy
from scadapt.strategies.hyperparameters import hyperparameter


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
class AdapterConfig(InjectedConfig):
    ratio: float = hyperparameter(0.25, "bottleneck width as a fraction of d_model (scPEFT: 0.25)", above=0,
                                  search=CategoricalDistribution([0.0625, 0.125, 0.25]))

    @classmethod
    def from_saved(cls, params: Mapping[str, Any]) -> AdapterConfig:
        """Also reads annotators saved when ``layers`` was ``"all"`` or ``"first_half"``."""
        legacy = str(params.get("layers", "")).strip()
        if legacy == "first_half":
            raise ScadaptError(
                "This adapter annotator puts its adapters in the bottom half of the layers (layers='first_half'), "
                "which scadapt no longer builds: adapters now sit in the top `layers` layers, so that the frozen "
                "layers below run once per fit. Retrain it with `scadapt train --strategy adapter` (or tune).")
        return super().from_saved({**params, "layers": 0} if legacy == "all" else params)


@register
class Adapter(AdaptedStrategy):
    name = "adapter"
    config_class = AdapterConfig
    description = "bottleneck adapters after attention and FFN (ours)"

    @classmethod
    def adapt(cls, backbone: nn.Module, config: AdapterConfig) -> None:
        layers = backbone.transformer_encoder.layers
        width = max(1, round(backbone.config.d_model * config.ratio))
        for index in adapted_layers(backbone, config):
            layer = layers[index]
            layer.self_attn.out = Bottleneck(layer.self_attn.out, width)
            layer.linear2 = Bottleneck(layer.linear2, width)
