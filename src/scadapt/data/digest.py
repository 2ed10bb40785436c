"""The identity of a result's data, the one home of it: a content digest of a dataset as a job uses
it (values, cell and gene names, labels and batches) and of a split's cells, so a result is tied to
the exact cells, values and labels it came from, not to a file name whose content may change.
A study's setup (:mod:`scadapt.jobs.study_setup`: the study name of ``tune``) and a benchmark
cell's identity (:attr:`scadapt.benchmark.matrix.MatrixCell.identity`: finished-cell look-up, reuse,
helper workers) both read :func:`data_identity`; what else a result depends on (strategy, fixed
settings, backbone weights, seed, precision) is added by each beside it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from scadapt.data.dataset import DatasetInfo
from scadapt.data.splits import Split


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


def data_identity(adata: AnnData, split: Split) -> tuple[str, str]:
    """``(data digest, split-cells digest)`` of a split of a dataset from ``load_dataset``: its
    values, names, labels and batches, and the split's training, validation and test cells."""
    info = DatasetInfo.of(adata)
    return (content_digest(adata, [info.label_key, info.batch_key]),
            indices_digest(split.train, split.validation, split.test))
