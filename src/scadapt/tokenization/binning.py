"""scGPT's per-cell value binning.

Each cell's non-zero values are cut at ``n_bins - 1`` quantiles of themselves; a value gets a bin
in ``1..n_bins-1`` (zero stays zero). Where quantile edges tie, scGPT spreads values uniformly at
random between the left and right bin index. scGPT draws those numbers from NumPy's global
generator in cell order, so a cell's bins depend on the cells before it; ours come from a hash of
the seed, the cell's own genes and the order of its values, and the value's position in the cell,
so a cell gets the same bins alone, in any chunk of a file and in any request to the served model. Outside ties the bins
are scGPT's exactly (tested against its ``Preprocessor``).
Binning only depends on the order of values within a cell, so raw counts and log-normalised
values of the same cell give the same bins.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def bin_values(values: np.ndarray, n_bins: int, uniform: np.ndarray) -> np.ndarray:
    """Bins (``1..n_bins-1``) of one cell's non-zero ``values`` given uniforms in [0, 1) of the same length."""
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left = np.searchsorted(edges, values, side="right")  # np.digitize(values, edges)
    right = np.searchsorted(edges, values, side="left")  # np.digitize(values, edges, right=True)
    return np.ceil(uniform * (right - left) + left)


def bin_cells(
    indptr: np.ndarray, data: np.ndarray, n_bins: int, seed: int, gene_ids: np.ndarray | None = None
) -> np.ndarray:
    """Bin the non-zero entries of a CSR matrix row by row.

    Args:
        indptr: ``[n_cells + 1]`` CSR row pointers.
        data: ``[nnz]`` strictly positive values (explicit zeros must be removed first).
        n_bins: number of bins including the zero bin (scGPT: 51).
        seed: seed of the tie-breaking random numbers.
        gene_ids: ``[nnz]`` the genes of the values (they key the tie-breaking, with the values' order).

    Returns:
        ``[nnz]`` float32 bins aligned with ``data``.
    """
    uniforms = tie_uniforms(indptr, data, seed, gene_ids)
    bins = np.empty(len(data), dtype=np.float32)
    for start, stop in zip(indptr[:-1], indptr[1:], strict=True):
        if stop > start:
            bins[start:stop] = bin_values(data[start:stop], n_bins, uniforms[start:stop])
    return bins


def tie_uniforms(indptr: np.ndarray, data: np.ndarray, seed: int, gene_ids: np.ndarray | None = None) -> np.ndarray:
    """Numbers in [0, 1) for the values of CSR rows (``[nnz]``). Each is a function of the seed, its
    position in its cell and its cell's content only: which genes (``gene_ids``, aligned with
    ``data``) and the order of their values, so that scaling or log-transforming a cell changes
    nothing (as it changes none of its bins) and the other cells never matter."""
    if len(data) == 0:
        return np.empty(0)
    lengths = np.diff(indptr).astype(np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    position = (np.arange(len(data), dtype=np.int64) - np.repeat(indptr[:-1].astype(np.int64), lengths)).astype(np.uint64)
    content = _dense_ranks(rows, data).astype(np.uint64) << np.uint64(32)
    if gene_ids is not None:
        content = content ^ np.asarray(gene_ids).astype(np.uint64)
    filled = lengths > 0
    cell_key = np.add.reduceat(_mix(content ^ _mix(position)), indptr[:-1][filled])  # wraps mod 2**64
    key = np.repeat(cell_key, lengths[filled]) ^ _mix(np.array([seed], dtype=np.uint64))
    return (_mix(key + position * _GOLDEN) >> np.uint64(11)) * (1.0 / 2**53)


def _dense_ranks(rows: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Each value's rank among the distinct values of its row (0 for the smallest), ``[nnz]``."""
    order = np.lexsort((data, rows))
    sorted_rows, sorted_values = rows[order], data[order]
    starts_row = np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]
    new_value = starts_row | np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    running = np.cumsum(new_value)
    ranks = running - running[starts_row][np.cumsum(starts_row) - 1]
    out = np.empty(len(data), dtype=np.int64)
    out[order] = ranks
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise on ``uint64`` (arithmetic modulo 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
