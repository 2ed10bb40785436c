"""scGPT's per-cell value binning.

Each cell's non-zero values are cut at ``n_bins - 1`` quantiles of themselves; a value gets a bin
in ``1..n_bins-1`` (zero stays zero). Where quantile edges tie, scGPT spreads values uniformly at
random between the left and right bin index; we draw those numbers from one ``RandomState`` in
cell order, which reproduces the reference exactly under ``np.random.seed(seed)``.
Binning only depends on the order of values within a cell, so raw counts and log-normalised
values of the same cell give the same bins.
"""

from __future__ import annotations

import numpy as np


def bin_values(values: np.ndarray, n_bins: int, uniform: np.ndarray) -> np.ndarray:
    """Bins (``1..n_bins-1``) of one cell's non-zero ``values`` given uniforms in [0, 1) of the same length."""
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left = np.searchsorted(edges, values, side="right")  # np.digitize(values, edges)
    right = np.searchsorted(edges, values, side="left")  # np.digitize(values, edges, right=True)
    return np.ceil(uniform * (right - left) + left)


def bin_cells(
    indptr: np.ndarray, data: np.ndarray, n_bins: int, seed: int
) -> np.ndarray:
    """Bin the non-zero entries of a CSR matrix row by row.

    Args:
        indptr: ``[n_cells + 1]`` CSR row pointers.
        data: ``[nnz]`` strictly positive values (explicit zeros must be removed first).
        n_bins: number of bins including the zero bin (scGPT: 51).
        seed: seed of the tie-breaking random numbers.

    Returns:
        ``[nnz]`` float32 bins aligned with ``data``.
    """
    uniforms = np.random.RandomState(seed).rand(len(data))
    bins = np.empty(len(data), dtype=np.float32)
    for start, stop in zip(indptr[:-1], indptr[1:], strict=True):
        if stop > start:
            bins[start:stop] = bin_values(data[start:stop], n_bins, uniforms[start:stop])
    return bins
