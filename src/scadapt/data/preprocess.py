"""Expression preprocessing for the non-scGPT baseline (scGPT's own input is binned instead)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scadapt.data.validation import value_kind

TARGET_SUM = 1e4


def log_normalized(matrix, target_sum: float = TARGET_SUM, kind: str | None = None) -> sp.csr_matrix:
    """``log1p`` of counts (or normalised values) scaled to ``target_sum`` per cell; log-normalised
    input is kept as is, and values normalised to about ``target_sum`` already are only logged.

    Whether the input is already on a log scale is decided from the values themselves
    (:func:`~scadapt.data.validation.value_kind`, or ``kind`` where the caller has it), the same
    way at fitting and at prediction.
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    if (kind := kind or value_kind(matrix)) == "log_normalized":
        return matrix
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    if kind == "normalized" and abs(np.median(totals) / target_sum - 1) < 0.1:  # normalised to it already (over
        scale = (totals > 0).astype(np.float32)  # more genes, maybe): each cell keeps its own total
    matrix = sp.diags(scale.astype(np.float32)) @ matrix
    matrix.data = np.log1p(matrix.data)
    return sp.csr_matrix(matrix)


def input_form(matrix) -> dict[str, object]:
    """What a model was trained on, so a query in another form is brought to it: the kind of values
    (:func:`~scadapt.data.validation.value_kind`) and the per-cell total they stand for, ``TARGET_SUM``
    for counts and normalised values (scaled to it) and for log-normalised ones the median of the
    cells' ``expm1`` totals (the target they were normalised to, over these genes)."""
    kind = value_kind(matrix)
    if kind != "log_normalized":
        return {"values": kind, "target_sum": TARGET_SUM}
    unlogged = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    unlogged.data = np.expm1(unlogged.data)
    return {"values": kind, "target_sum": float(np.median(np.asarray(unlogged.sum(axis=1)).ravel()))}
