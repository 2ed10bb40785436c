"""Closed-form-ish fits: logistic regression (``frozen_probe``, ``pca_logreg``, ``logreg``), PCA and
gene scaling."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from scadapt.data.preprocess import log_normalized

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogisticFit:
    """Multinomial logistic regression on standardised features: ``logits = ((x - mean) / scale) @ coef.T + intercept``."""

    mean: np.ndarray  # [d]
    scale: np.ndarray  # [d]
    coef: np.ndarray  # [n_classes, d]
    intercept: np.ndarray  # [n_classes]


def fit_logistic(features: np.ndarray, codes: np.ndarray, n_classes: int, C: float, class_weighted: bool,
                 max_iter: int, seed: int) -> LogisticFit:
    """Fit on ``features`` ``[n, d]`` (standardised here) and integer labels ``codes`` in ``0..n_classes-1``."""
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-8] = 1.0
    coef, intercept = fit_linear((features - mean) / scale, codes, n_classes, C, "l2", class_weighted, max_iter, seed)
    return LogisticFit(mean, scale, coef, intercept)


def fit_linear(features, codes: np.ndarray, n_classes: int, C: float, penalty: str, class_weighted: bool,
               max_iter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on ready features ``[n, d]`` (dense or sparse) with an L1 or
    L2 penalty of strength ``1/C``; ``(coef [n_classes, d], intercept [n_classes])``, zero rows for
    classes absent from ``codes``."""
    model = LogisticRegression(C=C, l1_ratio=1.0 if penalty == "l1" else 0.0, solver="saga" if penalty == "l1" else "lbfgs",
                               class_weight="balanced" if class_weighted else None, max_iter=max_iter,
                               random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(features, codes)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("The %s logistic regression (C=%g) stopped at max_iter=%d before converging; its coefficients are "
                    "used as they are (raise max_iter for a closer fit).", penalty.upper(), C, max_iter)
    coef = np.zeros((n_classes, features.shape[1]))
    intercept = np.zeros(n_classes)
    if len(model.classes_) == 2:  # sklearn keeps one row for two classes: logit of the second
        coef[model.classes_[1]], intercept[model.classes_[1]] = model.coef_[0], model.intercept_[0]
    else:
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
    return coef, intercept


def gene_scale(logged: sp.spmatrix) -> np.ndarray:
    """Per-gene standard deviation ``[G]`` of log-normalised cells ``[n, G]`` (1 for constant genes)."""
    mean = np.asarray(logged.mean(axis=0)).ravel()
    variance = np.asarray(logged.multiply(logged).mean(axis=0)).ravel() - mean**2
    scale = np.sqrt(np.maximum(variance, 0.0))
    scale[scale < 1e-8] = 1.0
    return scale


def load_into_head(head, fit: LogisticFit) -> None:
    """A one-layer ``ClassifierHead`` that computes the fitted logits: the standardisation goes to
    its input buffers, the coefficients to its linear layer."""
    with torch.no_grad():
        head.input_mean.copy_(torch.as_tensor(fit.mean, dtype=head.input_mean.dtype))
        head.input_scale.copy_(torch.as_tensor(fit.scale, dtype=head.input_scale.dtype))
        head.out.weight.copy_(torch.as_tensor(fit.coef, dtype=head.out.weight.dtype))
        head.out.bias.copy_(torch.as_tensor(fit.intercept, dtype=head.out.bias.dtype))


@dataclass(frozen=True)
class PCALogisticFit:
    genes: list[str]
    arrays: dict[str, np.ndarray]  # what ExpressionAnnotator needs

    @property
    def n_components(self) -> int:
        """Components actually used (at most cells - 1 and genes, whatever was asked for)."""
        return int(self.arrays["pca_components"].shape[0])


def fit_pca_logistic(matrix, genes, codes: np.ndarray, n_classes: int, n_components: int, n_top_genes: int,
                     C: float, class_weighted: bool, max_iter: int, seed: int) -> PCALogisticFit:
    """Log-normalise the training cells ``matrix`` ``[n, G]``, keep the ``n_top_genes`` most
    variable genes, PCA to ``n_components`` and fit a logistic regression on the scores."""
    logged = log_normalized(matrix)
    keep = most_variable(logged, n_top_genes)
    selected = sp.csr_matrix(logged[:, keep], dtype=np.float64)
    components = max(1, min(n_components, selected.shape[0] - 1, selected.shape[1]))
    if selected.shape[1] <= GRAM_PCA_MAX_GENES:
        mean, axes = gram_pca(selected, components)
    else:  # too many genes for a genes x genes matrix: scikit-learn's (randomised) PCA on dense cells
        pca = PCA(n_components=components, random_state=seed).fit(selected.toarray())
        mean, axes = pca.mean_, pca.components_
    scores = np.asarray(selected @ axes.T) - mean @ axes.T
    fit = fit_logistic(scores, codes, n_classes, C, class_weighted, max_iter, seed)
    arrays = {"pca_mean": mean, "pca_components": axes, "score_mean": fit.mean,
              "score_scale": fit.scale, "coef": fit.coef, "intercept": fit.intercept}
    return PCALogisticFit([str(g) for g in np.asarray(genes)[keep]], arrays)


GRAM_PCA_MAX_GENES = 5000  # a genes x genes covariance of float64 up to 200 MB


def gram_pca(cells: sp.csr_matrix, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean ``[G]`` and the first ``n_components`` principal axes ``[k, G]`` of sparse cells
    ``[n, G]``, from the eigenvectors of their ``G x G`` covariance: the cells are never densified
    or centred, so memory does not grow with their number. Each axis's largest entry is positive."""
    n_cells = cells.shape[0]
    mean = np.asarray(cells.mean(axis=0)).ravel()
    covariance = (np.asarray((cells.T @ cells).todense()) - n_cells * np.outer(mean, mean)) / max(n_cells - 1, 1)
    values, vectors = np.linalg.eigh(covariance)
    axes = vectors[:, np.argsort(-values, kind="stable")[:n_components]].T
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    return mean, axes * signs[:, None]


def most_variable(logged: sp.spmatrix, n_top_genes: int) -> np.ndarray:
    """Column indices of the ``n_top_genes`` most variable genes (all for 0), in gene order."""
    mean = np.asarray(logged.mean(axis=0)).ravel()
    variance = np.asarray(logged.multiply(logged).mean(axis=0)).ravel() - mean**2
    return np.sort(np.argsort(-variance, kind="stable")[: n_top_genes or len(variance)])
