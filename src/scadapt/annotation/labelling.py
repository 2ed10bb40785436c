"""One chunk of cells labelled: the step that the served model, :func:`annotate` and
``scadapt predict`` share, so a cell gets the same label whichever way it is annotated."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scadapt.models.annotator import UNASSIGNED, Annotator

log = logging.getLogger(__name__)


@dataclass
class CellLabels:
    """What a model says of ``n`` cells."""

    labels: np.ndarray         # [n] str (object): the top class, or ``unassigned`` for a cell without expression
    confidence: np.ndarray     # [n] float64: the top class's probability (0 for an unassigned cell)
    embedding: np.ndarray      # [n, d] float32: the model's representation of each cell
    probabilities: np.ndarray  # [n, n_classes] float32
    expressed: np.ndarray      # [n] bool: whether the cell expresses any gene the model reads

    def __len__(self) -> int:
        return len(self.labels)

    def table(self, index=None) -> pd.DataFrame:
        """``label`` and ``confidence`` per cell."""
        return pd.DataFrame({"label": self.labels, "confidence": self.confidence},
                            index=pd.RangeIndex(len(self)) if index is None else index)

    @classmethod
    def concat(cls, parts: list[CellLabels]) -> CellLabels:
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("labels", "confidence", "embedding", "probabilities", "expressed")))


def label_cells(annotator: Annotator, matrix, genes, progress: bool = False) -> CellLabels:
    """The cells of an expression ``matrix`` ``[n_cells, len(genes)]`` (counts or log-normalised,
    dense or sparse) whose columns are the gene symbols ``genes``, labelled by ``annotator``."""
    embedding, proba = annotator.matrix_outputs(matrix, genes, progress)
    expressed = annotator.matrix_expressed(matrix, genes)
    table = annotator.table(range(len(proba)), proba, expressed)
    return CellLabels(table["label"].to_numpy(dtype=object), table["confidence"].to_numpy(), embedding, proba,
                      expressed)


def report_unexpressed(labels: CellLabels) -> None:
    """Say how many cells express none of the model's genes (once per annotation, not per chunk)."""
    if n_silent := int((~labels.expressed).sum()):
        log.warning("%d of %d cells express none of the model's genes: labelled %r with confidence 0.",
                    n_silent, len(labels), UNASSIGNED)
