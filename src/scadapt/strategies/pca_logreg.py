"""``pca_logreg``: the honest baseline. Log-normalised expression -> PCA -> logistic regression;
no backbone at all (Boiarsky et al. found such a model matches scBERT).

200 components by default: on ``pancreas_small`` held out by each of its five technologies and on
``pbmc68k_reduced`` (3 seeds, ``benchmarks/baselines.py``'s cells) the default settings reached a mean
test macro-F1 of 0.941 and 0.650 with 50 components (scanpy's default), 0.947 / 0.636 with 100,
0.951 / 0.698 with 200 and 0.937 / 0.633 with 300: fewer drop cell-type differences of small
classes, more fit the training technologies' noise. A study still searches 10 to 300."""

from __future__ import annotations

from dataclasses import dataclass

from optuna.distributions import FloatDistribution, IntDistribution

from scadapt.fitting.linear import fit_pca_logistic
from scadapt.models.expression import LinearExpressionAnnotator
from scadapt.strategies.base import Fitted, StrategyConfig, register
from scadapt.strategies.families import ExpressionStrategy
from scadapt.strategies.hyperparameters import hyperparameter


@dataclass
class PCALogRegConfig(StrategyConfig):
    n_components: int = hyperparameter(200, "principal components kept (capped at the training cells - 1 and the "
                                            "genes)", at_least=1, search=IntDistribution(10, 300, log=True))
    n_top_genes: int = hyperparameter(2000, "most variable genes on the training cells (0: all)", at_least=0)
    C: float = hyperparameter(1.0, "inverse L2 strength of the logistic regression", above=0,
                              search=FloatDistribution(1e-3, 10.0, log=True))
    class_weighted: bool = hyperparameter(True, "weigh each class by its inverse frequency")
    max_iter: int = hyperparameter(1000, "most iterations of the solver", at_least=1)


@register
class PCALogReg(ExpressionStrategy):
    name = "pca_logreg"
    config_class = PCALogRegConfig
    description = "PCA + logistic regression on log-normalised expression"

    def fit(self, data, progress: bool = True, on_epoch=None) -> Fitted:
        ctx, config = data, self.config
        train = ctx.split.train
        result = fit_pca_logistic(ctx.adata.X[train], ctx.adata.var_names, ctx.codes[train], len(ctx.classes),
                                  config.n_components, config.n_top_genes, config.C, config.class_weighted,
                                  config.max_iter, config.seed)
        annotator = LinearExpressionAnnotator(self.name, config, ctx.classes, result.genes, result.arrays)
        adjusted = {"n_components": result.n_components} if result.n_components != config.n_components else {}
        return Fitted(annotator, None, annotator.fitted_parameters, adjusted)
