"""A content digest of a dataset as a job uses it, so a result can be tied to the exact cells,
values and labels it came from (not to a file name whose content may change)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
from anndata import AnnData


def content_digest(adata: AnnData, obs_columns: Iterable[str | None] = ()) -> str:
    """A hex digest of ``adata.X`` (values and sparsity), the cell and gene names and the
    ``obs_columns`` given (e.g. the labels): equal for the same data however it was stored."""
    digest = hashlib.blake2b(digest_size=16)
    matrix = adata.X
    if sp.issparse(matrix):
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        parts = (matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data.astype(np.float32))
    else:
        parts = (np.ascontiguousarray(np.asarray(matrix), dtype=np.float32),)
    digest.update(repr(tuple(matrix.shape)).encode())
    for part in parts:
        digest.update(memoryview(np.ascontiguousarray(part)).cast("B"))
    for names in (adata.obs_names, adata.var_names):
        digest.update("\0".join(map(str, names)).encode())
    for column in filter(None, obs_columns):
        digest.update(f"\1{column}\1".encode() + "\0".join(adata.obs[column].astype(str)).encode())
    return digest.hexdigest()


def indices_digest(*parts: np.ndarray) -> str:
    """A hex digest of index arrays (e.g. a split's training, validation and test cells)."""
    digest = hashlib.blake2b(digest_size=12)
    for part in parts:
        digest.update(np.asarray(part, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()
