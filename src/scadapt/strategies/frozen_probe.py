"""``frozen_probe``: logistic regression on the frozen backbone's CLS embeddings. It answers
"is the pretrained embedding already good enough for this label space?"."""

from __future__ import annotations

from dataclasses import dataclass

from optuna.distributions import FloatDistribution

from scadapt.strategies.base import StrategyConfig, register
from scadapt.strategies.families import ProbeStrategy
from scadapt.strategies.hyperparameters import hyperparameter


@dataclass
class FrozenProbeConfig(StrategyConfig):
    C: float = hyperparameter(1.0, "inverse L2 strength, on standardised embeddings", above=0,
                              search=FloatDistribution(1e-3, 10.0, log=True))
    class_weighted: bool = hyperparameter(True, "weigh each class by its inverse frequency")
    max_iter: int = hyperparameter(2000, "most iterations of the solver", at_least=1)


@register
class FrozenProbe(ProbeStrategy):
    name = "frozen_probe"
    config_class = FrozenProbeConfig
    description = "logistic regression on frozen CLS embeddings"
