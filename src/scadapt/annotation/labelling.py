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

    labels: np.ndarray         # [n] str (object): the top class, or ``Unassigned`` (no expression, or a novel cell)
    confidence: np.ndarray     # [n] float64: the top class's probability (0 for a cell without expression)
    predicted: np.ndarray      # [n] str (object): the top class, also where the label is ``Unassigned``
    novelty: np.ndarray        # [n] float64: the novelty score (NaN for a model without a novelty scorer)
    embedding: np.ndarray      # [n, d] float32: the model's representation of each cell
    probabilities: np.ndarray  # [n, n_classes] float32
    expressed: np.ndarray      # [n] bool: whether the cell expresses any gene the model reads

    def __len__(self) -> int:
        return len(self.labels)

    def table(self, index=None, with_novelty: bool = False) -> pd.DataFrame:
        """``label`` and ``confidence`` per cell (and ``predicted`` and ``novelty``)."""
        columns = {"label": self.labels, "confidence": self.confidence}
        if with_novelty:
            columns.update(predicted=self.predicted, novelty=self.novelty)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(self)) if index is None else index)

    @classmethod
    def concat(cls, parts: list[CellLabels]) -> CellLabels:
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("labels", "confidence", "predicted", "novelty", "embedding", "probabilities", "expressed")))


def label_cells(annotator: Annotator, matrix, genes, threshold: float = float("inf"), progress: bool = False) -> CellLabels:
    """The cells of an expression ``matrix`` ``[n_cells, len(genes)]`` (counts or log-normalised,
    dense or sparse) whose columns are the gene symbols ``genes``, labelled by ``annotator``; cells
    whose novelty is above ``threshold`` (:meth:`Annotator.unknown_threshold`) are ``Unassigned``."""
    embedding, proba = annotator.matrix_outputs(matrix, genes, progress)
    expressed = annotator.matrix_expressed(matrix, genes)
    novelty = annotator.novelty.score(embedding) if annotator.novelty is not None else None
    table = annotator.table(range(len(proba)), proba, expressed, novelty, threshold)
    return CellLabels(table["label"].to_numpy(dtype=object), table["confidence"].to_numpy(),
                      table["predicted"].to_numpy(dtype=object),
                      np.full(len(table), np.nan) if novelty is None else novelty, embedding, proba, expressed)


def report_rejected(labels: CellLabels) -> None:
    """Say how many cells are ``Unassigned`` and why (once per annotation, not per chunk)."""
    if n_silent := int((~labels.expressed).sum()):
        log.warning("%d of %d cells express none of the model's genes: labelled %r with confidence 0.",
                    n_silent, len(labels), UNASSIGNED)
    if n_novel := int(((labels.labels == UNASSIGNED) & labels.expressed).sum()):
        log.info("%d of %d cells are unlike every cell type the model was trained on: labelled %r (their closest "
                 "type is in the predicted column, the score in the novelty column).", n_novel, len(labels), UNASSIGNED)
