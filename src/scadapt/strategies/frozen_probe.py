"""``frozen_probe``: logistic regression on the frozen backbone's CLS embeddings. It answers
"is the pretrained embedding already good enough for this label space?"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scadapt.infra.errors import ScadaptError
from scadapt.strategies.base import StrategyConfig, register
from scadapt.strategies.families import ProbeStrategy


@dataclass
class FrozenProbeConfig(StrategyConfig):
    C: float = 1.0  # inverse L2 strength, on standardised embeddings
    class_weighted: bool = True
    max_iter: int = 2000

    def __post_init__(self) -> None:
        if self.C <= 0 or self.max_iter < 1:
            raise ScadaptError(f"Bad hyperparameters for frozen_probe: C > 0 and max_iter >= 1 are needed "
                               f"(got C={self.C}, max_iter={self.max_iter}).")

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}


@register
class FrozenProbe(ProbeStrategy):
    name = "frozen_probe"
    config_class = FrozenProbeConfig
    description = "logistic regression on frozen CLS embeddings"
