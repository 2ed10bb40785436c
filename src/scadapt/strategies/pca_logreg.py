"""``pca_logreg``: the honest baseline. Log-normalised expression -> PCA -> logistic regression;
no backbone at all (Boiarsky et al. found such a model matches scBERT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scadapt.errors import ScadaptError
from scadapt.strategies.base import Strategy, StrategyConfig
from scadapt.strategies.registry import register


@dataclass
class PCALogRegConfig(StrategyConfig):
    n_components: int = 50
    n_top_genes: int = 2000  # most variable genes on the training cells (0: all)
    C: float = 1.0  # inverse L2 strength of the logistic regression
    class_weighted: bool = True
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if self.n_components < 1 or self.C <= 0 or self.n_top_genes < 0 or self.max_iter < 1:
            raise ScadaptError(
                f"Bad hyperparameters for pca_logreg: n_components >= 1, C > 0, n_top_genes >= 0 and max_iter >= 1 "
                f"are needed (got n_components={self.n_components}, C={self.C}, n_top_genes={self.n_top_genes}, "
                f"max_iter={self.max_iter})."
            )

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        return {
            "n_components": trial.suggest_int("n_components", 10, 100, log=True),
            "C": trial.suggest_float("C", 1e-3, 10.0, log=True),
        }


@register
class PCALogReg(Strategy):
    name = "pca_logreg"
    kind = "expression"
    config_class = PCALogRegConfig
    description = "PCA + logistic regression on log-normalised expression"
