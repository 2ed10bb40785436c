"""Expression preprocessing for the non-scGPT baseline (scGPT's own input is binned instead)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scadapt.data.validation import value_kind

TARGET_SUM = 1e4


def log_normalized(matrix) -> sp.csr_matrix:
    """``log1p`` of counts scaled to ``TARGET_SUM`` per cell; log-normalised input is kept as is.

    Whether the input is already on a log scale is decided from the values themselves
    (:func:`~scadapt.data.validation.value_kind`), the same way at fitting and at prediction.
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    if value_kind(matrix) == "log_normalized":
        return matrix
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    matrix = sp.diags(scale.astype(np.float32)) @ matrix
    matrix.data = np.log1p(matrix.data)
    return sp.csr_matrix(matrix)
