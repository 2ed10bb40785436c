"""Annotators without a backbone: a model of the log-normalised expression of fixed genes, read
from a query in the form the model was trained on (counts are scaled to the training total).
:class:`LinearExpressionAnnotator` holds plain arrays (optional PCA, then a linear classifier),
:class:`NetworkExpressionAnnotator` a small network."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Container
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from scadapt.data.preprocess import log_normalized
from scadapt.data.validation import check_values, value_kind
from scadapt.infra.errors import CheckpointError, InputDataError
from scadapt.models.annotator import KINDS, Annotator, Settings
from scadapt.models.head import ClassifierHead, trainable_state

log = logging.getLogger(__name__)

_FORMS = {"counts": "raw counts", "normalized": "normalised values", "log_normalized": "log-normalised values"}


class ExpressionAnnotator(Annotator):
    """No backbone: a model of the log-normalised expression of fixed genes."""

    CHUNK = 4096

    def __init__(self, strategy: str, config: Settings, classes: list[str], genes: list[str]):
        super().__init__(strategy, config, classes)
        self.genes = [str(g) for g in genes]
        self._gene_set = frozenset(self.genes)  # asked once per gene of every request

    @property
    def genes_read(self) -> Container[str]:
        return self._gene_set

    def features(self, matrix, genes) -> sp.csr_matrix:
        """Log-normalised expression of the model's genes, ``[n_cells, n_genes]`` sparse (absent
        genes = 0), from a matrix ``[n_cells, len(genes)]`` with the gene symbols ``genes``."""
        check_values(matrix)
        position = np.arange(len(genes)) if list(genes) == self.genes else \
            pd.Index(np.asarray(genes, dtype=str)).get_indexer(self.genes)
        found = position >= 0
        if found.mean() < 0.5:
            raise InputDataError(
                f"Only {found.sum()} of the {len(self.genes)} genes this model uses are in the data "
                f"(e.g. missing: {', '.join(np.asarray(self.genes)[~found][:5])}). Use gene symbols as var_names."
            )
        self._say_form(kind := value_kind(matrix))
        normalized = log_normalized(matrix, self.trained_on["target_sum"], kind)  # the kind read once per chunk
        if found.all():
            same_order = len(position) == normalized.shape[1] and (position == np.arange(len(position))).all()
            return normalized if same_order else normalized[:, position]
        select = sp.csr_matrix((np.ones(int(found.sum()), dtype=np.float32), (position[found], np.flatnonzero(found))),
                               shape=(normalized.shape[1], len(self.genes)))  # data columns -> model columns
        return sp.csr_matrix(normalized @ select)

    def _say_form(self, query: str) -> None:
        """Say once per model and form what was done to a query whose values are not of the kind
        the model was trained on (counts, normalised or log-normalised)."""
        trained, said = self.trained_on["values"], self.__dict__.setdefault("_forms_said", set())
        if trained not in ("unknown", query) and query not in said:
            said.add(query)
            log.warning("The query holds %s; this model was trained on %s, log-normalised to %s per cell: %s", _FORMS[query],
                        _FORMS[trained], f"{self.trained_on['target_sum']:,.0f}", "the query is read as it is."
                        if query == "log_normalized" else "each cell was scaled to that total and log1p-transformed.")

    def matrix_outputs(self, matrix, genes, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Computed :data:`CHUNK` cells at a time: a model on every gene would need a dense
        ``[n_cells, n_genes]`` matrix otherwise."""
        parts = [self.feature_outputs(self.features(matrix[i: i + self.CHUNK], genes))
                 for i in range(0, matrix.shape[0], self.CHUNK)] or [self.feature_outputs(self.features(matrix, genes))]
        return np.concatenate([e for e, _ in parts]), np.concatenate([p for _, p in parts])

    @abstractmethod
    def feature_outputs(self, features: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and probabilities (float32) of log-normalised features ``[n, n_genes]`` (sparse)."""

    def _manifest(self) -> dict[str, Any]:
        return {**super()._manifest(), "genes": self.genes}


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


class LinearExpressionAnnotator(ExpressionAnnotator):
    """Log-normalised expression -> optional PCA -> standardised (and, if ``max_scaled``, clipped)
    features -> multinomial logistic regression, all as plain float64 arrays.

    The embedding is the leading ``EMBEDDING_COMPONENTS`` PCA scores (scanpy's default for a
    neighbour graph; the later components help the classifier, but as distances for novelty and
    voting they mostly add the training cells' noise), or without PCA the class scores (logits)."""

    kind = "expression"
    EMBEDDING_COMPONENTS = 50
    LINEAR = ("score_mean", "score_scale", "coef", "intercept")
    PCA = ("pca_mean", "pca_components")

    def __init__(self, strategy: str, config: Settings, classes: list[str], genes: list[str],
                 arrays: dict[str, np.ndarray], max_scaled: float | None = None):
        super().__init__(strategy, config, classes, genes)
        names = self.LINEAR + (self.PCA if "pca_components" in arrays else ())
        self.arrays = {name: np.asarray(arrays[name], dtype=np.float64) for name in names}
        self.max_scaled = max_scaled

    def feature_outputs(self, features: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        a = self.arrays
        if "pca_components" in a:  # the centring folded into an offset, so the cells stay sparse
            scores = np.asarray(features @ a["pca_components"].T) - a["pca_mean"] @ a["pca_components"].T
            standardized = (scores - a["score_mean"]) / a["score_scale"]
        elif not a["score_mean"].any():  # scaled, not centred (logreg): zeros stay zeros, the cells stay sparse
            scores = None
            standardized = sp.csr_matrix(features @ sp.diags(1.0 / a["score_scale"]), dtype=np.float64)
        else:
            scores = features.toarray().astype(np.float64)
            standardized = (scores - a["score_mean"]) / a["score_scale"]
        if self.max_scaled is not None:
            values = standardized.data if sp.issparse(standardized) else standardized
            np.minimum(values, self.max_scaled, out=values)
        logits = np.asarray(standardized @ a["coef"].T) + a["intercept"]
        embedding = scores[:, : self.EMBEDDING_COMPONENTS] if "pca_components" in a else logits
        return embedding.astype(np.float32), _softmax(logits).astype(np.float32)

    @property
    def fitted_parameters(self) -> int:
        return int(sum(array.size for array in self.arrays.values()))

    def _weights(self) -> tuple[dict, str]:
        return {name: np.ascontiguousarray(value) for name, value in self.arrays.items()}, "numpy"

    def _manifest(self) -> dict[str, Any]:
        return {**super()._manifest(), "max_scaled": self.max_scaled}

    @classmethod
    def from_saved(cls, manifest, config, weights, device) -> LinearExpressionAnnotator:
        return cls(manifest["strategy"], config, manifest["classes"], manifest["genes"], weights,
                   manifest.get("max_scaled"))


class NetworkExpressionAnnotator(ExpressionAnnotator):
    """Log-normalised expression of fixed genes -> :class:`ClassifierHead` (standardisation,
    hidden blocks, linear). The embedding is the last hidden layer."""

    kind = "expression_network"

    def __init__(self, strategy: str, config: Settings, classes: list[str], genes: list[str],
                 network: ClassifierHead, shape: dict[str, float]):
        super().__init__(strategy, config, classes, genes)
        self.network, self.shape = network.eval(), dict(shape)

    @staticmethod
    def make_network(n_genes: int, n_classes: int, n_layers: int, width: int, dropout: float = 0.0,
                     input_clip: float | None = None, layer_norm: bool = True) -> ClassifierHead:
        return ClassifierHead(n_genes, n_classes, n_layers, dropout, width=width, input_clip=input_clip,
                              layer_norm=layer_norm)

    def feature_outputs(self, features: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        self.network.eval()
        device = next(self.network.parameters()).device
        with torch.inference_mode():
            x = torch.as_tensor(features.toarray(), dtype=torch.float32, device=device)
            hidden = self.network.features(x)
            proba = torch.softmax(self.network.out(hidden), dim=-1)
        return hidden.float().cpu().numpy(), proba.float().cpu().numpy()

    @property
    def fitted_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def _weights(self) -> tuple[dict, str]:
        return trainable_state(self.network), "torch"

    def _manifest(self) -> dict[str, Any]:
        return {**super()._manifest(), "network": self.shape}

    @classmethod
    def from_saved(cls, manifest, config, weights, device) -> NetworkExpressionAnnotator:
        shape = manifest["network"]
        network = cls.make_network(len(manifest["genes"]), len(manifest["classes"]), shape["n_layers"], shape["width"],
                                   # networks saved before these existed: unclipped, with LayerNorm
                                   input_clip=shape.get("input_clip"), layer_norm=shape.get("layer_norm", True))
        try:
            network.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"Saved network weights do not fit the model ({str(error)[:300]}).") from None
        return cls(manifest["strategy"], config, manifest["classes"], manifest["genes"], network.to(device), shape)


EXPRESSION_KINDS: dict[str, type[ExpressionAnnotator]] = {
    kind.kind: kind for kind in (LinearExpressionAnnotator, NetworkExpressionAnnotator)}
assert set(EXPRESSION_KINDS) < set(KINDS)
