"""The cells to annotate, read in chunks: an in-memory or backed AnnData's expression matrix (``X``,
a layer or ``raw``) with its gene symbols, labelled chunk by chunk so that memory follows the
chunk, not the number of cells."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from scadapt.annotation.labelling import CellLabels, label_cells
from scadapt.artifacts.annotators import AnnotationModel
from scadapt.data.validation import check_gene_coverage, expression_matrix, gene_symbols
from scadapt.infra.errors import InputDataError

CHUNK_CELLS = 10_000  # cells read, labelled and written at a time


@dataclass
class Query:
    """An expression matrix ``[n_cells, n_genes]`` (in memory or on disk) and the symbols of the
    genes it keeps (``kept``: genes without a symbol are left out)."""

    matrix: object
    symbols: pd.Index
    kept: np.ndarray

    @classmethod
    def of(cls, adata: AnnData, model: AnnotationModel, layer: str | None = None,
           gene_column: str | None = None) -> Query:
        """The query in ``adata``, refused when it lacks too many of the model's genes."""
        if adata.n_obs == 0:
            raise InputDataError("The AnnData holds no cells to annotate.")
        matrix, var = expression_matrix(adata, layer)
        symbols, kept = gene_symbols(var, gene_column)
        if model.genes is not None:
            check_gene_coverage(symbols, model.genes)
        return cls(matrix, symbols, kept)

    @property
    def n_cells(self) -> int:
        return int(self.matrix.shape[0])

    def chunks(self, size: int) -> Iterator[tuple[int, int, object]]:
        """``(start, stop, matrix[start:stop])`` over the cells, read from disk one chunk at a time."""
        for start in range(0, self.n_cells, size):
            stop = min(start + size, self.n_cells)
            part = self.matrix[start:stop]
            yield start, stop, (part if self.kept.all() else part[:, self.kept])


def label_query(model: AnnotationModel, query: Query, chunk_cells: int | None = None, *, threshold: float = float("inf"),
                keep_embedding: bool = True, on_embedding: Callable[[int, int, np.ndarray], None] | None = None,
                progress: bool = True) -> CellLabels:
    """Every cell of ``query`` labelled, chunk by chunk (novelty above ``threshold``: ``Unassigned``). ``on_embedding(start, stop, embedding)``
    receives each chunk's embedding (to write it out); ``keep_embedding=False`` then drops it from
    the result."""
    size = chunk_cells or CHUNK_CELLS
    parts = []
    bar = tqdm(total=query.n_cells, unit="cells", desc="annotating", disable=not progress or query.n_cells <= size)
    for start, stop, matrix in query.chunks(size):
        labels = label_cells(model.annotator, matrix, query.symbols, threshold,
                             progress=progress and query.n_cells <= size)
        if on_embedding is not None:
            on_embedding(start, stop, labels.embedding)
        if not keep_embedding:  # the caller wrote it out: memory stays that of one chunk
            labels.embedding, labels.probabilities = labels.embedding[:, :0], labels.probabilities[:, :0]
        parts.append(labels)
        bar.update(stop - start)
    bar.close()
    return CellLabels.concat(parts)
